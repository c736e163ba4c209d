"""From a caller's request to what the pipeline needs: the file's name, type
and size, checked before a byte of the body is read, and the body itself as
counted, limited, hashed chunks.

Filename order (SPEC): Content-Disposition (RFC 6266, `filename*` too), then
X-Filename, then the `filename` query parameter, then a name made from the
MIME type. Only the base name is kept; control characters are refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import unicodedata
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import StreamReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    content_disposition_filename,
    parse_content_disposition,
)

from gateway import media
from gateway.errors import (
    ClientAbortedError,
    ClientTimeoutError,
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from gateway.http_protocol import parser_reason
from gateway.progress import ProgressDeadline

# Chert's ids (chats, attachments) are UUIDs, hex or prefixed hex (in_536f…): allow any plain
# token, refuse anything that could change the path it is put into.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_FILENAME_BYTES = 255

# Where the caller's bytes come from: the request body's read, or a
# multipart part's read_chunk. Both give b"" at the end.
ReadFn = Callable[[int], Awaitable[bytes]]
MAX_CAPTION_CHARS = 10_000
DIGEST_READ_BYTES = 256 * 1024


@dataclass(frozen=True)
class FileMeta:
    filename: str
    content_type: str


def chat_id(request: web.Request) -> str:
    value = request.match_info["chat_id"]
    if not ID_RE.match(value):
        raise InvalidRequestError(
            "chat_id must be 1-128 letters, digits, '-' or '_' (the chat.id Chert returned)"
        )
    return value


def attachment_id(request: web.Request) -> str:
    value = request.match_info["attachment_id"]
    if not ID_RE.match(value):
        raise InvalidRequestError("attachment_id must be 1-128 letters, digits, '-' or '_'")
    return value


def idempotency_key(request: web.Request) -> str | None:
    """The caller's key (header, then query); None when it gave none."""
    key = request.headers.get("Idempotency-Key") or request.query.get("idempotency_key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise InvalidRequestError("Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def caption(request: web.Request) -> str | None:
    text = request.query.get("text")
    if text is None or text == "":
        return None
    if len(text) > MAX_CAPTION_CHARS:
        raise InvalidRequestError(f"text is over {MAX_CAPTION_CHARS} characters")
    return text


def clean_filename(raw: str) -> str:
    """The base name of `raw`, refused if it holds control characters or is
    not text (aiohttp hands on undecodable header bytes as lone surrogates)."""
    categories = {unicodedata.category(ch) for ch in raw}
    if "Cc" in categories:
        raise InvalidRequestError("filename contains control characters")
    if "Cs" in categories or "\ufffd" in raw:
        raise InvalidRequestError("filename is not valid UTF-8")
    name = re.split(r"[/\\]", raw)[-1].strip()
    if name in ("", ".", ".."):
        raise InvalidRequestError(f"filename {raw!r} has no base name")
    if len(name.encode()) > MAX_FILENAME_BYTES:
        raise InvalidRequestError(f"filename is over {MAX_FILENAME_BYTES} bytes")
    return name


def disposition_param(value: str | None, name: str) -> str | None:
    """A Content-Disposition parameter (`filename`, `name`) as RFC 6266 reads
    it, `filename*` first; 400 for a header aiohttp's parser finds malformed
    (it warns and drops the parameter, which would hide the caller's name)."""
    if not value:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadContentDispositionParam)
        warnings.simplefilter("error", BadContentDispositionHeader)
        try:
            _, params = parse_content_disposition(value)
        except (BadContentDispositionParam, BadContentDispositionHeader):
            raise InvalidRequestError(
                "Content-Disposition is malformed (RFC 6266); filename*=UTF-8''… "
                "must be percent-encoded UTF-8"
            ) from None
    return content_disposition_filename(params, name)


def _given_filename(request: web.Request) -> str | None:
    name = disposition_param(request.headers.get(hdrs.CONTENT_DISPOSITION), "filename")
    if name:
        return name
    return request.headers.get("X-Filename") or request.query.get("filename") or None


def file_meta(request: web.Request) -> FileMeta:
    """Name and MIME type from the request's headers; 415 when Chert would not take it."""
    return resolve_file_meta(_given_filename(request), request.headers.get(hdrs.CONTENT_TYPE, ""))


def resolve_file_meta(given_filename: str | None, declared_type: str) -> FileMeta:
    """A clean name and Chert's spelling of the type, guessed from the name if generic."""
    filename = clean_filename(given_filename) if given_filename is not None else None
    content_type = media.normalize(declared_type)
    if content_type in media.GENERIC_TYPES:
        guessed = media.guess_from_filename(filename) if filename else None
        if guessed is None:
            raise UnsupportedMediaTypeError(
                "cannot tell the file's type: send its Content-Type, or a filename "
                "with an extension Chert takes"
            )
        content_type = guessed
    if not media.is_supported(content_type):
        raise UnsupportedMediaTypeError(
            f"Chert does not take {content_type}; it takes {', '.join(media.SUPPORTED_TYPES)}"
        )
    return FileMeta(filename or media.default_filename(content_type), content_type)


def check_encoding(request: web.Request) -> None:
    """415 for a body that is encoded (gzip, br…): the gateway neither decodes
    it nor passes on bytes whose size and hash would not describe the file."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if coding not in ("", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {coding!r} is not taken: send the file's own bytes, unencoded"
        )
    transfer = request.headers.get(hdrs.TRANSFER_ENCODING)
    if transfer is not None and transfer.strip().lower() != "chunked":
        raise UnsupportedMediaTypeError(
            f"Transfer-Encoding {transfer!r} is not taken: send chunked, or Content-Length"
        )


def declared_size(request: web.Request, limit: int) -> int | None:
    """The body's Content-Length, checked against the limit before it is read.

    None for a chunked body, whose length is known only once it has arrived.
    """
    if request.content_length is None:
        if "chunked" in request.headers.get(hdrs.TRANSFER_ENCODING, "").lower():
            return None
        raise InvalidRequestError("the body is empty; send the file's bytes")
    if request.content_length > limit:
        raise PayloadTooLargeError(
            f"the body is {request.content_length} bytes; the limit is {limit}"
        )
    if request.content_length == 0:
        raise InvalidRequestError("the body is empty; send the file's bytes")
    return request.content_length


def check_content(meta: FileMeta, head: bytes) -> None:
    """415 when the file's first bytes contradict its declared type."""
    if not media.content_matches(meta.content_type, head):
        raise UnsupportedMediaTypeError(
            f"the content does not look like {meta.content_type}; send the file's real type"
        )


async def send_continue(request: web.Request) -> None:
    """Answer `Expect: 100-continue` now that the pre-body checks have passed.

    The route's own expect handler does nothing, so a rejection before this
    point reaches the caller as a final answer and costs it no body bytes.
    """
    if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def defer_continue(request: web.Request) -> None:
    """An expect_handler that leaves the decision to the handler (see send_continue)."""


async def digest(read: ReadFn, *, limit: int, client_timeout: float) -> tuple[int, str]:
    """Read a body to its end, keeping nothing but its size and SHA-256."""
    reader = CallerReader(read, client_timeout=client_timeout)
    hasher = hashlib.sha256()
    while chunk := await reader.read(DIGEST_READ_BYTES):
        if reader.received > limit:
            raise PayloadTooLargeError(f"the body passed the {limit}-byte limit")
        hasher.update(chunk)
    return reader.received, hasher.hexdigest()


class BodyDigest:
    """The SHA-256 of a body as it passes, or nothing (GATEWAY_SHA256=false)."""

    def __init__(self, enabled: bool) -> None:
        self._hash = hashlib.sha256() if enabled else None

    def update(self, chunk: bytes) -> None:
        if self._hash is not None:
            self._hash.update(chunk)

    def hexdigest(self) -> str | None:
        return self._hash.hexdigest() if self._hash is not None else None


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

    It implements `chert.UploadBody`; it cannot be replayed.
    """

    replayable = False

    def __init__(
        self,
        content: StreamReader,
        size: int,
        *,
        client_timeout: float,
        sha256: bool = True,
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
        self._hasher = BodyDigest(sha256)
        self._pending = b""  # read ahead by head(), not yet handed on
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

    @property
    def sha256(self) -> str | None:
        return self._hasher.hexdigest()

    async def head(self, n: int) -> bytes:
        """The body's first `n` bytes, read ahead; `chunks` hands them on first."""
        wanted = min(n, self.size)
        while len(self._pending) < wanted:
            self._pending += await self._read()
        return self._pending[:n]

    async def chunks(self, progress: ProgressDeadline) -> AsyncIterator[bytes]:
        self.first_byte_sent_at = time.perf_counter()
        if self._pending:
            chunk, self._pending = self._pending, b""
            self._hasher.update(chunk)
            progress.progressed()
            yield chunk
        while self.received < self.size:
            # While we wait on the caller only the client timeout applies.
            progress.waiting_on_source()
            chunk = await self._read()
            self._hasher.update(chunk)
            progress.progressed()
            yield chunk

    async def _read(self) -> bytes:
        chunk = await self._reader.read(self.size - self.received)
        if not chunk:
            raise self._reader.fail(
                ClientAbortedError(
                    f"the body ended after {self.received} of the {self.size} bytes declared"
                )
            )
        return chunk
