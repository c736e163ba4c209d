"""ChertClient: the only code that talks to Chert.

It builds Chert's URLs, adds the bearer secret (to Chert's own origin only),
retries what may be retried, and maps every answer and failure to the
gateway's errors once, here:

    Chert / network                      → gateway error
    2xx with JSON                        → the parsed body
    3xx                                  → UpstreamError (redirects are refused)
    429, 5xx but 4001, 3002, no answer   → UpstreamUnavailableError (retried first)
    1002, 1003 on the caller's content   → InvalidRequestError with chert_code (400)
    404 for a chat or an attachment      → NotFoundError (404): the caller's id is wrong
    4001, other 4xx                      → UpstreamError with chert_code (never retried)
    Chert too slow                       → UpstreamTimeoutError (retried first)

Everything of Chert's that may reach a caller or a log (its error messages,
its JSON answers, the download's headers) passes the `Redactor` here, so a
Chert or proxy that quotes the request's secret cannot pass it on.

Slot creation and the send call are retried with full-jitter exponential
backoff that honours Retry-After, within an overall deadline, always with the
same idempotency key. A call that meets a pooled connection Chert's side had
dropped is made again at once on another (pool.py). A streamed PUT starts
over only when Chert never acknowledged a byte of it and none of the
caller's bytes beyond those it holds were taken (liveness.py); once its body
flows, a failure is final.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
from yarl import URL

from gateway.chert import liveness, pool
from gateway.chert.egress import Egress
from gateway.chert.progress import ProgressDeadline
from gateway.chert.redact import Redactor
from gateway.chert.retry import RetryPolicy, parse_retry_after, with_retries
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from gateway.ops import tracing
from gateway.ops.credentials import Credential

T = TypeVar("T")

log = logging.getLogger("chert_gateway.chert")

NO_SENDER_LINE = 3002
DELIVERY_FAILED = 4001
# Chert's codes for content it finds invalid (chert-api/attachments.md).
INVALID_CONTENT = frozenset({1002, 1003})
# The calls whose content is the caller's (a name, a type, a size, parts);
# the PUT's headers are the gateway's own, so a 1002 there is Chert's or ours.
CALLER_CONTENT_OPERATIONS = frozenset({"create_attachment", "send_message"})
# RFC 9110 §5.1 token: what a header name may be; a value may hold no CR,
# LF or NUL.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# An error body larger than this is not Chert's JSON; read no more of it.
MAX_ERROR_BODY_BYTES = 64 * 1024
# Of Chert's error message, this much is quoted to the caller; codes are
# 4-digit numbers, anything else is not a code of Chert's.
MAX_QUOTED_CHARS = 300
MAX_CHERT_CODE = 100_000
# A streamed PUT on a pooled connection idle this long first waits for
# Chert's side to acknowledge what it holds (liveness.py): a load balancer
# may have dropped it, and the caller's bytes cannot be asked for twice.
# Below any load balancer's idle timeout; a PUT that follows its slot
# creation reuses that call's connection and waits for nothing.
PROBE_AFTER_IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class UploadSlot:
    attachment_id: str
    upload_url: URL
    required_headers: dict[str, str]
    expires_at: str | None


class UploadBody(Protocol):
    """A body whose length is known up front and that streams its chunks.

    `chunks` tells `progress` each time it hands over a chunk and each time
    it waits on its own source, so only a stalled *upstream* trips it.
    """

    @property
    def size(self) -> int: ...

    @property
    def replayable(self) -> bool:
        """True when the body can be sent again from the start (spooled to disk)."""

    @property
    def restartable(self) -> bool:
        """True while every byte taken from the body's source is still held,
        so `chunks` can start over (always, for a replayable body)."""

    @property
    def failure(self) -> GatewayError | None:
        """Set when the body's own source failed (the caller left, stalled, lied
        about its length): that, not the broken PUT, is what the caller hears."""

    def chunks(self, progress: ProgressDeadline) -> AsyncGenerator[bytes, None]: ...


class ChertObserver(Protocol):
    """Told of every call to Chert, retry and error code (metrics.Metrics is one)."""

    def upstream_call(self, operation: str, status: str, seconds: float) -> None: ...
    def upstream_retry(self, operation: str, reason: str) -> None: ...
    def chert_error(self, operation: str, code: int) -> None: ...


class _NoObserver:
    def upstream_call(self, operation: str, status: str, seconds: float) -> None:
        pass

    def upstream_retry(self, operation: str, reason: str) -> None:
        pass

    def chert_error(self, operation: str, code: int) -> None:
        pass


class DroppedConnectionError(UpstreamUnavailableError):
    """A pooled connection turned out dropped by Chert's side before it
    carried the call: the call is made again at once on another."""


class _PutBody(aiohttp.payload.Payload):
    """An UploadBody as aiohttp writes it.

    On a pooled connection idle for PROBE_AFTER_IDLE_SECONDS or more, it
    waits for Chert's side to acknowledge some of the bytes the body holds
    before it asks the body for more. While `unacknowledged`, Chert has not
    taken a byte and the caller's bytes are all still held: if the connection
    fails then, the PUT can start over on another, nothing lost or doubled.
    """

    def __init__(
        self, body: UploadBody, progress: ProgressDeadline, connection: pool.Attempt
    ) -> None:
        super().__init__(body, content_type=None)
        self._size = body.size
        self._body = body
        self._progress = progress
        self._connection = connection
        self.unacknowledged = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an upload body is not text")

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        # aiohttp retries an idempotent request on its own when its payload
        # is not consumed; starting over is decided in ChertClient.upload.
        self._consumed = True
        idle = self._connection.idle_seconds
        transport = getattr(writer, "transport", None)
        wait = idle is not None and idle >= PROBE_AFTER_IDLE_SECONDS and self._body.restartable
        probe = liveness.Probe(transport) if wait and transport is not None else None
        self.unacknowledged = probe is not None
        async with aclosing(self._body.chunks(self._progress)) as chunks:
            async for chunk in chunks:
                await writer.write(chunk)
                if probe is not None:
                    if not await probe.answered():
                        raise ConnectionResetError("Chert's side had dropped the connection")
                    probe = None
                    self.unacknowledged = False


@dataclass
class _Call:
    """One attempt's outcome, as the observer hears it: an HTTP status or
    `timeout` / `error` when no answer came."""

    status: str = "error"


class ChertClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: URL,
        secret: Credential,
        *,
        timeout: float,
        tenant: str | None = None,
        retry: RetryPolicy | None = None,
        observer: ChertObserver | None = None,
        redactor: Redactor | None = None,
        egress: Egress | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.origin()
        # Chert may sit under a path prefix (a proxy): keep it, without a trailing slash.
        self._prefix = base_url.path.rstrip("/")
        self._secret = secret
        self._timeout = timeout
        self._tenant = tenant
        self._retry = retry if retry is not None else RetryPolicy()
        self._observer: ChertObserver = observer if observer is not None else _NoObserver()
        self._redact = redactor if redactor is not None else Redactor([secret])
        way_out = egress if egress is not None else Egress()
        # Every request's way out, as aiohttp's arguments.
        self._via: dict[str, Any] = {
            "proxy": way_out.proxy,
            "proxy_headers": way_out.proxy_headers or None,
        }

    # -- the three calls ------------------------------------------------------

    async def create_attachment(self, filename: str, content_type: str, size: int) -> UploadSlot:
        body = {"filename": filename, "content_type": content_type, "size_bytes": size}
        answer = await self._call_with_retries(
            "create_attachment", "POST", "/api/v1/attachments", body
        )
        try:
            slot = UploadSlot(
                attachment_id=str(answer["attachment_id"]),
                upload_url=URL(str(answer["upload_url"])),
                required_headers={
                    str(k).lower(): str(v)
                    for k, v in (answer.get("required_headers") or {}).items()
                },
                expires_at=answer.get("expires_at"),
            )
        except (KeyError, TypeError, AttributeError, ValueError):
            raise UpstreamError(
                "Chert's upload slot answer lacks attachment_id or upload_url"
            ) from None
        self._check_same_origin(slot.upload_url)
        _check_headers(slot.required_headers)
        return slot

    async def upload(self, slot: UploadSlot, body: UploadBody, content_type: str) -> None:
        """PUT the body to the slot with Content-Length; never chunked, never redirected.

        A replayable body is retried like any other call; a streamed one is
        gone once sent, so its failure reaches the caller as a retryable 502.
        """
        headers = self._upload_headers(slot, content_type, body.size)
        if body.replayable:
            await self._with_retries("upload", lambda: self._put(slot, body, headers))
            return
        try:
            await self._on_a_live_connection("upload", lambda: self._put(slot, body, headers))
        except UpstreamUnavailableError as exc:
            raise UpstreamError(
                f"the upload to Chert broke off: {exc.message}", retryable=True
            ) from exc

    async def _put(self, slot: UploadSlot, body: UploadBody, headers: dict[str, str]) -> None:
        # No total time limit: a large file on a slow link takes as long as it
        # takes. What is bounded is progress: Chert must take each chunk, and
        # answer after the last, within the timeout.
        no_total = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout)
        payload: _PutBody | None = None
        try:
            with self._timed("upload") as call, pool.attempt() as connection:
                async with asyncio.timeout(None) as scope:
                    progress = ProgressDeadline(scope, self._timeout)
                    payload = _PutBody(body, progress, connection)
                    try:
                        with self._map_transport_errors("upload"):
                            async with self._session.put(
                                slot.upload_url,
                                data=payload,
                                headers=headers,
                                allow_redirects=False,
                                timeout=no_total,
                                **self._via,
                            ) as response:
                                call.status = str(response.status)
                                await self._read_answer(response, "upload")
                    finally:
                        progress.stop()
        except (GatewayError, TimeoutError) as exc:
            if payload is not None and payload.unacknowledged and body.restartable:
                raise self._dropped("upload", connection) from exc
            if body.failure is not None:
                raise body.failure from exc
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeoutError(
                    f"Chert took more than {self._timeout:g} s to take the next part of the upload"
                ) from None
            raise

    async def send_message(
        self, chat_id: str, payload: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        """Send a chat message; `payload` is Chert's shape without the key."""
        message = dict(payload.get("message") or {})
        message["idempotency_key"] = idempotency_key
        body = {**payload, "message": message}
        path = f"/api/v1/chats/{chat_id}/messages"
        answer = await self._call_with_retries("send_message", "POST", path, body)
        sent = answer.get("message")
        if not isinstance(sent, dict):
            raise UpstreamError("Chert's send answer has no message object")
        return sent

    async def get_attachment(self, attachment_id: str) -> dict[str, Any]:
        path = f"/api/v1/attachments/{attachment_id}"
        return await self._call_with_retries("get_attachment", "GET", path, None)

    @asynccontextmanager
    async def open_content(self, attachment_id: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """Chert's response for the file's bytes, headers read, body not yet.

        Not retried: once bytes flow to the caller there is no starting over.
        """
        headers = {"Authorization": self._auth_header()}
        tracing.inject(headers)
        if self._tenant:
            headers["x-chert-tenant"] = self._tenant
        # No total timeout: a large file takes as long as it takes; a stall
        # between chunks is bounded by sock_read.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout, sock_read=self._timeout
        )
        with self._timed("download") as call, self._map_transport_errors("download"):
            async with self._session.get(
                self._url(f"/api/v1/attachments/{attachment_id}/content"),
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
                **self._via,
            ) as response:
                call.status = str(response.status)
                if response.status != 200:
                    raise await self._error_from_answer(response, "download")
                yield response

    # -- the secret goes only to Chert ----------------------------------------

    def _url(self, path: str) -> URL:
        return self._base.with_path(self._prefix + path)

    def _auth_header(self) -> str:
        return f"Bearer {self._secret.current(time.monotonic())}"

    def _check_same_origin(self, url: URL) -> None:
        """Refuse an upload_url that would carry the secret anywhere but Chert."""
        base = self._base
        if (
            not url.is_absolute()
            or url.scheme != base.scheme
            or url.host != base.host
            or url.port != base.port
            or url.user is not None
            or url.password is not None
        ):
            raise UpstreamError(
                "Chert's upload_url is not on Chert's own origin; refused without "
                f"sending the secret (expected {base.origin()})"
            )

    def _upload_headers(self, slot: UploadSlot, content_type: str, size: int) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in slot.required_headers.items():
            if name == "authorization":
                # Chert's answer holds a placeholder here; the real secret is ours.
                continue
            if name == "content-type" and value.lower() != content_type:
                raise UpstreamError(
                    f"Chert asks for Content-Type {value} on an upload registered as {content_type}"
                )
            if name in ("content-length", "transfer-encoding", "host"):
                continue
            headers[name] = value
        headers["Authorization"] = self._auth_header()
        headers["Content-Type"] = content_type
        # aiohttp keeps a streamed body's length only when the header is set;
        # without it the PUT would go chunked, which Chert refuses.
        headers["Content-Length"] = str(size)
        tracing.inject(headers)
        return headers

    # -- calls, answers and retries ---------------------------------------------

    async def _call_with_retries(
        self, operation: str, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        return await self._with_retries(
            operation,
            lambda: self._on_a_live_connection(
                operation, lambda: self._call(operation, method, path, body)
            ),
        )

    async def _on_a_live_connection(
        self, operation: str, attempt_once: Callable[[], Awaitable[T]]
    ) -> T:
        """`attempt_once`, made again at once each time it meets a pooled
        connection that Chert's side had dropped (a fresh one is no longer
        than the pool deep: each dropped one evicts its elders)."""
        for _ in range(self._retry.attempts - 1):
            try:
                return await attempt_once()
            except DroppedConnectionError:
                self._retrying(operation, "dropped_connection")
        return await attempt_once()

    def _dropped(self, operation: str, connection: pool.Attempt) -> DroppedConnectionError:
        """The error for a call whose pooled connection was found dead, once
        the connections idle as long are closed too."""
        idle = connection.idle_seconds or 0.0
        connector = self._session.connector
        closed = connector.evict_idle(idle) if isinstance(connector, pool.ChertConnector) else 0
        log.info(
            "a pooled connection to Chert had been dropped by Chert's side; %s goes again "
            "on another",
            operation,
            extra={"fields": {"idle_seconds": round(idle, 3), "closed_as_old": closed}},
        )
        return DroppedConnectionError(
            f"Chert's side had dropped a connection idle for {idle:.1f} s ({operation})"
        )

    async def _with_retries(self, operation: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(
            attempt_once,
            self._retry,
            is_transient=_is_transient,
            retry_after=_retry_after,
            before_retry=lambda exc: self._retrying(operation, _retry_reason(exc)),
        )

    def _retrying(self, operation: str, reason: str) -> None:
        self._observer.upstream_retry(operation, reason)
        tracing.add_event("retry", operation=operation, reason=reason)

    async def _call(
        self, operation: str, method: str, path: str, body: dict[str, Any] | None
    ) -> dict[str, Any]:
        headers = {"Authorization": self._auth_header()}
        tracing.inject(headers)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = orjson.dumps(body)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        with (
            self._timed(operation) as call,
            pool.attempt() as connection,
            self._map_transport_errors(operation, connection),
        ):
            async with self._session.request(
                method,
                self._url(path),
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
                **self._via,
            ) as response:
                call.status = str(response.status)
                return await self._read_answer(response, operation)

    async def _read_answer(
        self, response: aiohttp.ClientResponse, operation: str
    ) -> dict[str, Any]:
        if 200 <= response.status < 300:
            raw = await response.read()
            try:
                answer = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                raise UpstreamError(f"Chert's {operation} answer is not JSON") from None
            if not isinstance(answer, dict):
                raise UpstreamError(f"Chert's {operation} answer is not a JSON object")
            redacted: dict[str, Any] = self._redact.json(answer)
            return redacted
        raise await self._error_from_answer(response, operation)

    async def _error_from_answer(
        self, response: aiohttp.ClientResponse, operation: str
    ) -> GatewayError:
        """The answer as a gateway error, its Chert code told to the observer."""
        error = await _answer_to_error(response, operation)
        if error.chert_code is not None:
            self._observer.chert_error(operation, error.chert_code)
        return self._redacted(error)

    def _redacted(self, error: GatewayError) -> GatewayError:
        """`error`, its message cleared of every secret Chert may have quoted."""
        message = self._redact.text(error.message)
        if message != error.message:
            error.message = message
            error.args = (message,)
        return error

    def passed_headers(
        self, response: aiohttp.ClientResponse, names: tuple[str, ...]
    ) -> dict[str, str]:
        """Those of Chert's response headers that go on to a caller, redacted."""
        return {
            name: self._redact.text(response.headers[name])
            for name in names
            if name in response.headers
        }

    @contextmanager
    def _map_transport_errors(
        self, operation: str, connection: pool.Attempt | None = None
    ) -> Iterator[None]:
        """aiohttp's connection failures → gateway errors, in one place.

        A call whose reused `connection` is reset or closed before its answer
        met a connection Chert's side had dropped: it is made again at once.
        """
        try:
            yield
        except GatewayError:
            raise
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError subclasses
            raise UpstreamTimeoutError(f"Chert did not answer {operation} in time") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            # A configuration error, not an outage: never retried.
            raise UpstreamError(
                f"Chert's TLS certificate was refused for {operation} "
                f"({exc.certificate_error}); if Chert is reached through a corporate "
                "or private CA, set CHERT_CA_FILE to its PEM bundle"
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise UpstreamError(
                f"the TLS handshake with Chert failed for {operation} ({exc.os_error}); "
                "check CHERT_API_URL, CHERT_CA_FILE and any egress proxy"
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            if (
                connection is not None
                and connection.reused
                and isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
            ):
                raise self._dropped(operation, connection) from exc
            raise UpstreamUnavailableError(
                f"could not reach Chert for {operation}: {type(exc).__name__}"
            ) from exc
        except aiohttp.ClientHttpProxyError as exc:
            # The egress proxy answered the CONNECT itself: 407 or 403 is its
            # configuration; anything else is the proxy failing to reach Chert.
            refused = exc.status in (403, 407)
            error_class = UpstreamError if refused else UpstreamUnavailableError
            raise error_class(
                f"the egress proxy answered {exc.status} to the tunnel for {operation}; "
                "check HTTPS_PROXY (and its credentials) and NO_PROXY"
            ) from exc
        except aiohttp.ClientResponseError as exc:
            raise self._redacted(
                UpstreamError(f"Chert's {operation} answer was malformed: {exc.message}")
            ) from exc

    @contextmanager
    def _timed(self, operation: str) -> Iterator[_Call]:
        call = _Call()
        started = time.perf_counter()
        try:
            yield call
        except (TimeoutError, UpstreamTimeoutError):
            if call.status == "error":
                call.status = "timeout"
            raise
        finally:
            self._observer.upstream_call(operation, call.status, time.perf_counter() - started)
            tracing.annotate(**{"chert.http.status": call.status})


def _retry_reason(exc: Exception) -> str:
    """A bounded label for why a call was retried."""
    if isinstance(exc, GatewayError):
        if exc.chert_code is not None:
            return str(exc.chert_code) if exc.chert_code == NO_SENDER_LINE else "chert_other"
        return exc.code
    return "other"


def _is_transient(exc: Exception) -> bool:
    return isinstance(exc, (UpstreamUnavailableError, UpstreamTimeoutError))


def _retry_after(exc: Exception) -> float | None:
    return exc.retry_after if isinstance(exc, GatewayError) else None


async def _answer_to_error(response: aiohttp.ClientResponse, operation: str) -> GatewayError:
    raw = b"" if 300 <= response.status < 400 else await response.content.read(MAX_ERROR_BODY_BYTES)
    return error_from_answer(operation, response.status, response.headers.get("Retry-After"), raw)


def error_from_answer(
    operation: str, status: int, retry_after_header: str | None, raw: bytes
) -> GatewayError:
    """A Chert answer that is not a success, as the gateway's error (the table
    in this module's docstring). Pure: the unit tests call it directly."""
    retry_after = parse_retry_after(retry_after_header)
    if 300 <= status < 400:
        return UpstreamError(
            f"Chert answered {operation} with a redirect ({status}); refused, the secret "
            "goes only to Chert's origin"
        )
    chert_code, chert_message = None, ""
    try:
        error = orjson.loads(raw).get("error") or {}
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and 0 < code < MAX_CHERT_CODE:
            chert_code = code
        chert_message = _quotable(str(error.get("message") or ""))
    except (orjson.JSONDecodeError, AttributeError):
        pass
    detail = f"Chert answered {operation} with {status}"
    if chert_code is not None:
        detail += f" (code {chert_code})"
    if chert_message:
        detail += f": {chert_message}"
    if (
        status == 429
        or chert_code == NO_SENDER_LINE
        or (status >= 500 and chert_code != DELIVERY_FAILED)
    ):
        return UpstreamUnavailableError(detail, chert_code=chert_code, retry_after=retry_after)
    if chert_code in INVALID_CONTENT and operation in CALLER_CONTENT_OPERATIONS:
        return InvalidRequestError(detail, chert_code=chert_code)
    if status in (401, 403):
        return UpstreamError(
            f"{detail} (is the gateway's Chert secret right?)", chert_code=chert_code
        )
    if status == 404 and operation in ("get_attachment", "download"):
        return NotFoundError(chert_message or "attachment not found", chert_code=chert_code)
    if status == 404 and operation == "send_message":
        return NotFoundError(
            f"{detail}; the chat id must be a chat.id that POST /api/v1/chats returned",
            chert_code=chert_code,
        )
    return UpstreamError(detail, chert_code=chert_code)


def _quotable(text: str) -> str:
    """Chert's message, fit to quote in an answer and a log line: one line, short."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_QUOTED_CHARS else line[: MAX_QUOTED_CHARS - 1] + "…"


def _check_headers(headers: dict[str, str]) -> None:
    """Refuse a slot whose required headers are not valid HTTP: a CR LF in a
    value would split the PUT's head (and aiohttp would refuse it later, as
    an error of ours)."""
    for name, value in headers.items():
        if not HEADER_NAME_RE.match(name) or any(c in value for c in "\r\n\x00"):
            raise UpstreamError(
                "Chert's upload slot asks for a header that is not valid HTTP; nothing was uploaded"
            )
