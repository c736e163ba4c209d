"""The body of an upload: from the caller's socket to Chert's PUT.

    incoming()      the caller's body as an UploadBody: streamed through when
                    its length is declared (CallerBody), spooled to disk first
                    when it is not (spooled → SpooledBody); its first bytes
                    checked against its type either way
    CallerReader    reads the caller, mapping silence, departure and a
                    malformed body to the gateway's errors
    digest()        a body read to its end for its size and SHA-256 only
                    (the repeat of an Idempotency-Key)

`BodyLimits` is what every reader of a body is bounded by. The Chert client
sends any `UploadBody` (it defines what it needs, in `chert/client.py`); the
bodies here are `HashedBody`s, whose extras the pipeline reads for the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from aiohttp import StreamReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.api.hashing import INLINE, BodyDigest, Hashing
from gateway.api.http_protocol import parser_reason
from gateway.api.spool import Spool, SpoolFile
from gateway.chert import media
from gateway.chert.client import UploadBody
from gateway.chert.media import FileMeta
from gateway.chert.progress import ProgressDeadline
from gateway.errors import (
    ClientAbortedError,
    ClientTimeoutError,
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from gateway.ops import tuning

# The size of the pieces read from the caller and written to Chert: 256 KiB
# measured fastest for a relay (docs/performance.md).
CHUNK_BYTES = 256 * 1024
# Larger socket reads cost less CPU per byte but hold more memory, so they go
# to large bodies, and only while few uploads run (docs/performance.md,
# docs/deploy.md for the memory budget).
LARGE_READ_BYTES = 1024 * 1024
LARGE_READS_SHARE_OF_MAX_IN_FLIGHT = 0.25

# Where the caller's bytes come from: the request body's read, or a
# multipart part's read_chunk. Both give b"" at the end.
ReadFn = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True)
class BodyLimits:
    """What a body is read with: its cap, piece size, patience and hashing."""

    max_bytes: int
    client_timeout: float
    sha256: bool = True
    chunk_size: int = CHUNK_BYTES
    hashing: Hashing = INLINE

    def digest(self, size: int | None = None) -> BodyDigest:
        return self.hashing.digest(self.sha256, size)


class HashedBody(UploadBody, Protocol):
    @property
    def received(self) -> int: ...

    # time.perf_counter() of the first byte from the caller, and to Chert.
    @property
    def first_byte_received_at(self) -> float | None: ...

    @property
    def first_byte_sent_at(self) -> float | None: ...

    async def sha256(self) -> str | None:
        """The digest of every byte received (None when not hashed)."""
        ...


def read_size(size: int, *, in_flight: int, max_in_flight: int) -> int:
    """How much to read per recv() for a streamed body of `size` bytes."""
    few_in_flight = in_flight <= max_in_flight * LARGE_READS_SHARE_OF_MAX_IN_FLIGHT
    return LARGE_READ_BYTES if few_in_flight and size > LARGE_READ_BYTES else CHUNK_BYTES


@asynccontextmanager
async def incoming(
    request: web.Request,
    meta: FileMeta,
    size: int | None,
    *,
    limits: BodyLimits,
    spool: Spool,
    recv_bytes: int,
) -> AsyncIterator[tuple[FileMeta, HashedBody]]:
    """The caller's body, and the file's name and type once its first bytes
    are known: streamed through when its length is declared, spooled to disk
    first when it is not (Chert needs the length). Either way its first bytes
    must fit its type (or tell it) before Chert hears of it."""
    await send_continue(request)
    if size is None:
        async with spooled(request.content.read, meta, spool=spool, limits=limits) as body:
            yield body.meta, body
        return
    streamed = CallerBody(
        request.content, size, client_timeout=limits.client_timeout, digest=limits.digest(size)
    )
    try:
        with tuning.read_size(request.transport, recv_bytes):
            settled = settle_type(meta, await streamed.head(media.SNIFF_BYTES))
            yield settled, streamed
    finally:
        streamed.close()


@asynccontextmanager
async def spooled(
    read: ReadFn, meta: FileMeta, *, spool: Spool, limits: BodyLimits
) -> AsyncIterator[SpooledBody]:
    """Spool the whole body, then refuse an empty file or one whose first
    bytes contradict its type (or, if it has none yet, do not show one).
    The file lives as long as the context."""
    reader = CallerReader(read, client_timeout=limits.client_timeout)
    hasher = limits.digest()
    head = b""
    async with spool.file() as file:
        try:
            while chunk := await reader.read(limits.chunk_size):
                if reader.received > limits.max_bytes:
                    raise PayloadTooLargeError(
                        f"the body passed the {limits.max_bytes}-byte limit; upload abandoned"
                    )
                file.reserve(len(chunk))
                if len(head) < media.SNIFF_BYTES:
                    head += chunk[: media.SNIFF_BYTES - len(head)]
                hasher.update(chunk)
                await file.write(chunk)
                if hasher.behind():
                    await hasher.caught_up()
            if reader.received == 0:
                raise InvalidRequestError(
                    f"{meta.filename or 'the file'} is empty; send the file's bytes"
                )
            settled = settle_type(meta, head)
            await file.flush()
            sha256 = await hasher.hexdigest()
        finally:
            hasher.abandon()  # a no-op once the digest is taken
        yield SpooledBody(
            settled,
            file,
            reader.received,
            sha256,
            limits.chunk_size,
            first_byte_received_at=reader.first_byte_at,
        )


async def digest(read: ReadFn, limits: BodyLimits) -> tuple[int, str]:
    """Read a body to its end, keeping nothing but its size and SHA-256."""
    reader = CallerReader(read, client_timeout=limits.client_timeout)
    hasher = limits.hashing.digest()
    try:
        while chunk := await reader.read(limits.chunk_size):
            if reader.received > limits.max_bytes:
                raise PayloadTooLargeError(f"the body passed the {limits.max_bytes}-byte limit")
            hasher.update(chunk)
            if hasher.behind():
                await hasher.caught_up()
        sha256 = await hasher.hexdigest()
    finally:
        hasher.abandon()
    assert sha256 is not None  # hashing was asked for
    return reader.received, sha256


def settle_type(meta: FileMeta, head: bytes) -> FileMeta:
    """The file's name and type given its first bytes: a declared type they
    contradict is a 415, and a type left to them is the one they show."""
    if not meta.from_content:
        if not media.content_matches(meta.content_type, head):
            raise UnsupportedMediaTypeError(
                f"the content does not look like {meta.content_type}; send the file's real type"
            )
        return meta
    shown = media.sniff(head)
    if shown is None:
        raise UnsupportedMediaTypeError(
            "cannot tell the file's type from its name or its first bytes: send its "
            f"Content-Type (Chert takes {', '.join(media.SUPPORTED_TYPES)})"
        )
    return FileMeta(meta.filename or media.default_filename(shown), shown)


async def send_continue(request: web.Request) -> None:
    """Answer `Expect: 100-continue` now that the pre-body checks have passed.

    The route's own expect handler does nothing (`defer_continue`), so a
    rejection before this point reaches the caller as a final answer and
    costs it no body bytes.
    """
    if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def defer_continue(request: web.Request) -> None:
    """An expect_handler that leaves the decision to the handler (see send_continue)."""


class CallerReader:
    """Reads the caller's body, mapping its silences and departures to errors.

    A caller quiet for longer than `client_timeout` is a ClientTimeoutError
    (408); one whose connection drops is a ClientAbortedError. The error is
    also kept in `failure`, because the HTTP client wraps what a body raises.
    """

    def __init__(
        self,
        read: ReadFn,
        *,
        client_timeout: float,
        read_nowait: Callable[[int], bytes] | None = None,
    ) -> None:
        self.received = 0
        self.failure: GatewayError | None = None
        self.first_byte_at: float | None = None  # time.perf_counter()
        self._read = read
        self._read_nowait = read_nowait
        self._client_timeout = client_timeout

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes; b"" at the end of the body."""
        try:
            # What has already arrived needs no timer; on a fast stream that
            # is most reads.
            chunk = self._read_nowait(n) if self._read_nowait is not None else b""
            if not chunk:
                async with asyncio.timeout(self._client_timeout):
                    chunk = await self._read(n)
        except TimeoutError:
            raise self.fail(
                ClientTimeoutError(
                    f"no body bytes for {self._client_timeout:g} s after {self.received}; "
                    "the upload was abandoned"
                )
            ) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise self.fail(
                ClientAbortedError(f"the caller left after sending {self.received} bytes")
            ) from exc
        except GatewayError as exc:  # the HTTP layer found the body malformed
            raise self.fail(exc) from None
        except (ValueError, HttpProcessingError) as exc:  # a form's part, malformed
            raise self.fail(
                InvalidRequestError(f"the body is malformed: {parser_reason(exc)}")
            ) from None
        if self.first_byte_at is None and chunk:
            self.first_byte_at = time.perf_counter()
        self.received += len(chunk)
        return chunk

    def fail(self, error: GatewayError) -> GatewayError:
        self.failure = error
        return error


class CallerBody:
    """A body of declared length, streamed as it arrives: counted, capped, hashed.

    It implements `UploadBody`; it cannot be replayed.
    """

    replayable = False

    def __init__(
        self,
        content: StreamReader,
        size: int,
        *,
        client_timeout: float,
        digest: BodyDigest | None = None,
    ) -> None:
        self.size = size
        # Pieces as they arrived, neither joined nor sliced (either would copy
        # every byte once more). They need no size limit here: aiohttp's
        # parser ends the body at its Content-Length, and its flow control
        # holds about one socket read (see tuning.read_size).
        self._reader = CallerReader(
            lambda _: content.readany(),
            read_nowait=lambda _: content.read_nowait(-1),
            client_timeout=client_timeout,
        )
        self._hasher = digest if digest is not None else INLINE.digest()
        self._held = b""  # read ahead by head(): sent again if the PUT starts over
        self._restartable = True
        self.first_byte_sent_at: float | None = None

    @property
    def received(self) -> int:
        return self._reader.received

    @property
    def first_byte_received_at(self) -> float | None:
        return self._reader.first_byte_at

    @property
    def failure(self) -> GatewayError | None:
        return self._reader.failure

    async def sha256(self) -> str | None:
        return await self._hasher.hexdigest()

    def close(self) -> None:
        """Done with, finished or not: a hash still queued is dropped."""
        self._hasher.abandon()

    @property
    def restartable(self) -> bool:
        """True until `chunks` takes more from the caller than head() holds."""
        return self._restartable

    async def head(self, n: int) -> bytes:
        """The body's first `n` bytes, read ahead; `chunks` hands them on first."""
        wanted = min(n, self.size)
        while len(self._held) < wanted:
            self._held += await self._read()
        return self._held[:n]

    async def chunks(self, progress: ProgressDeadline) -> AsyncGenerator[bytes, None]:
        """The body's chunks. While `restartable`, a new call starts over with
        the bytes held; once it goes on past them it cannot be called again."""
        if not self._restartable:
            raise RuntimeError("the body has been handed on past what it holds")
        if self.first_byte_sent_at is None:
            self.first_byte_sent_at = time.perf_counter()
        if self._held:
            progress.progressed()
            yield self._held
        # Asked for more: what was held is sent for good.
        self._restartable = False
        self._hasher.update(self._held)
        self._held = b""
        while self.received < self.size:
            # While we wait on the caller only the client timeout applies.
            progress.waiting_on_source()
            chunk = await self._read()
            self._hasher.update(chunk)
            progress.progressed()
            yield chunk
            if self._hasher.behind():
                progress.waiting_on_source()  # our own hash, not Chert, is behind
                await self._hasher.caught_up()

    async def _read(self) -> bytes:
        chunk = await self._reader.read(self.size - self.received)
        if not chunk:
            raise self._reader.fail(
                ClientAbortedError(
                    f"the body ended after {self.received} of the {self.size} bytes declared"
                )
            )
        return chunk


class SpooledBody:
    """A complete body on disk (`spooled`). Implements `UploadBody`, replayably."""

    replayable = True
    restartable = True
    failure: GatewayError | None = None

    def __init__(
        self,
        meta: FileMeta,
        source: SpoolFile,
        size: int,
        sha256: str | None,
        chunk_size: int,
        first_byte_received_at: float | None,
    ) -> None:
        # The file is opened and closed by Spool.file, not here (see there).
        self.meta = meta  # its name and type, settled by its first bytes
        self._source = source
        self.size = size
        self.received = size
        self._sha256 = sha256
        self._chunk_size = chunk_size
        self.first_byte_received_at = first_byte_received_at
        self.first_byte_sent_at: float | None = None

    async def sha256(self) -> str | None:
        return self._sha256

    async def chunks(self, progress: ProgressDeadline) -> AsyncGenerator[bytes, None]:
        await self._source.seek(0)  # every attempt starts from the first byte
        if self.first_byte_sent_at is None:
            self.first_byte_sent_at = time.perf_counter()
        while chunk := await self._source.read(self._chunk_size):
            progress.progressed()
            yield chunk
