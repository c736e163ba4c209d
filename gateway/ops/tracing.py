"""OpenTelemetry tracing: off unless the standard OTEL_* variables turn it on.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
is set, or `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`);
off when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The SDK
then reads every other OTEL_* variable itself (service name, resource
attributes, sampler, headers, protocol).

One span per request (SERVER, continuing the caller's W3C `traceparent`)
and a child span per phase of an upload (slot, upload, send); every call to
Chert carries the current span's `traceparent` on (metadata and downloads
the request's own). Never a span, an event or an attribute per chunk.
With tracing off every function here is a check of one global and nothing
else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

log = logging.getLogger("chert_gateway")

# Set by start() (or a test's install()): None while tracing is off.
_tracer: Any = None
_propagator: Any = None
_provider: Any = None

EXPORTERS = ("otlp", "console")


def wanted(env: Mapping[str, str]) -> str | None:
    """The exporter the environment asks for, or None for tracing off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named == "none":
        return None
    if named:
        return named
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return "otlp" if endpoint else None


def start(env: Mapping[str, str]) -> str | None:
    """Turn tracing on as the environment asks (once, at start-up); the
    exporter chosen, or None. An exporter this build does not have is a
    ValueError naming OTEL_TRACES_EXPORTER."""
    exporter_name = wanted(env)
    if exporter_name is None:
        return None
    if exporter_name not in EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER: {exporter_name!r} is not one of {EXPORTERS}")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "chert-gateway")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info("tracing on: spans exported by %s", exporter_name)
    return exporter_name


def install(provider: Any) -> None:
    """Trace with `provider` (an SDK TracerProvider); tests give one with an
    in-memory exporter."""
    global _tracer, _propagator, _provider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from gateway import __version__

    _provider = provider
    _tracer = provider.get_tracer("chert_gateway", __version__)
    _propagator = TraceContextTextMapPropagator()


def stop() -> None:
    """Flush and forget the tracer (at shutdown, and after a test)."""
    global _tracer, _propagator, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _propagator = _provider = None


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def server_span(name: str, headers: Mapping[str, str], **attributes: Any) -> Iterator[Any]:
    """The request's span, continuing the caller's `traceparent`; None when off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    parent = _propagator.extract(headers)
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        yield span


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child span of the current one (a phase, a call to Chert); None when off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with _tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as current:  # fmt: skip
        yield current


def inject(headers: MutableMapping[str, str]) -> None:
    """Put the current span's `traceparent` into a call's headers."""
    if _propagator is not None:
        _propagator.inject(headers)


def set_attributes(target: Any, **attributes: Any) -> None:
    """Attributes on a span (None values are left out); nothing when off."""
    if target is not None:
        target.set_attributes({k: v for k, v in attributes.items() if v is not None})


def failed(target: Any, code: str, message: str) -> None:
    if target is not None:
        from opentelemetry.trace import Status, StatusCode

        target.set_attribute("error.type", code)
        target.set_status(Status(StatusCode.ERROR, message))


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (None values are left out); nothing when off."""
    if _tracer is None:
        return
    from opentelemetry import trace

    set_attributes(trace.get_current_span(), **attributes)


def add_event(name: str, **attributes: Any) -> None:
    """An event on the current span (a retry); nothing when off."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, attributes)


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), for the access log line."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
