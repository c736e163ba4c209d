"""Same-run micro-benchmark: the CPU one keep-alive JSON call to Chert costs
the calling process, by HTTP client.

The far end is benchmarks/sink.py, in its own process. Each candidate makes
the slot call the gateway makes (`POST /api/v1/attachments`, a JSON body, a
bearer header, the JSON answer read and parsed), one at a time on one
keep-alive connection; candidates take turns, round after round, so drift
hits all alike. What is reported is this process's CPU time (every thread:
the Rust clients run their own) per call, median over rounds.

    gateway           the gateway's own ChertClient.create_attachment: aiohttp
                      plus what the gateway adds (retries, timeouts, metrics,
                      redaction, the pool's bookkeeping)
    aiohttp           aiohttp as the gateway configures it, the call alone
    aiohttp-trimmed   the same with pre-built headers, skip_auto_headers and
                      one ClientTimeout object reused
    httpcore          httpcore's AsyncConnectionPool (anyio)
    pyreqwest         pyreqwest's async Client (Rust, reqwest)
    rnet              rnet's async Client (Rust)

    python benchmarks/json_call.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import hdrs
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import RESULTS, ROOT, free_port, start, wait_listening

SECRET = "micro-benchmark-secret"
SLOT = {"filename": "a.png", "content_type": "image/png", "size_bytes": 65536}
Call = Callable[[], Awaitable[dict[str, Any]]]


@asynccontextmanager
async def gateway_client(base: str) -> AsyncIterator[Call]:
    """The ChertClient the gateway's app builds, with its session and pool."""
    from gateway.api.app import create_app
    from gateway.api.keys import CHERT
    from gateway.ops.config import Settings

    settings = Settings.from_env({"CHERT_API_URL": base, "CHERT_SIGNING_SECRET": SECRET})
    app = create_app(settings)
    app.freeze()
    await app.startup()  # runs the app's cleanup contexts: the Chert session
    try:
        chert = app[CHERT]

        async def call() -> dict[str, Any]:
            slot = await chert.create_attachment("a.png", "image/png", 65536)
            return {"attachment_id": slot.attachment_id}

        yield call
    finally:
        await app.cleanup()


@asynccontextmanager
async def aiohttp_client(base: str, trimmed: bool = False) -> AsyncIterator[Call]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=192, keepalive_timeout=15),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        headers={hdrs.USER_AGENT: "chert-gateway/bench"},
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        url = URL(base) / "api/v1/attachments"
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        reused_timeout = aiohttp.ClientTimeout(total=30)
        skip = frozenset({hdrs.ACCEPT, hdrs.ACCEPT_ENCODING})

        async def call() -> dict[str, Any]:
            timeout = reused_timeout if trimmed else aiohttp.ClientTimeout(total=30)
            extra: dict[str, Any] = {"skip_auto_headers": skip} if trimmed else {}
            async with session.request(
                "POST",
                url,
                data=orjson.dumps(SLOT),
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
                **extra,
            ) as response:
                answer: dict[str, Any] = orjson.loads(await response.read())
                return answer

        yield call


@asynccontextmanager
async def httpcore_client(base: str) -> AsyncIterator[Call]:
    import httpcore

    async with httpcore.AsyncConnectionPool(max_connections=192, keepalive_expiry=15) as http:
        url = f"{base}/api/v1/attachments"
        headers = [
            (b"Authorization", f"Bearer {SECRET}".encode()),
            (b"Content-Type", b"application/json"),
            (b"User-Agent", b"chert-gateway/bench"),
        ]
        timeouts = {"connect": 30, "read": 30, "write": 30, "pool": 30}

        async def call() -> dict[str, Any]:
            response = await http.request(
                "POST",
                url,
                headers=headers,
                content=orjson.dumps(SLOT),
                extensions={"timeout": timeouts},
            )
            answer: dict[str, Any] = orjson.loads(response.content)
            return answer

        yield call


@asynccontextmanager
async def pyreqwest_client(base: str) -> AsyncIterator[Call]:
    from pyreqwest.client import ClientBuilder

    client = (
        ClientBuilder()
        .max_connections(192)
        .follow_redirects(False)
        .user_agent("chert-gateway/bench")
        .build()
    )
    async with client:
        url = f"{base}/api/v1/attachments"
        headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
        timeout = timedelta(seconds=30)

        async def call() -> dict[str, Any]:
            request = (
                client.post(url).headers(headers).body_bytes(orjson.dumps(SLOT)).timeout(timeout)
            )
            response = await request.build().send()
            answer: dict[str, Any] = orjson.loads(bytes(await response.bytes()))
            return answer

        yield call


@asynccontextmanager
async def rnet_client(base: str) -> AsyncIterator[Call]:
    import rnet

    client = rnet.Client(allow_redirects=False, user_agent="chert-gateway/bench")
    url = f"{base}/api/v1/attachments"
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}

    async def call() -> dict[str, Any]:
        response = await client.post(url, headers=headers, body=orjson.dumps(SLOT), timeout=30)
        answer: dict[str, Any] = orjson.loads(await response.bytes())
        return answer

    yield call


CANDIDATES: dict[str, Callable[[str], Any]] = {
    "gateway": gateway_client,
    "aiohttp": aiohttp_client,
    "aiohttp-trimmed": lambda base: aiohttp_client(base, trimmed=True),
    "httpcore": httpcore_client,
    "pyreqwest": pyreqwest_client,
    "rnet": rnet_client,
}


async def measure(call: Call, calls: int) -> tuple[float, float]:
    """(CPU µs per call, wall µs per call)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        answer = await call()
        assert answer["attachment_id"]
    return (
        1e6 * (time.process_time() - cpu) / calls,
        1e6 * (time.perf_counter() - wall) / calls,
    )


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="candidates, comma-separated")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    port = free_port()
    sink = start([sys.executable, str(ROOT / "benchmarks" / "sink.py"), str(port)])
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        await wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        async with AsyncExitStack() as stack:
            calls = {
                name: await stack.enter_async_context(CANDIDATES[name](base)) for name in names
            }
            for call in calls.values():  # warm: connections, caches, code
                await measure(call, 200)
            for round_number in range(args.rounds):
                order = names[round_number % len(names) :] + names[: round_number % len(names)]
                for name in order:
                    results[name].append(await measure(calls[name], args.calls))
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    base_cpu = (
        statistics.median(cpu for cpu, _ in results["aiohttp"]) if "aiohttp" in results else None
    )
    print("| client | CPU µs per call | wall µs per call | CPU vs aiohttp |")
    print("|---|---:|---:|---:|")
    summary = {}
    for name in names:
        cpu = statistics.median(c for c, _ in results[name])
        wall = statistics.median(w for _, w in results[name])
        ratio = f"{cpu / base_cpu:.2f}" if base_cpu else "–"
        print(f"| {name} | {cpu:.0f} | {wall:.0f} | {ratio} |")
        summary[name] = {"cpu_us": cpu, "wall_us": wall, "rounds": results[name]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "json-call-latest.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
