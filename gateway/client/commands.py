"""`chert-gateway send`: the caller's side of the command line, built on
`gateway.client`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from gateway.client.calls import GatewayClient, GatewayUnreachableError
from gateway.errors import GatewayError

DEFAULT_GATEWAY = os.environ.get("CHERT_GATEWAY_URL", "http://127.0.0.1:8080")
MIB = 1024 * 1024


def add_send_command(commands: Any) -> None:
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
