"""A small client for services written in Python, that makes the right
request by default:

    async with GatewayClient("http://127.0.0.1:8790") as gateway:
        answer = await gateway.send_file("invoice.pdf", chat_id, text="See attached.")

or, blocking:

    answer = BlockingGatewayClient("http://127.0.0.1:8790").send_file("invoice.pdf", chat_id)

The calls: `send_file` (one file, one message), `send_files` (several, one
message), `upload` (no message), `send_message` (Chert's JSON parts) and
`download`. Files are streamed from disk with `Content-Length` (one file)
or as a multipart form (several); a binary stream (sys.stdin.buffer) is
sent chunked. An idempotency key is made when none is given, so the retries
it makes are safe: on 503 (`overloaded`, `upstream_unavailable`), 504 and
409 it waits for `Retry-After` and sends again with the same key; a lost
connection is retried likewise (a stream, which cannot be read twice, is
not). `on_retry` hears of each retry before it is made. Errors are the
gateway's own error classes (`gateway.errors`), carrying `code`, `status`,
`retryable`, `chert_code` and `request_id`; `GatewayUnreachableError` when
nothing answered, `NotAGatewayError` when something else did.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiofiles
import aiofiles.os
import aiohttp
import anyio
import orjson
from aiofiles.threadpool.binary import AsyncBufferedReader

from gateway.chert import media
from gateway.chert.retry import parse_retry_after
from gateway.errors import GatewayError, every_error_class

# Retried answers: the gateway is busy or Chert is, or the key's first request runs.
RETRIED_CODES = frozenset(
    {
        "overloaded",
        "rate_limited",
        "upstream_unavailable",
        "upstream_timeout",
        "idempotency_in_progress",
    }
)
CHUNK_BYTES = 256 * 1024
DEFAULT_ATTEMPTS = 4
MAX_WAIT_SECONDS = 30.0

# The gateway's default API listener (GATEWAY_LISTEN): a port no common app uses.
DEFAULT_URL = "http://127.0.0.1:8790"
Progress = Callable[[int], None]  # called with each number of bytes sent
# A base URL (a path prefix is kept, for a gateway behind a proxy), or a socket.
URL_RE = re.compile(r"^(https?://[^/\s]+(/\S*)?|unix:/\S+)$")
Source = str | os.PathLike[str] | BinaryIO  # a file's path, or a stream read once


class GatewayUnreachableError(ConnectionError):
    """No answer from the gateway at all, after the retries."""


class NotAGatewayError(Exception):
    """Something answered that is not the gateway's API (the wrong port, say)."""


@dataclass(frozen=True)
class Retry:
    """What `on_retry` hears before a call is made again."""

    attempt: int  # the attempt about to be made, from 2
    wait_s: float
    reason: str


def check_url(url: str) -> str:
    """`http://host:port` or `unix:/path`; a ValueError that says so otherwise."""
    if not URL_RE.match(url):
        raise ValueError(
            f"the gateway URL {url!r} is not http://host:port, https://host:port or unix:/path"
            + (f" (try http://{url})" if "://" not in url and not url.startswith("unix:") else "")
        )
    return url


class GatewayClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float | None = None,
        on_retry: Callable[[Retry], None] | None = None,
    ) -> None:
        """`url` is `http://host:port` or `unix:/path/to/api.sock` (else ValueError)."""
        check_url(url)
        self._on_retry = on_retry
        self._unix_path = url.removeprefix("unix:") if url.startswith("unix:") else None
        self._base = "http://localhost" if self._unix_path else url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._attempts = attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayClient:
        connector = (
            aiohttp.UnixConnector(path=self._unix_path)
            if self._unix_path
            else aiohttp.TCPConnector()
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # -- what callers call ------------------------------------------------------------

    async def send_file(
        self,
        path: Source,
        chat_id: str,
        *,
        text: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """One file as one message (with an optional caption before it)."""
        params = {"text": text} if text else {}
        return await self._send_one(
            f"/v1/chats/{chat_id}/attachments", path, params, filename, content_type,
            idempotency_key, progress,
        )  # fmt: skip

    async def upload(
        self,
        path: Source,
        *,
        filename: str | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """The file goes to Chert; no message is sent. Returns its attachment_id."""
        return await self._send_one(
            "/v1/attachments", path, {}, filename, content_type, idempotency_key, progress
        )

    async def send_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        chat_id: str,
        *,
        text: str | None = None,
        rich_link: str | None = None,
        parallel_attachments: bool | None = None,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Several files in one message, as a multipart form."""
        key = idempotency_key or uuid.uuid4().hex
        files = [Path(p) for p in paths]

        @asynccontextmanager
        async def form() -> AsyncIterator[aiohttp.MultipartWriter]:
            async with AsyncExitStack() as opened:
                writer = aiohttp.MultipartWriter("form-data")
                if text:
                    writer.append(text).set_content_disposition("form-data", name="text")
                for file in files:
                    source = await opened.enter_async_context(aiofiles.open(file, "rb"))
                    part = writer.append(
                        _chunks(source, progress), {"Content-Type": _content_type(file.name, None)}
                    )
                    part.set_content_disposition("form-data", name="file", filename=file.name)
                if rich_link:
                    writer.append(rich_link).set_content_disposition("form-data", name="rich_link")
                if parallel_attachments is not None:
                    value = "true" if parallel_attachments else "false"
                    writer.append(value).set_content_disposition(
                        "form-data", name="parallel_attachments"
                    )
                yield writer

        return await self._request("POST", f"/v1/chats/{chat_id}/messages", key, form)

    async def send_message(
        self,
        chat_id: str,
        parts: list[dict[str, Any]],
        *,
        parallel_attachments: bool | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Chert's own message parts (text, media by attachment_id, rich_link)."""
        key = idempotency_key or uuid.uuid4().hex
        payload: dict[str, Any] = {"message": {"parts": parts}}
        if parallel_attachments is not None:
            payload["parallel_attachments"] = parallel_attachments
        encoded = orjson.dumps(payload)

        @asynccontextmanager
        async def body() -> AsyncIterator[bytes]:
            yield encoded

        headers = {"Content-Type": "application/json"}
        return await self._request(
            "POST", f"/v1/chats/{chat_id}/messages", key, body, headers=headers
        )

    async def download(
        self,
        attachment_id: str,
        destination: str | os.PathLike[str] | BinaryIO | None = None,
        *,
        progress: Progress | None = None,
    ) -> Path | None:
        """The file's bytes, to `destination`: a path, a directory (the file
        takes its registered name there), a binary stream, or None for the
        current directory. A file is written beside its final name and
        renamed once whole: nothing half-written is left under that name.
        Returns the path written (None for a stream)."""
        assert self._session is not None, "use `async with GatewayClient(...)`"
        url = f"{self._base}/v1/attachments/{urllib.parse.quote(attachment_id, safe='')}/content"
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                async with self._session.get(url) as response:
                    if response.status != 200:
                        error = from_answer(
                            response.status,
                            await _json(response),
                            response.headers.get("Retry-After"),
                            url=url,
                        )
                        if error.code not in RETRIED_CODES or last:
                            raise error
                        await self._wait(attempt, error.retry_after or 1.0, error.message)
                        continue
                    if destination is not None and not isinstance(destination, (str, os.PathLike)):
                        await _copy_to_stream(response, destination, progress)
                        return None
                    target = _download_path(destination, response, attachment_id)
                    await _copy_to_file(response, target, progress)
                    return target
            except aiohttp.ClientConnectionError as exc:
                if last:
                    raise GatewayUnreachableError(f"no answer from {self._base}: {exc}") from exc
                await self._wait(attempt, min(2**attempt * 0.25, MAX_WAIT_SECONDS), str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the one request loop ----------------------------------------------------------

    async def _send_one(
        self,
        route: str,
        path: Source,
        params: dict[str, str],
        filename: str | None,
        content_type: str | None,
        idempotency_key: str | None,
        progress: Progress | None,
    ) -> dict[str, Any]:
        key = idempotency_key or uuid.uuid4().hex
        if not isinstance(path, (str, os.PathLike)):
            return await self._send_stream(
                route, path, params, filename, content_type, key, progress
            )
        file = Path(path)
        info = await aiofiles.os.stat(file)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"{file} is a directory; send a file")
        size = info.st_size
        headers = {
            "Content-Type": _content_type(file.name, content_type),
            # Set by hand: aiohttp keeps a streamed body's length only then.
            "Content-Length": str(size),
            "X-Filename": filename or file.name,
        }

        @asynccontextmanager
        async def body() -> AsyncIterator[AsyncIterator[bytes]]:
            async with aiofiles.open(file, "rb") as source:
                yield _chunks(source, progress)

        return await self._request("PUT", route, key, body, headers=headers, params=params)

    async def _send_stream(
        self,
        route: str,
        stream: BinaryIO,
        params: dict[str, str],
        filename: str | None,
        content_type: str | None,
        key: str,
        progress: Progress | None,
    ) -> dict[str, Any]:
        """A stream of unknown length, chunked (the gateway spools it). It
        can be read only once, so it is sent only once."""
        headers = {"Content-Type": _content_type(filename or "", content_type)}
        if filename:
            headers["X-Filename"] = filename

        @asynccontextmanager
        async def body() -> AsyncIterator[AsyncIterator[bytes]]:
            yield _stream_chunks(stream, progress)

        return await self._request(
            "PUT", route, key, body, headers=headers, params=params, attempts=1
        )

    async def _request(
        self,
        method: str,
        route: str,
        key: str,
        body: Callable[[], AbstractAsyncContextManager[Any]],
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """Send, and send again on a busy answer or a lost connection, with one key.

        `body` opens the body afresh for each attempt. Files are opened and
        closed by it, never inside the generators the HTTP client reads: a
        failed request abandons those mid-way.
        """
        assert self._session is not None, "use `async with GatewayClient(...)`"
        all_headers = {**(headers or {}), "Idempotency-Key": key}
        url = self._base + route
        attempts = attempts or self._attempts
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                async with (
                    body() as data,
                    self._session.request(
                        method, url, data=data, headers=all_headers, params=params
                    ) as response,
                ):
                    answer = await _json(response)
                    if response.status < 300 and isinstance(answer, dict):
                        return answer
                    error = from_answer(
                        response.status, answer, response.headers.get("Retry-After"), url=url
                    )
            except aiohttp.ClientConnectionError as exc:
                if last:
                    raise GatewayUnreachableError(f"no answer from {self._base}: {exc}") from exc
                await self._wait(attempt, min(2**attempt * 0.25, MAX_WAIT_SECONDS), str(exc))
                continue
            if error.code not in RETRIED_CODES or last:
                raise error
            await self._wait(attempt, error.retry_after or 1.0, f"{error.code}: {error.message}")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait(self, attempt: int, seconds: float, reason: str) -> None:
        wait = min(seconds, MAX_WAIT_SECONDS)
        if self._on_retry is not None:
            self._on_retry(Retry(attempt + 1, wait, reason))
        await asyncio.sleep(wait)


class BlockingGatewayClient:
    """The same calls, for code without an event loop: each call runs one."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._url, self._options = url, options

    def _run(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            async with GatewayClient(self._url, **self._options) as client:
                result: dict[str, Any] = await getattr(client, method)(*args, **kwargs)
                return result

        return anyio.run(call)

    def send_file(self, path: Source, chat_id: str, **kw: Any) -> dict[str, Any]:
        return self._run("send_file", path, chat_id, **kw)

    def send_files(
        self, paths: Sequence[str | os.PathLike[str]], chat_id: str, **kw: Any
    ) -> dict[str, Any]:
        return self._run("send_files", paths, chat_id, **kw)

    def upload(self, path: Source, **kw: Any) -> dict[str, Any]:
        return self._run("upload", path, **kw)

    def send_message(self, chat_id: str, parts: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        return self._run("send_message", chat_id, parts, **kw)

    def download(self, attachment_id: str, destination: Any = None, **kw: Any) -> Path | None:
        async def call() -> Path | None:
            async with GatewayClient(self._url, **self._options) as client:
                return await client.download(attachment_id, destination, **kw)

        return anyio.run(call)


def _content_type(filename: str, given: str | None) -> str:
    """The given type, else Chert's type for the extension, else a generic one
    (the gateway then tells the type from the file's first bytes)."""
    return given or media.guess_from_filename(filename) or "application/octet-stream"


async def _stream_chunks(stream: BinaryIO, progress: Progress | None) -> AsyncIterator[bytes]:
    """A blocking stream's pieces, read on a thread so the loop goes on."""
    read = getattr(stream, "read1", stream.read)
    while chunk := await asyncio.to_thread(read, CHUNK_BYTES):
        yield chunk
        if progress is not None:
            progress(len(chunk))


def _download_path(
    destination: str | os.PathLike[str] | None, response: aiohttp.ClientResponse, fallback: str
) -> Path:
    """The path to write: as given, or the registered name in the given
    directory (the current one by default), its base name only."""
    target = Path(destination) if destination is not None else Path.cwd()
    if not target.is_dir():
        return target
    disposition = response.content_disposition
    name = disposition.filename if disposition is not None else None
    safe = Path(name or "").name
    return target / (safe if safe not in ("", ".", "..") else fallback)


async def _copy_to_file(
    response: aiohttp.ClientResponse, target: Path, progress: Progress | None
) -> None:
    partial = target.with_name(f".{target.name}.partial")
    try:
        async with aiofiles.open(partial, "wb") as out:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                await out.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        expected = response.content_length
        if expected is not None and (await aiofiles.os.stat(partial)).st_size != expected:
            raise aiohttp.ClientPayloadError("the download ended short")
        await aiofiles.os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()


async def _copy_to_stream(
    response: aiohttp.ClientResponse, stream: BinaryIO, progress: Progress | None
) -> None:
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        await asyncio.to_thread(stream.write, chunk)
        if progress is not None:
            progress(len(chunk))
    await asyncio.to_thread(stream.flush)


async def _chunks(source: AsyncBufferedReader, progress: Progress | None) -> AsyncIterator[bytes]:
    while chunk := await source.read(CHUNK_BYTES):
        yield chunk
        if progress is not None:
            progress(len(chunk))


async def _json(response: aiohttp.ClientResponse) -> Any:
    """The answer's JSON; None for an answer that is not JSON."""
    raw = await response.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# code → class, so a client can raise the very error the gateway answered with.
ERRORS_BY_CODE: dict[str, type[GatewayError]] = {cls.code: cls for cls in every_error_class()}


def from_answer(
    status: int, body: Any, retry_after: str | None = None, *, url: str = "the gateway"
) -> GatewayError:
    """The gateway's JSON error body as an exception; NotAGatewayError is
    raised for anything else (another server answered)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        raise NotAGatewayError(
            f"HTTP {status} from {url} is not a chert-gateway answer: is the URL the "
            "gateway's API listener (not its ops port, nor another service)?"
        )
    cls = ERRORS_BY_CODE.get(str(error.get("code")), GatewayError)
    exc = cls(
        str(error.get("message", "")),
        chert_code=error.get("chert_code"),
        retry_after=parse_retry_after(retry_after),
        retryable=bool(error.get("retryable", cls.retryable)),
        status=status,
    )
    exc.request_id = error.get("request_id")
    return exc


__all__ = [
    "BlockingGatewayClient",
    "GatewayClient",
    "GatewayError",
    "GatewayUnreachableError",
    "NotAGatewayError",
    "Retry",
]
