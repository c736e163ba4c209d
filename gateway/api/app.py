"""The gateway's two aiohttp applications: the API (`create_app`) and the ops
listener (`create_ops_app`), and the one middleware that gives every answer an
X-Request-ID, turns every error into the JSON error body, counts it and logs it.
"""

from __future__ import annotations

import logging
import math
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway import __version__
from gateway.api import handlers
from gateway.api.admission import Admission
from gateway.api.hashing import Hashing
from gateway.api.http_protocol import OnRefusal
from gateway.api.idempotency import IdempotencyStore
from gateway.api.keys import (
    ADMISSION,
    CALLER_KEY,
    CHERT,
    HASHING,
    IDEMPOTENCY,
    LOG_FIELDS_KEY,
    METRICS,
    OUTCOME_KEY,
    PIPELINE,
    QUOTAS,
    REQUEST_ID_KEY,
    SETTINGS,
    SPOOL,
)
from gateway.api.pipeline import UploadPipeline
from gateway.api.quota import CallerQuotas
from gateway.api.spool import Spool
from gateway.chert import egress, pool, retry, tls
from gateway.chert.client import ChertClient
from gateway.chert.redact import Redactor
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from gateway.ops import logs, tracing
from gateway.ops.config import Settings
from gateway.ops.metrics import Metrics

if TYPE_CHECKING:
    from gateway.api.shared_idempotency import SharedIdempotencyStore

log = logging.getLogger("chert_gateway")
access_log = logging.getLogger(logs.ACCESS_LOGGER)

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CHERT_CONNECTIONS_PER_UPLOAD = 3
CHERT_KEEPALIVE_SECONDS = 15.0
# A JSON send body (Chert's message shape) the gateway reads whole: over it, 413.
MAX_JSON_BODY_BYTES = 1024 * 1024
# Error codes that mean "the caller sent something we refuse", counted as one
# outcome so dashboards can tell rejects from failures.
REJECTED_CODES = frozenset(
    {
        "invalid_request",
        "unauthorized",
        "not_found",
        "method_not_allowed",
        "payload_too_large",
        "unsupported_media_type",
        "idempotency_in_progress",
        "idempotency_key_reused",
    }
)


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if REQUEST_ID_RE.match(given) else uuid.uuid4().hex


def _from_http_exception(exc: web.HTTPException) -> GatewayError:
    """aiohttp's own refusals (routing, oversize) in the gateway's shape."""
    if exc.status == 404:
        return NotFoundError("no such route; see /openapi.json")
    if exc.status == 405:
        return MethodNotAllowedError(f"{exc.reason}: use {exc.headers.get('Allow', '')}")
    if exc.status == 413:
        return PayloadTooLargeError(exc.text or "the request body is too large")
    return InvalidRequestError(exc.text or exc.reason)


def _outcome(request: web.Request, error: GatewayError | None) -> str:
    if error is None:
        return str(request.get(OUTCOME_KEY, "ok"))
    return _outcome_of(error)


def _outcome_of(error: GatewayError) -> str:
    return "rejected" if error.code in REJECTED_CODES else error.code


def error_response(error: GatewayError, request: web.Request, request_id: str) -> web.Response:
    response = handlers.json_response(error.to_json(request_id), status=error.status)
    wait = error.retry_after if error.retry_after is not None else error.default_retry_after
    if wait is not None:
        seconds = min(wait, retry.MAX_RETRY_AFTER_SECONDS)
        response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(seconds)))
    if (
        request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"
        and not request.content.is_eof()
    ):
        # The caller is waiting for 100 Continue that will not come; it will
        # not send the body, so don't keep the connection waiting for it.
        response.force_close()
    return response


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not tracing.enabled():
        return await _handle(request, handler, None)
    route = _route_label(request)
    with tracing.server_span(
        f"{request.method} {route}", request.headers,
        **{"http.request.method": request.method, "http.route": route},
    ) as span:  # fmt: skip
        return await _handle(request, handler, span)


async def _handle(request: web.Request, handler: Handler, span: Any) -> web.StreamResponse:
    """The request, answered whatever it raised, then counted and logged
    (and told to its span, when tracing is on)."""
    request_id = request[REQUEST_ID_KEY] = _request_id(request)
    started = time.perf_counter()
    error: GatewayError | None = None
    try:
        response = await handler(request)
    except GatewayError as exc:
        error = exc
    except web.HTTPException as exc:
        error = _from_http_exception(exc)
    except Exception:
        log.exception("unexpected error", extra={"fields": {"request_id": request_id}})
        error = GatewayError("unexpected error in the gateway; see its log for request_id")
    if error is not None:
        response = error_response(error, request, request_id)
    if span is not None:
        _tell_span(span, request, response, error, request_id)
    _record(request, response, error, request_id, time.perf_counter() - started)
    if error is not None:
        _release_frames(error)
    return response


def _tell_span(
    span: Any,
    request: web.Request,
    response: web.StreamResponse,
    error: GatewayError | None,
    request_id: str,
) -> None:
    if error is not None:
        tracing.failed(span, error.code, error.message)
    fields = request.get(LOG_FIELDS_KEY, {})
    tracing.set_attributes(
        span,
        **{
            "chert_gateway.request_id": request_id,
            "http.response.status_code": response.status,
            "chert_gateway.outcome": _outcome(request, error),
            "chert_gateway.chert_code": error.chert_code if error is not None else None,
            "chert_gateway.bytes_received": request.content.total_bytes,
            "chert_gateway.attachment_ids": fields.get("attachment_ids"),
            "chert_gateway.size_bytes": fields.get("size_bytes"),
            "chert_gateway.message_id": fields.get("message_id"),
        },
    )


def _route_label(request: web.Request) -> str:
    """The route's name: a bounded label for metrics, logs and span names."""
    resource = request.match_info.route.resource
    return (resource.name if resource is not None else None) or "unmatched"


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer carries X-Request-ID, a streamed
    download (whose headers go before its handler returns) included."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers["X-Request-ID"] = request_id


def _release_frames(error: BaseException) -> None:
    """Let go of what the failed request's frames hold.

    An error keeps its traceback, the traceback its frames, and the frames
    their locals: the body pieces in flight when an upload broke. Those
    sit in reference cycles until the garbage collector runs, which with
    tuning.tune_gc is rarely; clearing the frames frees the pieces now.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        pending += [exc.__cause__, exc.__context__]


def _record(
    request: web.Request,
    response: web.StreamResponse,
    error: GatewayError | None,
    request_id: str,
    elapsed: float,
) -> None:
    """Count and log one request. Only bounded values become labels."""
    route_label = _route_label(request)
    outcome = _outcome(request, error)
    metrics = request.app[METRICS]
    metrics.requests.labels(route_label, outcome).inc()
    metrics.response(route_label, response.status, error.code if error is not None else None)
    metrics.request_seconds.labels(route_label, outcome).observe(elapsed)
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": request.method,
        "route": route_label,
        # The path without its query: a query string may carry tokens.
        "path": request.path,
        "status": response.status,
        "outcome": outcome,
        "duration_s": round(elapsed, 6),
        "bytes_received": request.content.total_bytes,
        **request.get(LOG_FIELDS_KEY, {}),
    }
    if caller := request.get(CALLER_KEY):
        fields["caller"] = caller
    if (trace_id := tracing.current_trace_id()) is not None:
        fields["trace_id"] = trace_id
    if error is not None:
        fields["error_code"] = error.code
        fields["chert_code"] = error.chert_code
        fields["error"] = error.message
    access_log.info(
        "%s %s %s", request.method, request.path, response.status, extra={"fields": fields}
    )


def refusal_recorder(metrics: Metrics) -> OnRefusal:
    """Counts and logs what the HTTP layer refused before any route (http_protocol)."""

    def refused(error: GatewayError, request_id: str, exc: BaseException | None) -> None:
        outcome = _outcome_of(error)
        metrics.requests.labels("unmatched", outcome).inc()
        metrics.response("unmatched", error.status, error.code)
        fields = {
            "request_id": request_id,
            "route": "unmatched",
            "status": error.status,
            "outcome": outcome,
            "error_code": error.code,
            "error": error.message,
        }
        if exc is not None:
            log.error("unexpected error", exc_info=exc, extra={"fields": fields})
        else:
            access_log.warning("refused: %s", error.message, extra={"fields": fields})

    return refused


@web.middleware
async def client_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With GATEWAY_CLIENT_TOKENS set, every /v1 call needs one of them as a bearer."""
    tokens = request.app[SETTINGS].client_tokens
    if tokens is not None and request.path.startswith("/v1/"):
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        caller = tokens.caller(token.strip(), time.monotonic())
        if scheme.lower() != "bearer" or caller is None:
            raise UnauthorizedError("send 'Authorization: Bearer <token>' with a client token")
        request[CALLER_KEY] = caller
    return await handler(request)


async def _hashing(app: web.Application) -> AsyncIterator[None]:
    """Where SHA-256 runs, chosen once at start (hashing.py); its threads stop with the app."""
    hashing = app[HASHING] = Hashing.start(app[SETTINGS].sha256_threads)
    yield
    hashing.stop()


def _shared_idempotency(
    settings: Settings, local: IdempotencyStore, metrics: Metrics
) -> SharedIdempotencyStore:
    """Keys in Redis, with the in-process store as the fallback. Imported
    only here: redis-py costs a process about 15 MiB, which a sidecar
    without Redis should not pay."""
    from gateway.api.shared_idempotency import SharedIdempotencyStore, key_prefix

    assert settings.idempotency_url is not None
    return SharedIdempotencyStore(
        settings.idempotency_url,
        prefix=key_prefix(settings.deployment, settings.tenant),
        ttl=settings.idempotency_ttl,
        local=local,
        metrics=metrics,
    )


async def _chert_client(app: web.Application) -> AsyncIterator[None]:
    """The session to Chert lives as long as the app (cleanup_ctx)."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    if settings.signing_secret is None:
        raise RuntimeError("the gateway needs a Chert secret before it starts")
    way_out = egress.egress_for(settings.chert_api_url)
    log.info(
        "calls to Chert go %s",
        f"through the egress proxy {way_out.proxy}" if way_out.proxy else "direct",
    )
    connector = pool.ChertConnector(
        # Bounded: every upload in flight makes at most one call at a time,
        # and a form three (form.UPLOAD_CONCURRENCY); beyond that, calls wait.
        limit=settings.max_in_flight * CHERT_CONNECTIONS_PER_UPLOAD,
        # An idle connection is closed well before a typical load balancer's
        # idle timeout (60 s on most clouds) closes it under us (aiohttp's
        # default, said out loud).
        keepalive_timeout=CHERT_KEEPALIVE_SECONDS,
        ttl_dns_cache=60,
        ssl=tls.client_context(settings.ca_file),
    )
    async with aiohttp.ClientSession(
        connector=connector,
        # aiohttp's default is total=300 s for every call; each call here sets
        # its own limits, so none is hidden (see ChertClient).
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.chert_timeout),
        headers={hdrs.USER_AGENT: f"chert-gateway/{__version__}"},
        auto_decompress=False,
        # Chert's API sets no cookies; a real jar would be consulted on every call.
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        chert = ChertClient(
            session,
            settings.chert_api_url,
            settings.signing_secret,
            timeout=settings.chert_timeout,
            tenant=settings.tenant,
            observer=metrics,
            redactor=Redactor([settings.signing_secret, settings.client_tokens]),
            egress=way_out,
        )
        app[CHERT] = chert
        app[PIPELINE] = UploadPipeline(chert, metrics)
        yield


def create_app(
    settings: Settings, *, metrics: Metrics | None = None, admission: Admission | None = None
) -> web.Application:
    """The API application. Pass `metrics`/`admission` to share them with the ops app."""
    metrics = metrics if metrics is not None else Metrics()
    admission = admission if admission is not None else Admission(settings.max_in_flight)
    metrics.in_flight.set_function(lambda: admission.in_flight)
    metrics.max_in_flight.set(settings.max_in_flight)
    metrics.draining.set_function(lambda: int(admission.draining))
    metrics.spool_capacity.set(settings.spool_max_bytes)
    app = web.Application(
        middlewares=[request_middleware, client_auth_middleware],
        client_max_size=MAX_JSON_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[ADMISSION] = admission
    app[QUOTAS] = CallerQuotas(settings.caller_max_in_flight, settings.caller_rate, metrics)
    metrics.caller_max_in_flight.set(settings.caller_max_in_flight or 0)
    metrics.caller_rate.set(settings.caller_rate or 0)
    idempotency = IdempotencyStore(ttl=settings.idempotency_ttl)
    app[IDEMPOTENCY] = idempotency
    spool = app[SPOOL] = Spool(settings.spool_dir, settings.spool_max_bytes)
    spool.sweep()
    metrics.spool_used.set_function(lambda: spool.used)
    metrics.idempotency_entries.set_function(lambda: len(idempotency))
    app.on_response_prepare.append(_add_request_id)
    app.cleanup_ctx.append(_hashing)
    app.cleanup_ctx.append(_chert_client)
    if settings.idempotency_url is not None:
        shared = app[IDEMPOTENCY] = _shared_idempotency(settings, idempotency, metrics)
        app.cleanup_ctx.append(shared.lifetime)
    handlers.add_routes(app)
    return app


def create_ops_app(metrics: Metrics, admission: Admission) -> web.Application:
    """/healthz, /readyz and /metrics, on their own listener."""

    async def healthz(request: web.Request) -> web.Response:
        return handlers.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if admission.draining:
            return handlers.json_response({"status": "draining"}, status=503)
        return handlers.json_response({"status": "ready", "in_flight": admission.in_flight})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    return app
