"""`chert-gateway demo`: the thirty-second tour. It runs the server (with the
embedded simulator) and the caller's client in one process, so it sits above
both rather than making the caller's side import the server."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.client.calls import GatewayClient
from gateway.client.commands import MIB, Attempts
from gateway.ops import procstat
from gateway.ops.config import Settings
from gateway.server import Running, serve
from gateway.simulator.state import DOCS_CHAT_ID


def add_demo_command(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="the thirty-second tour: simulator + gateway + a 100 MB upload",
        description="Start the Chert simulator and the gateway in this process, make a file, "
        "send it with a progress bar, and show what happened.",
    )
    demo.add_argument("--size-mb", type=float, default=100.0, help="default %(default)s")
    demo.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(int(args.size_mb * MIB)))


async def _demo(size: int) -> int:
    env = {**os.environ, "GATEWAY_LISTEN": "127.0.0.1:0", "GATEWAY_OPS_LISTEN": "127.0.0.1:0"}
    env.pop("CHERT_SIGNING_SECRET", None)
    env.pop("CHERT_SIGNING_SECRET_FILE", None)
    settings = Settings.from_env(env, simulate=True)
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, on_ready=ready.set_result, stop=stop))
    running = await ready
    try:
        with tempfile.TemporaryDirectory(prefix="chert-gateway-demo-") as tmp:
            file = Path(tmp) / "demo.png"
            print(f"Making a {size / MIB:.0f} MiB file ({file}) …", file=sys.stderr)
            _make_png(file, size)
            baseline = procstat.status_bytes("VmHWM")
            print(f"Sending it through {running.api} to the simulated Chert …", file=sys.stderr)
            started = time.perf_counter()
            attempts = Attempts(size, show_bar=sys.stderr.isatty())
            with attempts.shown():
                async with GatewayClient(running.api, on_retry=attempts.retrying) as client:
                    answer = await client.send_file(
                        file, DOCS_CHAT_ID, text="Hello from the demo", progress=attempts.progress
                    )
            elapsed = time.perf_counter() - started
            peak = procstat.status_bytes("VmHWM")
        async with aiohttp.ClientSession() as http, http.get(f"{running.ops}/metrics") as r:
            metrics = await r.text()
    finally:
        stop.set()
        await server
    print(_demo_report(answer, elapsed, baseline, peak, metrics, running))
    return 0


def _demo_report(
    answer: dict[str, Any], elapsed: float, baseline: int, peak: int, metrics: str, running: Running
) -> str:
    timings = answer["timings"]
    wanted = (
        "chert_gateway_requests_total", "chert_gateway_received_bytes_total",
        "chert_gateway_upstream_bytes_total", "chert_gateway_phase_duration_seconds_sum",
        "chert_gateway_first_byte_relay_seconds_sum",
    )  # fmt: skip
    recorded = [line for line in metrics.splitlines() if line.startswith(wanted)]
    return "\n".join(
        [
            "",
            "What happened",
            f"  Chert attachment id   {answer['attachment_id']}",
            f"  Chert message id      {answer['message']['id']} ({answer['message']['status']})",
            f"  size, sha256          {answer['size_bytes']:,} bytes, {answer['sha256']}",
            f"  phases                create slot {timings['create_slot_s']:.3f} s, "
            f"upload {timings['upload_s']:.3f} s, send {timings['send_s']:.3f} s",
            f"  throughput            {answer['size_bytes'] / MIB / elapsed:.1f} MiB/s "
            f"({elapsed:.2f} s end to end)",
            f"  peak memory           {peak / MIB:.1f} MiB, "
            f"{max(0, peak - baseline) / MIB:.1f} MiB more than before the upload "
            "(the whole demo process: client, gateway, simulator)",
            "",
            f"What the gateway recorded ({running.ops}/metrics, excerpt)",
            *(f"  {line}" for line in recorded),
        ]
    )


def _make_png(path: Path, size: int) -> None:
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        written = 8
        while written < size:
            chunk = os.urandom(min(MIB, size - written))
            out.write(chunk)
            written += len(chunk)
