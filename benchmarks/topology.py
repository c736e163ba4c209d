"""Sidecar vs shared, measured side by side in one run: what a shared
gateway's replicas and its Redis cost an upload (docs/deploy.md).

Each party is its own OS process, on loopback: Chert's side
(benchmarks/sink.py), the gateways as users run them (`chert-gateway
serve`), Debian's redis-server, and this script as the load generator.
Every upload carries its own Idempotency-Key, so the idempotency store is
on every upload's path.

Paths, run one after another for each workload and round, so the machine's
drift hits all alike:
  sidecar      one gateway, its keys in its own memory (the sidecar's store)
  shared       two replicas sharing keys in Redis, uploads spread over both
               in turn (as a Service's connections are)
  redis-down   the same two replicas with Redis stopped: keys fall back to
               each replica's own store (Redis is started again after)

Figures per path and workload: uploads/s, p50/p99 seconds per upload, CPU
milliseconds per upload of the gateways (all replicas) and of Redis, and
the peak RSS of one gateway and of Redis. Medians over rounds; ratios are of
figures measured in this same run.

    python benchmarks/topology.py              # 5 rounds
    python benchmarks/topology.py --rounds 2   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (
    CHAT_ID,
    GATEWAY_SETTINGS,
    KIB,
    MIB,
    PNG_MAGIC,
    RESULTS,
    ROOT,
    cpu_seconds,
    cpu_ticks,
    free_port,
    median,
    peak,
    percentile,
    pieces,
    reset_peak,
    start,
    stolen_share,
    wait_listening,
)

PATHS = ["sidecar", "shared", "redis-down"]


@dataclass(frozen=True)
class Workload:
    name: str
    count: int
    size: int
    # One upload at a time: the latency a request pays, without queueing.
    one_at_a_time: bool = False


WORKLOADS = [
    Workload("200 × 64 KB, one at a time", 200, 64 * KIB, one_at_a_time=True),
    Workload("200 × 64 KB, at once", 200, 64 * KIB),
    Workload("20 × 5 MB, at once", 20, 5 * MIB),
]


class Topologies:
    """Chert's side, Redis, one sidecar-like gateway and two shared replicas."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.secret = "benchmark-secret"
        self.ports = {name: free_port() for name in ("chert", "redis", "sidecar", "a", "b")}
        self.procs: dict[str, Any] = {}

    def start_redis(self) -> None:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.procs["redis"] = start(
            [redis_server, "--port", str(self.ports["redis"]), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.tmp)]
        )  # fmt: skip

    def stop_redis(self) -> None:
        self.procs["redis"].terminate()
        self.procs["redis"].wait(timeout=10)

    async def __aenter__(self) -> Topologies:
        p = self.ports
        chert = [sys.executable, str(ROOT / "benchmarks" / "sink.py"), str(p["chert"])]
        self.procs["chert"] = start(chert)
        self.start_redis()
        gateway = str(Path(sys.executable).parent / "chert-gateway")
        common = {
            **GATEWAY_SETTINGS,
            "CHERT_API_URL": f"http://127.0.0.1:{p['chert']}",
            "CHERT_SIGNING_SECRET": self.secret,
            "GATEWAY_SPOOL_DIR": str(self.tmp),
        }
        shared = {"GATEWAY_IDEMPOTENCY_URL": f"redis://127.0.0.1:{p['redis']}/0"}
        for name in ("sidecar", "a", "b"):
            self.procs[name] = start(
                [gateway, "serve", "--log-format", "json"],
                {
                    **common,
                    **({} if name == "sidecar" else shared),
                    "GATEWAY_LISTEN": f"127.0.0.1:{p[name]}",
                    "GATEWAY_OPS_LISTEN": f"127.0.0.1:{free_port()}",
                },
            )
        for name in ("chert", "redis", "sidecar", "a", "b"):
            await wait_listening(p[name])
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=30)

    async def redis_cpu_seconds(self) -> float:
        """Redis's own CPU count (microseconds; /proc's 10 ms ticks are
        coarser than a whole round of its work)."""
        client = redis.from_url(f"redis://127.0.0.1:{self.ports['redis']}/0")
        try:
            info = await client.info("cpu")
        finally:
            await client.aclose()
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def gateways(self, path: str) -> list[str]:
        names = ["sidecar"] if path == "sidecar" else ["a", "b"]
        return [f"http://127.0.0.1:{self.ports[name]}" for name in names]

    def gateway_pids(self, path: str) -> list[int]:
        names = ["sidecar"] if path == "sidecar" else ["a", "b"]
        return [self.procs[name].pid for name in names]

    @asynccontextmanager
    async def conditions(self, path: str) -> AsyncIterator[None]:
        """Redis stopped for the redis-down path, started again after it."""
        if path != "redis-down":
            yield
            return
        self.stop_redis()
        try:
            yield
        finally:
            self.start_redis()
            await wait_listening(self.ports["redis"])


async def upload(http: aiohttp.ClientSession, base: str, data: memoryview, key: str) -> float:
    headers = {
        "Content-Type": "image/png",
        "Content-Length": str(len(data)),
        "Idempotency-Key": key,
    }
    started = time.perf_counter()
    url = f"{base}/v1/chats/{CHAT_ID}/attachments"
    async with http.put(url, data=pieces(data), headers=headers) as response:
        body = await response.read()
        if response.status != 201:
            raise RuntimeError(f"gateway answered {response.status}: {body[:300]!r}")
    return time.perf_counter() - started


async def run(
    http: aiohttp.ClientSession, fleet: Topologies, path: str, workload: Workload, data: memoryview
) -> dict[str, Any]:
    bases = fleet.gateways(path)
    pids = fleet.gateway_pids(path)
    redis_pid = [fleet.procs["redis"].pid] if path == "shared" else []
    for pid in pids + redis_pid:
        reset_peak([pid])
    cpu_before = cpu_seconds(pids)
    redis_before = await fleet.redis_cpu_seconds() if redis_pid else 0.0
    tag = os.urandom(8).hex()
    jobs = [
        (bases[n % len(bases)], f"{path}-{tag}-{n}") for n in range(workload.count)
    ]  # in turn, as a Service spreads connections
    started = time.perf_counter()
    if workload.one_at_a_time:
        times = [await upload(http, base, data, key) for base, key in jobs]
    else:
        times = list(await asyncio.gather(*(upload(http, base, data, key) for base, key in jobs)))
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "per_upload": sorted(times),
        "uploads": workload.count,
        "gateway_cpu_s": cpu_seconds(pids) - cpu_before,
        "redis_cpu_s": (await fleet.redis_cpu_seconds() - redis_before) if redis_pid else 0.0,
        "peak_rss_per_gateway": max(peak([pid]) for pid in pids),
        "redis_peak_rss": peak(redis_pid) if redis_pid else None,
    }


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for workload, by_path in runs.items():
        summary[workload] = {}
        for path, rounds in by_path.items():
            times = [t for r in rounds for t in r["per_upload"]]
            uploads = sum(r["uploads"] for r in rounds)
            redis_rss = [r["redis_peak_rss"] for r in rounds if r["redis_peak_rss"]]
            summary[workload][path] = {
                "uploads_per_s": median([r["uploads"] / r["seconds"] for r in rounds]),
                "p50_ms": 1000 * percentile(times, 0.5),
                "p99_ms": 1000 * percentile(times, 0.99),
                "gateway_cpu_ms_per_upload": 1000
                * sum(r["gateway_cpu_s"] for r in rounds)
                / uploads,
                "redis_cpu_ms_per_upload": 1000 * sum(r["redis_cpu_s"] for r in rounds) / uploads,
                "peak_rss_per_gateway_mib": max(r["peak_rss_per_gateway"] for r in rounds) / MIB,
                "redis_peak_rss_mib": max(redis_rss) / MIB if redis_rss else None,
            }
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [
        "| workload | path | uploads/s | p50 ms | p99 ms | gateway CPU ms/upload "
        "| Redis CPU ms/upload | peak RSS per gateway | Redis peak RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, by_path in summary.items():
        for path in PATHS:
            s = by_path[path]
            redis_rss = (
                "–" if s["redis_peak_rss_mib"] is None else f"{s['redis_peak_rss_mib']:.1f} MiB"
            )
            redis_cpu = "–" if path != "shared" else f"{s['redis_cpu_ms_per_upload']:.3f}"
            lines.append(
                f"| {workload} | {path} | {s['uploads_per_s']:.0f} | {s['p50_ms']:.1f} "
                f"| {s['p99_ms']:.1f} | {s['gateway_cpu_ms_per_upload']:.2f} | {redis_cpu} "
                f"| {s['peak_rss_per_gateway_mib']:.1f} MiB | {redis_rss} |"
            )
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    ticks_at_start = cpu_ticks()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chert-topology-") as tmp:
        async with AsyncExitStack() as stack:
            fleet = await stack.enter_async_context(Topologies(Path(tmp)))
            http = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            )
            for workload in WORKLOADS:
                data = memoryview(PNG_MAGIC + os.urandom(workload.size - len(PNG_MAGIC)))
                warm_up = Workload("warm-up", 10, workload.size)
                for path in PATHS:
                    async with fleet.conditions(path):
                        await run(http, fleet, path, warm_up, data)
                for round_number in range(args.rounds):
                    shift = round_number % len(PATHS)
                    for path in PATHS[shift:] + PATHS[:shift]:
                        async with fleet.conditions(path):
                            result = await run(http, fleet, path, workload, data)
                        runs.setdefault(workload.name, {}).setdefault(path, []).append(result)
                print(f"done: {workload.name}", file=sys.stderr)
    summary = summarize(runs)
    report = {
        "when": time.strftime("%Y%m%d-%H%M%S"),
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "cpu_stolen_share": round(stolen_share(ticks_at_start), 3),
        "summary": summary,
    }
    (RESULTS / "topology-latest.json").write_text(json.dumps(report, indent=2))
    print(table(summary))
    print(f"\nCPU time taken by the hypervisor during the run: {stolen_share(ticks_at_start):.0%}")
    print(f"written: {RESULTS / 'topology-latest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
