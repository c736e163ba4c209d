"""The HTTP connection under the API: what happens before a request reaches
the middleware, or after its body has broken.

aiohttp's own protocol answers the parser's refusals (an oversized header,
too many headers, Content-Length beside Transfer-Encoding, a bad chunk size)
as text/plain, before any middleware runs, and logs each with a traceback;
it waits for a request's headers as long as keep-alive allows (an hour);
and a chunked body that turns malformed mid-way leaves the handler waiting
for bytes that will never come. `GatewayRequestHandler` changes these:

- every refusal has the JSON error shape and an X-Request-ID, and is one
  WARNING line (`on_refusal`);
- a request's headers must be complete within HEADER_TIMEOUT_SECONDS of its
  first byte: else 408 and the connection closes. A new connection that
  sends nothing at all in that time is closed without a word;
- a parser error inside a body fails that body's reads at once: the upload
  stops with 400 instead of a 408 a client timeout later.

It reaches into aiohttp's RequestHandler (its message queue and current
request), which is why aiohttp is pinned to a minor version;
tests/test_http_edges.py exercises every path here over raw sockets.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.errors import (
    ClientTimeoutError,
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
)

# How long a caller has to send a request's headers, from their first byte.
HEADER_TIMEOUT_SECONDS = 10.0
# The parser's limits, said here so the README can name them.
MAX_LINE_BYTES = 8190  # the request line, and each header line
MAX_HEADERS = 128
PARSER_LIMITS: dict[str, Any] = {
    "max_line_size": MAX_LINE_BYTES,
    "max_field_size": MAX_LINE_BYTES,
    "max_headers": MAX_HEADERS,
    # What reaches Chert is the bytes the caller sent; a Content-Encoding is
    # refused (intake.check_encoding), never decoded.
    "auto_decompress": False,
}

# The most body a request may send, whatever its framing hides (a form's
# preamble, say): set by its handler, enforced here on every byte received.
BODY_CEILING = web.RequestKey("gateway_body_ceiling", int)

# Told of every refusal made here: the error, its request id, and the
# exception behind it when it was the gateway's own fault (a 5xx).
OnRefusal = Callable[[GatewayError, str, BaseException | None], None]


def parser_reason(exc: BaseException | None) -> str:
    """What the parser objected to, without the bytes it quotes (they may
    hold a caller's token)."""
    if isinstance(exc, LineTooLong):
        return f"a request or header line is over {MAX_LINE_BYTES} bytes"
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc or "")
    first = re.split(r":\s*b['\"]", str(text).split("\n", 1)[0])[0]
    return first.strip().rstrip(":") or "malformed HTTP request"


def _as_error(status: int, exc: BaseException | None) -> GatewayError:
    if status == 413:
        return PayloadTooLargeError(parser_reason(exc))
    if 400 <= status < 500:
        return InvalidRequestError(
            f"the HTTP request is malformed: {parser_reason(exc)}", status=status
        )
    return GatewayError("unexpected error in the gateway; see its log for request_id")


def _raw_answer(error: GatewayError, request_id: str) -> bytes:
    """A whole HTTP/1.1 answer, for a connection that has no request object."""
    body = orjson.dumps(error.to_json(request_id))
    head = (
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GatewayRequestHandler(RequestHandler):
    __slots__ = (
        "_armed_at",
        "_header_bytes",
        "_header_timer",
        "_on_refusal",
        "_requests_started",
    )

    def __init__(self, manager: web.Server, *, on_refusal: OnRefusal, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = False  # has the awaited request sent any byte?
        # (requests parsed, requests whose handling started) when the timer was armed
        self._armed_at = (0, 0)
        self._requests_started = 0
        self._on_refusal = on_refusal

    async def _handle_request(self, *args: Any) -> tuple[web.StreamResponse, bool]:
        self._requests_started += 1
        return await super()._handle_request(*args)

    # -- refusals ----------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer is out: aiohttp's own handling cuts the connection.
            return super().handle_error(request, status, exc, message)
        error = _as_error(status, exc)
        request_id = uuid.uuid4().hex
        self._on_refusal(error, request_id, exc if error.status >= 500 else None)
        response = web.Response(
            body=orjson.dumps(error.to_json(request_id)),
            status=error.status,
            content_type="application/json",
            headers={"X-Request-ID": request_id},
        )
        response.force_close()
        return response

    # -- the header deadline ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline(has_bytes=False)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """No request parsed and waiting, none being handled."""
        return self._current_request is None and not self._messages

    def _arm_header_deadline(self, *, has_bytes: bool) -> None:
        self._header_bytes = has_bytes
        self._armed_at = (self._request_count, self._requests_started)
        if self._header_timer is None:
            self._header_timer = self._loop.call_later(
                HEADER_TIMEOUT_SECONDS, self._headers_overdue
            )

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        # Bytes that armed the timer may have been the body of a request parsed
        # just before: if any request was parsed or handled since, they were.
        progressed = self._armed_at != (self._request_count, self._requests_started)
        if progressed or not self._idle() or self.transport is None:
            return
        if self._header_bytes:
            error = ClientTimeoutError(
                f"the request's headers did not arrive within {HEADER_TIMEOUT_SECONDS:g} s"
            )
            request_id = uuid.uuid4().hex
            self._on_refusal(error, request_id, None)
            self.transport.write(_raw_answer(error, request_id))
        self.force_close()

    # -- the parser ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        request = self._current_request
        if request is not None and not request.content.is_eof():
            self._body_received(request, data)
            return
        idle = self._idle()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm_header_deadline()
        elif idle:
            self._arm_header_deadline(has_bytes=True)

    def _body_received(self, request: web.BaseRequest, data: bytes) -> None:
        """Body bytes for the request being handled. A parser error here is
        that body's: its reads fail now, and the connection closes after the
        handler's answer."""
        queued = len(self._messages)
        super().data_received(data)
        # An error after the body has ended is the next request's (bytes
        # past Content-Length): it is answered after this one, as aiohttp does.
        body_ended = request.content.is_eof()
        if (
            not body_ended
            and len(self._messages) > queued
            and isinstance(self._messages[-1][0], _ErrInfo)
        ):
            info = self._messages.pop()[0]
            assert isinstance(info, _ErrInfo)
            self._fail_body(
                request,
                InvalidRequestError(f"the request body is malformed: {parser_reason(info.exc)}"),
            )
            return
        ceiling = request.get(BODY_CEILING)
        if ceiling is not None and request.content.total_bytes > ceiling:
            self._fail_body(
                request, PayloadTooLargeError(f"the body passed its {ceiling}-byte limit")
            )

    def _fail_body(self, request: web.BaseRequest, error: GatewayError) -> None:
        """The body's reads fail with `error` now; the connection closes after
        the handler's answer."""
        request.content.set_exception(error)
        # At its end, too, so aiohttp does not linger reading what cannot be read.
        request.content.feed_eof()
        self.close()


class GatewayServer(web.Server):
    """aiohttp's Server, making GatewayRequestHandlers."""

    on_refusal: OnRefusal

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(
            self, loop=self._loop, on_refusal=self.on_refusal, **self._kwargs
        )


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections are GatewayRequestHandlers."""

    def __init__(self, app: web.Application, *, on_refusal: OnRefusal, **kwargs: Any) -> None:
        super().__init__(app, **{**PARSER_LIMITS, **kwargs})
        self._on_refusal = on_refusal

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The Server is built inside web.Application, which may not be
        # subclassed; this one differs only in the handler it makes.
        server.__class__ = GatewayServer
        assert isinstance(server, GatewayServer)
        server.on_refusal = self._on_refusal
        return server
