"""`chert-gateway send` and `chert-gateway demo`: the caller's side of the
command line, built on `gateway.client`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from tqdm import tqdm

from gateway import procstat
from gateway.client import GatewayClient, GatewayUnreachableError
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.server import Running, serve
from gateway.simulator.app import DOCS_CHAT_ID

DEFAULT_GATEWAY = os.environ.get("CHERT_GATEWAY_URL", "http://127.0.0.1:8080")
MIB = 1024 * 1024


def add_commands(commands: Any) -> None:
    send = commands.add_parser(
        "send",
        help="send file(s) to a chat through a gateway",
        description="Stream file(s) to a gateway: one file on the attachments route, "
        "several as one multipart message. Retries 503 with one idempotency key.",
    )
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument("--chat", required=True, metavar="CHAT_ID")
    send.add_argument("--text", help="a caption, sent as a text part before the media")
    send.add_argument(
        "--gateway", default=DEFAULT_GATEWAY, metavar="URL",
        help="http://host:port or unix:/path [env CHERT_GATEWAY_URL; default %(default)s]",
    )  # fmt: skip
    send.add_argument("--idempotency-key", metavar="KEY", help="default: a new one")
    send.add_argument(
        "--token", default=os.environ.get("GATEWAY_CLIENT_TOKEN"),
        help="client token, if the gateway requires one [env GATEWAY_CLIENT_TOKEN]",
    )  # fmt: skip
    send.add_argument("--json", action="store_true", help="print the answer as JSON (scripts)")
    send.set_defaults(run=run_send)

    demo = commands.add_parser(
        "demo",
        help="the thirty-second tour: simulator + gateway + a 100 MB upload",
        description="Start the Chert simulator and the gateway in this process, make a file, "
        "send it with a progress bar, and show what happened.",
    )
    demo.add_argument("--size-mb", type=float, default=100.0, help="default %(default)s")
    demo.set_defaults(run=run_demo)


# -- send ----------------------------------------------------------------------------


def run_send(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"chert-gateway send: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    show_bar = sys.stdout.isatty() and not args.json
    try:
        with progress_bar(sum(f.stat().st_size for f in files), show_bar) as progress:
            answer = asyncio.run(_send(args, files, progress))
    except GatewayError as exc:
        _report_error(args, exc.code, exc.status, exc.message, exc.request_id, exc.chert_code)
        return 1
    except GatewayUnreachableError as exc:
        _report_error(args, "gateway_unreachable", None, str(exc), None, None)
        return 1
    if args.json:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        print(describe(answer))
    return 0


async def _send(args: argparse.Namespace, files: list[Path], progress: Any) -> dict[str, Any]:
    async with GatewayClient(args.gateway, token=args.token) as client:
        if len(files) == 1:
            return await client.send_file(
                files[0], args.chat, text=args.text,
                idempotency_key=args.idempotency_key, progress=progress,
            )  # fmt: skip
        return await client.send_files(
            files, args.chat, text=args.text,
            idempotency_key=args.idempotency_key, progress=progress,
        )  # fmt: skip


@contextlib.contextmanager
def progress_bar(total: int, show: bool) -> Iterator[Any]:
    """tqdm on stderr when shown; otherwise a callback that does nothing."""
    if not show:
        yield None
        return
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
        yield bar.update


def _report_error(
    args: argparse.Namespace,
    code: str,
    status: int | None,
    message: str,
    request_id: str | None,
    chert_code: int | None,
) -> None:
    if args.json:
        body = {"error": {"code": code, "status": status, "message": message,
                          "request_id": request_id, "chert_code": chert_code}}  # fmt: skip
        print(orjson.dumps(body).decode())
        return
    where = f"HTTP {status}" if status else "no answer"
    extra = f", Chert code {chert_code}" if chert_code else ""
    tail = f" [request {request_id}]" if request_id else ""
    print(f"chert-gateway send: {code} ({where}{extra}): {message}{tail}", file=sys.stderr)


def describe(answer: dict[str, Any]) -> str:
    """The answer, for a person."""
    files = answer.get("attachments") or [answer]
    lines = []
    for f in files:
        lines.append(
            f"sent {f['filename']} ({f['size_bytes'] / MIB:.2f} MiB, {f['content_type']}) "
            f"as attachment {f['attachment_id']}, sha256 {(f['sha256'] or 'not computed')[:16]}…"
        )
    message = answer.get("message", {})
    timings = answer.get("timings", {})
    lines.append(
        f"message {message.get('id')} in chat {message.get('chat_id')}: {message.get('status')}"
        + (f", {timings['total_s']:.2f} s in all" if "total_s" in timings else "")
    )
    return "\n".join(lines)


# -- demo ----------------------------------------------------------------------------


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
            with progress_bar(size, sys.stderr.isatty()) as progress:
                async with GatewayClient(running.api) as client:
                    answer = await client.send_file(
                        file, DOCS_CHAT_ID, text="Hello from the demo", progress=progress
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
