"""`chert-gateway send` and `chert-gateway download`: the caller's side of
the command line, built on `gateway.client`.

Exit codes a script can act on (README, "Exit codes"):

    0   sent (uploaded, downloaded)
    1   refused for good: fix the request (or the URL) before trying again
    2   usage: a wrong flag, a missing file, a directory, a malformed URL
    75  EX_TEMPFAIL: worth retrying later (the gateway or Chert busy or
        unreachable after this command's own retries)

No traceback reaches the user: every failure is one line naming what to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from tqdm import tqdm

from gateway.client.calls import (
    DEFAULT_URL,
    GatewayClient,
    GatewayUnreachableError,
    NotAGatewayError,
    Retry,
    check_url,
)
from gateway.errors import GatewayError

DEFAULT_GATEWAY = os.environ.get("CHERT_GATEWAY_URL", DEFAULT_URL)
MIB = 1024 * 1024
STDIN = "-"

EXIT_SENT = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # os.EX_TEMPFAIL, spelt out: it is not defined on every platform


class UsageError(Exception):
    """The command line asks for something that cannot be done as written."""


def _add_common(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--gateway", default=DEFAULT_GATEWAY, metavar="URL",
        help="http://host:port or unix:/path [env CHERT_GATEWAY_URL; default %(default)s]",
    )  # fmt: skip
    command.add_argument(
        "--token", default=os.environ.get("GATEWAY_CLIENT_TOKEN"),
        help="client token, if the gateway requires one [env GATEWAY_CLIENT_TOKEN]",
    )  # fmt: skip
    command.add_argument("--json", action="store_true", help="print the answer as JSON (scripts)")


def add_send_command(commands: Any) -> None:
    send = commands.add_parser(
        "send",
        help="send file(s) to a chat through a gateway",
        description="Stream file(s) to a gateway: one file on the attachments route, "
        "several as one multipart message; '-' reads standard input. Retries 503 and 504 "
        "with one idempotency key. Exit 0 sent, 1 refused, 2 usage, 75 retry later.",
    )
    send.add_argument("files", nargs="+", metavar="FILE", help="a file, or - for standard input")
    send.add_argument("--chat", metavar="CHAT_ID", help="the chat (not with --upload-only)")
    send.add_argument(
        "--upload-only", action="store_true",
        help="upload one file to Chert and print its attachment id; send no message",
    )  # fmt: skip
    send.add_argument("--text", help="a caption, sent as a text part before the media")
    send.add_argument("--filename", help="the name Chert registers (one file; default: its own)")
    send.add_argument(
        "--content-type", metavar="TYPE",
        help="the file's MIME type (one file; default: from its name, else its bytes)",
    )  # fmt: skip
    send.add_argument("--idempotency-key", metavar="KEY", help="default: a new one")
    _add_common(send)
    send.set_defaults(run=run_send)


def add_download_command(commands: Any) -> None:
    download = commands.add_parser(
        "download",
        help="download an attachment's bytes through a gateway",
        description="Save an attachment under its registered name (or -o FILE, a directory, "
        "or - for standard output). Exit 0 saved, 1 refused, 2 usage, 75 retry later.",
    )
    download.add_argument("attachment_id", metavar="ID")
    download.add_argument("-o", "--output", metavar="FILE", help="default: the registered name")
    _add_common(download)
    download.set_defaults(run=run_download)


# -- running a call: retries shown, failures as one line and an exit code ------------


@dataclass
class Attempts:
    """What the person sees across a call's attempts: one progress bar,
    restarted at 0 for each new attempt, and a line per retry."""

    total: int | None
    show_bar: bool
    count: int = 1
    started: float = field(default_factory=time.perf_counter)
    _bar: Any = None

    @contextlib.contextmanager
    def shown(self) -> Iterator[Attempts]:
        if not self.show_bar:
            yield self
            return
        with tqdm(
            total=self.total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
        ) as bar:
            self._bar = bar
            yield self

    @property
    def progress(self) -> Callable[[int], None] | None:
        return self._bar.update if self._bar is not None else None

    def retrying(self, retry: Retry) -> None:
        self.count = retry.attempt
        line = f"retrying in {retry.wait_s:.0f} s ({retry.reason})"
        if self._bar is not None:
            self._bar.reset(total=self.total)
            self._bar.write(line, file=sys.stderr)
        else:
            print(f"chert-gateway: {line}", file=sys.stderr, flush=True)

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.started
        tries = f", {self.count} attempts" if self.count > 1 else ""
        return f"{elapsed:.2f} s in all{tries}"


def _run(
    args: argparse.Namespace,
    attempts: Attempts,
    call: Callable[[GatewayClient], Awaitable[Any]],
) -> tuple[int, Any]:
    """(exit code, result): the call made, its failure told in one line."""
    try:
        check_url(args.gateway)
    except ValueError as exc:
        _report(args, "usage", None, str(exc), None, None)
        return EXIT_USAGE, None
    try:

        async def with_client() -> Any:
            async with GatewayClient(
                args.gateway, token=args.token, on_retry=attempts.retrying
            ) as client:
                return await call(client)

        with attempts.shown():
            return EXIT_SENT, asyncio.run(with_client())
    except (UsageError, IsADirectoryError, FileNotFoundError) as exc:
        _report(args, "usage", None, str(exc), None, None)
        return EXIT_USAGE, None
    except GatewayError as exc:
        _report(args, exc.code, exc.status, exc.message, exc.request_id, exc.chert_code)
        return (EXIT_TEMPFAIL if exc.retryable else EXIT_REFUSED), None
    except GatewayUnreachableError as exc:
        _report(args, "gateway_unreachable", None, str(exc), None, None)
        return EXIT_TEMPFAIL, None
    except NotAGatewayError as exc:
        _report(args, "not_a_gateway", None, str(exc), None, None)
        return EXIT_REFUSED, None
    except OSError as exc:  # reading the file, writing the download
        _report(args, "io_error", None, f"{exc.strerror or exc}: {exc.filename or ''}", None, None)
        return EXIT_REFUSED, None
    except KeyboardInterrupt:
        _report(args, "interrupted", None, "stopped by Ctrl-C; nothing more is sent", None, None)
        return 130, None


# -- send ----------------------------------------------------------------------------


def run_send(args: argparse.Namespace) -> int:
    try:
        sources = _sources(args)
    except UsageError as exc:
        _report(args, "usage", None, str(exc), None, None)
        return EXIT_USAGE
    stdin = sources == [STDIN]
    total = None if stdin else sum(Path(f).stat().st_size for f in sources)
    attempts = Attempts(total, show_bar=sys.stderr.isatty() and not args.json)

    async def send(client: GatewayClient) -> dict[str, Any]:
        source: str | BinaryIO = sys.stdin.buffer if stdin else sources[0]
        options = {
            "filename": args.filename,
            "content_type": args.content_type,
            "idempotency_key": args.idempotency_key,
            "progress": attempts.progress,
        }
        if args.upload_only:
            return await client.upload(source, **options)
        if len(sources) == 1:
            return await client.send_file(source, args.chat, text=args.text, **options)
        return await client.send_files(
            sources, args.chat, text=args.text,
            idempotency_key=args.idempotency_key, progress=attempts.progress,
        )  # fmt: skip

    code, answer = _run(args, attempts, send)
    if code == EXIT_SENT:
        if args.json:
            print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        else:
            print(describe(answer, attempts.summary()))
    return code


def _sources(args: argparse.Namespace) -> list[str]:
    """The files named, checked before anything is sent."""
    files: list[str] = args.files
    if args.upload_only == bool(args.chat):
        raise UsageError("give --chat CHAT_ID, or --upload-only (and no --chat)")
    several = len(files) > 1
    if several and (args.upload_only or args.filename or args.content_type):
        raise UsageError("--upload-only, --filename and --content-type take one file")
    if STDIN in files and several:
        raise UsageError("'-' (standard input) is sent on its own")
    for name in files:
        if name == STDIN:
            continue
        path = Path(name)
        if path.is_dir():
            raise UsageError(f"{name} is a directory; send the files in it by name")
        if not path.is_file():
            raise UsageError(f"no such file: {name}")
    return files


def describe(answer: dict[str, Any], summary: str = "") -> str:
    """The answer, for a person."""
    files = answer.get("attachments") or [answer]
    sent = "message" in answer
    lines = []
    for f in files:
        lines.append(
            f"{'sent' if sent else 'uploaded'} {f['filename']} "
            f"({f['size_bytes'] / MIB:.2f} MiB, {f['content_type']}) "
            f"as attachment {f['attachment_id']}, sha256 {(f['sha256'] or 'not computed')[:16]}…"
        )
    if sent:
        message = answer["message"]
        lines.append(
            f"message {message.get('id')} in chat {message.get('chat_id')}: "
            f"{message.get('status')}" + (f", {summary}" if summary else "")
        )
    elif summary:
        lines.append(f"expires {answer.get('expires_at')}, {summary}")
    return "\n".join(lines)


# -- download --------------------------------------------------------------------------


def run_download(args: argparse.Namespace) -> int:
    attempts = Attempts(None, show_bar=sys.stderr.isatty() and not args.json)
    to_stdout = args.output == STDIN

    async def download(client: GatewayClient) -> Path | None:
        destination: Any = sys.stdout.buffer if to_stdout else args.output
        return await client.download(args.attachment_id, destination, progress=attempts.progress)

    code, saved = _run(args, attempts, download)
    if code == EXIT_SENT and not to_stdout:
        if args.json:
            print(orjson.dumps({"path": str(saved), "bytes": saved.stat().st_size}).decode())
        else:
            print(f"saved {saved} ({saved.stat().st_size / MIB:.2f} MiB), {attempts.summary()}")
    return code


# -- failures ------------------------------------------------------------------------


def _report(
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
    where = f" (HTTP {status}" + (f", Chert code {chert_code})" if chert_code else ")")
    tail = f" [request {request_id}]" if request_id else ""
    command = getattr(args, "command", None) or "chert-gateway"
    print(
        f"chert-gateway {command}: {code}{where if status else ''}: {message}{tail}",
        file=sys.stderr,
    )
