"""Soak: the gateway under a long mixed load, its memory, open files and
threads sampled from the outside. What a sidecar must do for weeks is stay
level after warm-up; this shows whether it does, in minutes.

The load, from this process (aiohttp, keep-alive) against `chert-gateway
serve` in front of the Chert simulator (`simulate`, storing bodies so they
can be downloaded again), each request drawn at random:

    single file, Content-Length     35 %      1 KB – 512 KB
    chunked body (spooled)          15 %
    form of two files               15 %
    Idempotency-Key, then a repeat  15 %      the repeat is replayed
    download of an earlier upload   10 %
    JSON send naming an upload      10 %

and the simulator is told to fail a slot creation or a send now and then
(503s the gateway retries, and drops of the connection). Every answer is
checked: an upload's SHA-256 against the bytes sent, a download's bytes
against the upload's, a replay against its first answer.

    python benchmarks/soak.py                    # 15 minutes, 16 callers at once
    python benchmarks/soak.py --minutes 2 --warm-up 30
    python benchmarks/soak.py --gateway-env MALLOC_ARENA_MAX=2

Fifteen minutes by default, because at this mix the idempotency store
takes about ten to reach its 10,000 answers: the minutes after show
whether anything else still grows.

Written: benchmarks/results/soak-latest.json (every sample) and .png (RSS,
open files and threads over time). "Growth" is RSS at the end over RSS at
the end of warm-up; "slope" is a least-squares fit over the second half.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (
    CHAT_ID,
    MIB,
    PNG_MAGIC,
    RESULTS,
    cpu_ticks,
    free_port,
    start,
    stolen_share,
    wait_listening,
)

from gateway.ops import procstat

SAMPLE_EVERY_S = 2.0
FAULT_EVERY_S = 0.5
KINDS = {
    "single": 35,
    "chunked": 15,
    "form": 15,
    "keyed": 15,
    "download": 10,
    "json": 10,
}


@dataclass
class Tally:
    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    bytes_sent: int = 0

    def count(self, kind: str, status: int) -> None:
        self.requests += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1


def body_of(size: int) -> bytes:
    return PNG_MAGIC + random.randbytes(max(0, size - len(PNG_MAGIC)))


def a_size() -> int:
    # Mostly small, as a messaging API's attachments are; some up to 512 KB.
    return int(min(512 * 1024, max(1024, random.lognormvariate(10.5, 1.0))))


class Load:
    def __init__(self, http: aiohttp.ClientSession, gateway: str) -> None:
        self.http = http
        self.gateway = gateway
        self.tally = Tally()
        self.uploaded: list[tuple[str, str]] = []  # (attachment id, sha256), newest last

    async def one(self) -> None:
        kind = random.choices(list(KINDS), weights=list(KINDS.values()))[0]
        if kind in ("download", "json") and not self.uploaded:
            kind = "single"
        status = await getattr(self, kind)()
        self.tally.count(kind, status)

    def check(self, condition: bool, what: str) -> None:
        if not condition and len(self.tally.wrong) < 50:
            self.tally.wrong.append(what)

    async def _answer(self, response: aiohttp.ClientResponse) -> tuple[int, Any]:
        return response.status, await response.json(content_type=None)

    def _uploaded(self, answer: dict[str, Any], data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self.check(answer.get("sha256") == digest, f"sha256 of {answer.get('attachment_id')}")
        self.uploaded.append((answer["attachment_id"], digest))
        del self.uploaded[:-200]
        self.tally.bytes_sent += len(data)

    async def single(self, key: str | None = None) -> int:
        data = body_of(a_size())
        headers = {"Content-Type": "image/png"}
        if key is not None:
            headers["Idempotency-Key"] = key
        url = f"{self.gateway}/v1/chats/{CHAT_ID}/attachments"
        async with self.http.post(url, data=data, headers=headers) as response:
            status, answer = await self._answer(response)
        if status == 201:
            self._uploaded(answer, data)
            if key is not None:
                async with self.http.post(url, data=data, headers=headers) as again:
                    replay_status, replay = await self._answer(again)
                self.check(
                    replay_status == 201 and replay == answer, f"replay of {key}: {replay_status}"
                )
        return status

    async def keyed(self) -> int:
        return await self.single(key=uuid.uuid4().hex)

    async def chunked(self) -> int:
        data = body_of(a_size())

        async def pieces() -> Any:
            for at in range(0, len(data), 64 * 1024):
                yield data[at : at + 64 * 1024]

        url = f"{self.gateway}/v1/chats/{CHAT_ID}/attachments"
        async with self.http.post(
            url, data=pieces(), headers={"Content-Type": "image/png"}
        ) as response:
            status, answer = await self._answer(response)
        if status == 201:
            self._uploaded(answer, data)
        return status

    async def form(self) -> int:
        files = [body_of(a_size() // 2), body_of(a_size() // 2)]
        with aiohttp.MultipartWriter("form-data") as form:
            form.append("two files").set_content_disposition("form-data", name="text")
            for n, data in enumerate(files):
                part = form.append(data, {"Content-Type": "image/png"})
                part.set_content_disposition("form-data", name="file", filename=f"f{n}.png")
        url = f"{self.gateway}/v1/chats/{CHAT_ID}/messages"
        async with self.http.post(url, data=form) as response:
            status, answer = await self._answer(response)
        if status == 201:
            for sent, data in zip(answer.get("attachments", []), files, strict=False):
                self._uploaded(sent, data)
        return status

    async def download(self) -> int:
        attachment_id, digest = random.choice(self.uploaded)
        url = f"{self.gateway}/v1/attachments/{attachment_id}/content"
        async with self.http.get(url) as response:
            data = await response.read()
        if response.status == 200:
            self.check(hashlib.sha256(data).hexdigest() == digest, f"download {attachment_id}")
        return response.status

    async def json(self) -> int:
        attachment_id, _ = random.choice(self.uploaded)
        message = {"message": {"parts": [{"type": "media", "attachment_id": attachment_id}]}}
        url = f"{self.gateway}/v1/chats/{CHAT_ID}/messages"
        async with self.http.post(url, json=message) as response:
            await response.read()
        return response.status


async def caller(load: Load, until: float) -> None:
    while time.monotonic() < until:
        try:
            await load.one()
        except aiohttp.ClientError as exc:
            load.tally.count("transport", 0)
            load.check(False, f"transport: {exc!r}")


async def faults(http: aiohttp.ClientSession, chert: str, until: float) -> int:
    """A one-shot fault every FAULT_EVERY_S; the count injected."""
    injected = 0
    choices = [{"fail_creates": 1}, {"fail_sends": 1}, {"drop_creates": 1}]
    while time.monotonic() < until:
        await asyncio.sleep(FAULT_EVERY_S)
        async with http.post(f"{chert}/_simulator/faults", json=random.choice(choices)):
            injected += 1
        # The simulator keeps every request it saw; a soak would fill it.
        if injected % 20 == 0:
            async with http.post(f"{chert}/_simulator/reset"):
                pass
    return injected


async def remembered(http: aiohttp.ClientSession, ops: str) -> float:
    """How many answers the gateway's idempotency store holds, from /metrics."""
    async with http.get(f"{ops}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("chert_gateway_idempotency_entries "):
            return float(line.split()[1])
    return 0.0


def sample(pid: int, started: float, requests: int, entries: float) -> dict[str, float]:
    return {
        "t": time.monotonic() - started,
        "rss_mib": procstat.status_bytes("VmRSS", pid) / MIB,
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": procstat.status_value("Threads", pid),
        "requests": requests,
        "idempotency_entries": entries,
    }


def slope_mib_per_min(samples: list[dict[str, float]]) -> float:
    xs = [s["t"] for s in samples]
    ys = [s["rss_mib"] for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs) or 1.0
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def plot(samples: list[dict[str, float]], warm_up: float, target: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    ts = [s["t"] / 60 for s in samples]
    for ax, key, label in zip(
        axes,
        ("rss_mib", "idempotency_entries", "open_files", "threads"),
        ("RSS (MiB)", "remembered answers", "open files", "threads"),
        strict=True,
    ):
        ax.plot(ts, [s[key] for s in samples], color="#2b6cb0")
        ax.axvline(warm_up / 60, color="#999999", linestyle="--", linewidth=1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes (dashed: end of warm-up)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(target, dpi=100)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--callers", type=int, default=16, help="requests at once")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--no-keys", action="store_true", help="no Idempotency-Key requests: the store stays empty"
    )
    parser.add_argument("--name", default="soak", help="results file name (default soak)")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.gateway_env)
    if args.no_keys:
        KINDS["keyed"] = 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    gateway_bin = str(Path(sys.executable).parent / "chert-gateway")
    chert_port, port, ops_port = free_port(), free_port(), free_port()
    secret = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="chert-soak-") as tmp:
        procs = [start([gateway_bin, "simulate", "--port", str(chert_port), "--secret", secret])]
        chert = f"http://127.0.0.1:{chert_port}"
        env = {
            "CHERT_API_URL": chert,
            "CHERT_SIGNING_SECRET": secret,
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            "GATEWAY_OPS_LISTEN": f"127.0.0.1:{ops_port}",
            "GATEWAY_SPOOL_DIR": tmp,
            "GATEWAY_EVENT_LOOP": "asyncio",
            **extra,
        }
        procs.append(start([gateway_bin, "serve", "--log-format", "json"], env))
        gateway_pid = procs[-1].pid
        try:
            await wait_listening(chert_port)
            await wait_listening(port)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                load = Load(http, f"http://127.0.0.1:{port}")
                ticks_at_start = cpu_ticks()
                started = time.monotonic()
                until = started + 60 * args.minutes
                samples: list[dict[str, float]] = []

                ops = f"http://127.0.0.1:{ops_port}"

                async def one_sample() -> dict[str, float]:
                    entries = await remembered(http, ops)
                    return sample(gateway_pid, started, load.tally.requests, entries)

                async def sampler() -> None:
                    while time.monotonic() < until:
                        samples.append(await one_sample())
                        await asyncio.sleep(SAMPLE_EVERY_S)

                injected, *_ = await asyncio.gather(
                    faults(http, chert, until),
                    sampler(),
                    *(caller(load, until) for _ in range(args.callers)),
                )
                samples.append(await one_sample())
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    report = summarize(samples, args, load.tally, injected, extra)
    report["cpu_stolen_share"] = round(stolen_share(ticks_at_start), 3)
    (RESULTS / f"{args.name}-latest.json").write_text(json.dumps(report, indent=2))
    plot(
        samples,
        args.warm_up,
        RESULTS / f"{args.name}-latest.png",
        f"gateway under {args.minutes:g} min of mixed load, {args.callers} at once"
        + (f" ({', '.join(args.gateway_env)})" if args.gateway_env else ""),
    )
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    return 1 if load.tally.wrong else 0


def summarize(
    samples: list[dict[str, float]],
    args: argparse.Namespace,
    tally: Tally,
    injected: int,
    extra: dict[str, str],
) -> dict[str, Any]:
    after = [s for s in samples if s["t"] >= args.warm_up] or samples
    second_half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    elapsed = samples[-1]["t"]
    return {
        "minutes": args.minutes,
        "callers": args.callers,
        "kinds": KINDS,
        "gateway_env": extra,
        "requests": tally.requests,
        "requests_per_s": round(tally.requests / elapsed, 1),
        "by_kind": tally.by_kind,
        "statuses": tally.statuses,
        "faults_injected": injected,
        "wrong": tally.wrong,
        "mb_uploaded": round(tally.bytes_sent / 1e6, 1),
        "rss_mib": {
            "end_of_warm_up": round(after[0]["rss_mib"], 1),
            "end": round(samples[-1]["rss_mib"], 1),
            "max": round(max(s["rss_mib"] for s in samples), 1),
            "growth_after_warm_up": round(samples[-1]["rss_mib"] - after[0]["rss_mib"], 1),
            "slope_second_half_mib_per_min": round(slope_mib_per_min(second_half), 2),
        },
        "idempotency_entries_end": samples[-1]["idempotency_entries"],
        "open_files": {
            "min": min(s["open_files"] for s in after),
            "max": max(s["open_files"] for s in after),
        },
        "threads": {
            "min": min(s["threads"] for s in after),
            "max": max(s["threads"] for s in after),
        },
        "samples": samples,
    }


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
