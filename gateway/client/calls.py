"""A small client for services written in Python, that makes the right
request by default:

    async with GatewayClient("http://127.0.0.1:8080") as gateway:
        answer = await gateway.send_file("invoice.pdf", chat_id, text="See attached.")

or, blocking:

    answer = BlockingGatewayClient("http://127.0.0.1:8080").send_file("invoice.pdf", chat_id)

Files are streamed from disk with `Content-Length` (one file) or as a
multipart form (several); an idempotency key is made when none is given,
so the retries it makes are safe: on 503 (`overloaded`,
`upstream_unavailable`) and 409 it waits for `Retry-After` and sends again
with the same key; a lost connection is retried likewise. Errors are the
gateway's own error classes (`gateway.errors`), carrying `code`, `status`,
`retryable`, `chert_code` and `request_id`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
import aiohttp
import anyio
import orjson
from aiofiles.threadpool.binary import AsyncBufferedReader

from gateway.chert import media
from gateway.chert.retry import parse_retry_after
from gateway.errors import GatewayError

# Retried answers: the gateway is busy or Chert is, or the key's first request runs.
RETRIED_CODES = frozenset({"overloaded", "upstream_unavailable", "idempotency_in_progress"})
CHUNK_BYTES = 256 * 1024
DEFAULT_ATTEMPTS = 4
MAX_WAIT_SECONDS = 30.0

Progress = Callable[[int], None]  # called with each number of bytes sent


class GatewayUnreachableError(ConnectionError):
    """No answer from the gateway at all, after the retries."""


class GatewayClient:
    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float | None = None,
    ) -> None:
        """`url` is `http://host:port` or `unix:/path/to/api.sock`."""
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
        path: str | os.PathLike[str],
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
        path: str | os.PathLike[str],
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
                        _chunks(source, progress), {"Content-Type": _content_type(file, None)}
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

    # -- the one request loop ----------------------------------------------------------

    async def _send_one(
        self,
        route: str,
        path: str | os.PathLike[str],
        params: dict[str, str],
        filename: str | None,
        content_type: str | None,
        idempotency_key: str | None,
        progress: Progress | None,
    ) -> dict[str, Any]:
        file = Path(path)
        size = (await aiofiles.os.stat(file)).st_size
        key = idempotency_key or uuid.uuid4().hex
        headers = {
            "Content-Type": _content_type(file, content_type),
            # Set by hand: aiohttp keeps a streamed body's length only then.
            "Content-Length": str(size),
            "X-Filename": filename or file.name,
        }

        @asynccontextmanager
        async def body() -> AsyncIterator[AsyncIterator[bytes]]:
            async with aiofiles.open(file, "rb") as source:
                yield _chunks(source, progress)

        return await self._request("PUT", route, key, body, headers=headers, params=params)

    async def _request(
        self,
        method: str,
        route: str,
        key: str,
        body: Callable[[], AbstractAsyncContextManager[Any]],
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send, and send again on a busy answer or a lost connection, with one key.

        `body` opens the body afresh for each attempt. Files are opened and
        closed by it, never inside the generators the HTTP client reads: a
        failed request abandons those mid-way.
        """
        assert self._session is not None, "use `async with GatewayClient(...)`"
        all_headers = {**(headers or {}), "Idempotency-Key": key}
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                async with (
                    body() as data,
                    self._session.request(
                        method, self._base + route, data=data, headers=all_headers, params=params
                    ) as response,
                ):
                    answer = await _json(response)
                    if response.status < 300:
                        return dict(answer)
                    error = from_answer(
                        response.status, answer, response.headers.get("Retry-After")
                    )
            except aiohttp.ClientConnectionError as exc:
                if last:
                    raise GatewayUnreachableError(f"no answer from {self._base}: {exc}") from exc
                await asyncio.sleep(min(2**attempt * 0.25, MAX_WAIT_SECONDS))
                continue
            if error.code not in RETRIED_CODES or last:
                raise error
            await asyncio.sleep(min(error.retry_after or 1.0, MAX_WAIT_SECONDS))
        raise AssertionError("unreachable")  # pragma: no cover


class BlockingGatewayClient:
    """The same calls, for code without an event loop: each call runs one."""

    def __init__(self, url: str = "http://127.0.0.1:8080", **options: Any) -> None:
        self._url, self._options = url, options

    def _run(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            async with GatewayClient(self._url, **self._options) as client:
                result: dict[str, Any] = await getattr(client, method)(*args, **kwargs)
                return result

        return anyio.run(call)

    def send_file(self, path: str | os.PathLike[str], chat_id: str, **kw: Any) -> dict[str, Any]:
        return self._run("send_file", path, chat_id, **kw)

    def send_files(
        self, paths: Sequence[str | os.PathLike[str]], chat_id: str, **kw: Any
    ) -> dict[str, Any]:
        return self._run("send_files", paths, chat_id, **kw)

    def upload(self, path: str | os.PathLike[str], **kw: Any) -> dict[str, Any]:
        return self._run("upload", path, **kw)


def _content_type(file: Path, given: str | None) -> str:
    """The given type, else Chert's type for the extension, else a generic one
    (the gateway then answers 415 with a clear message)."""
    return given or media.guess_from_filename(file.name) or "application/octet-stream"


async def _chunks(source: AsyncBufferedReader, progress: Progress | None) -> AsyncIterator[bytes]:
    while chunk := await source.read(CHUNK_BYTES):
        yield chunk
        if progress is not None:
            progress(len(chunk))


async def _json(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"error": {"code": "internal_error", "message": raw[:200].decode(errors="replace")}}


def _tree(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found: list[type[GatewayError]] = [cls]
    for sub in cls.__subclasses__():
        found += _tree(sub)
    return found


# code → class, so a client can raise the very error the gateway answered with.
ERRORS_BY_CODE: dict[str, type[GatewayError]] = {cls.code: cls for cls in _tree(GatewayError)}


def from_answer(status: int, body: Any, retry_after: str | None = None) -> GatewayError:
    """The gateway's JSON error body (or whatever came instead) as an exception."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GatewayError(f"HTTP {status} without the gateway's error body", status=status)
    cls = ERRORS_BY_CODE.get(str(error.get("code")), GatewayError)
    exc = cls(
        str(error.get("message", "")),
        chert_code=error.get("chert_code"),
        retry_after=parse_retry_after(retry_after),
        retryable=bool(error.get("retryable", cls.retryable)),
    )
    exc.request_id = error.get("request_id")
    return exc


__all__ = ["BlockingGatewayClient", "GatewayClient", "GatewayError", "GatewayUnreachableError"]
