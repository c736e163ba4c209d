"""OpenTelemetry: off unless OTEL_* says so; one span per request with a span
per phase, the caller's W3C traceparent continued and passed on to every
call to Chert, and the trace id in the access log line. The SDK's in-memory
exporter collects the spans; the simulator shows what Chert received."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.ops import tracing
from gateway.simulator import ChertSimulator
from tests.constants import CHAT_ID
from tests.gateway_calls import png_bytes, send
from tests.processes import GatewayProcess, curl, gateway_cli

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.stop()


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


async def test_one_upload_is_one_trace_continuing_the_callers(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    spans: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    body = png_bytes(300_000)
    status, answer, _ = await send(
        gateway, body, params={"text": "hi"}, headers={"traceparent": TRACEPARENT}
    )
    assert status == 201, answer
    found = by_name(spans.get_finished_spans())
    assert set(found) == {
        "POST send_file", "chert create_slot", "chert upload", "chert send",
    }  # fmt: skip
    server = found["POST send_file"]
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.attributes["http.response.status_code"] == 201
    assert server.attributes["chert_gateway.attachment_ids"] == (answer["attachment_id"],)
    assert server.attributes["chert_gateway.size_bytes"] == len(body)
    for phase in ("chert create_slot", "chert upload", "chert send"):
        child = found[phase]
        assert child.parent is not None
        assert child.parent.span_id == server.context.span_id, phase
        assert child.attributes["chert.http.status"] == "200", phase
    assert (
        found["chert upload"].attributes["chert_gateway.attachment_id"] == answer["attachment_id"]
    )
    assert found["chert send"].attributes["chert_gateway.message_id"] == answer["message"]["id"]

    # Every call to Chert carried the trace on, each from its own phase's span.
    calls = [r for r in simulator.state.requests if not r.path.startswith("/_simulator")]
    assert len(calls) == 3
    for call in calls:
        traceparent = call.header("traceparent")
        assert traceparent is not None, call.path
        assert traceparent.split("-")[1] == TRACE_ID
    put = simulator.state.requests_to("PUT")[0].header("traceparent")
    assert put is not None
    assert put.split("-")[2] == format(found["chert upload"].context.span_id, "016x")

    exported = [json.loads(span.to_json()) for span in spans.get_finished_spans()]
    (tmp_path / "trace.json").write_text(json.dumps(exported, indent=2))
    print(f"\none upload's trace: {tmp_path / 'trace.json'}")


async def test_a_retry_is_an_event_and_a_failure_marks_its_phase(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, spans: InMemorySpanExporter
) -> None:
    simulator.faults.update({"fail_sends": 1, "fail_send_code": 3002, "retry_after_seconds": 0})
    status, _, _ = await send(gateway, png_bytes(1000))
    assert status == 201
    retried = by_name(spans.get_finished_spans())["chert send"]
    assert [(e.name, e.attributes["reason"]) for e in retried.events] == [("retry", "3002")]
    spans.clear()

    simulator.faults.update({"fail_sends": 1, "fail_send_code": 4001})
    status, answer, _ = await send(gateway, png_bytes(1000))
    assert status == 502, answer
    found = by_name(spans.get_finished_spans())
    assert found["chert send"].status.status_code is StatusCode.ERROR
    assert found["chert send"].attributes["chert.code"] == 4001
    assert found["POST send_file"].attributes["error.type"] == "upstream_error"
    assert found["POST send_file"].attributes["chert_gateway.chert_code"] == 4001


async def test_the_access_log_line_names_the_trace(
    gateway: TestClient[Any, Any], spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="chert_gateway.access")
    await send(gateway, png_bytes(1000), headers={"traceparent": TRACEPARENT})
    (line,) = [r for r in caplog.records if r.name == "chert_gateway.access"]
    assert line.fields["trace_id"] == TRACE_ID  # type: ignore[attr-defined]


async def test_with_tracing_off_nothing_is_traced_or_passed_on(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    assert not tracing.enabled()
    caplog.set_level("INFO", logger="chert_gateway.access")
    status, _, _ = await send(gateway, png_bytes(1000), headers={"traceparent": TRACEPARENT})
    assert status == 201
    assert all(r.header("traceparent") is None for r in simulator.state.requests)
    (line,) = [r for r in caplog.records if r.name == "chert_gateway.access"]
    assert "trace_id" not in line.fields  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("env", "exporter"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ],
)
def test_only_the_standard_variables_turn_it_on(env: dict[str, str], exporter: str | None) -> None:
    assert tracing.wanted(env) == exporter


async def test_serve_refuses_an_exporter_it_does_not_have_in_one_line() -> None:
    ran = await gateway_cli(
        "serve",
        "--simulate",
        env={"OTEL_TRACES_EXPORTER": "zipkin", "GATEWAY_LISTEN": "127.0.0.1:0"},
    )
    assert ran.code == 2
    assert "OTEL_TRACES_EXPORTER" in ran.err.strip().splitlines()[-1]
    assert "Traceback" not in ran.err


async def test_the_gateway_process_traces_when_otel_says_so(tmp_path: Path) -> None:
    """The real start-up path: serve reads OTEL_*, and its spans are flushed at exit."""
    upload = tmp_path / "a.png"
    upload.write_bytes(png_bytes(5000))
    async with GatewayProcess({"OTEL_TRACES_EXPORTER": "console"}, "--simulate") as gateway:
        status, _ = await curl(
            "-T", str(upload), "-H", "Content-Type: image/png", "-H", f"traceparent: {TRACEPARENT}",
            f"{gateway.api}/v1/chats/{CHAT_ID}/attachments",
        )  # fmt: skip
        assert status == 201
    assert "tracing on: spans exported by console" in gateway.output
    assert '"name": "PUT send_file"' in gateway.output  # curl -T puts
    assert f'"trace_id": "0x{TRACE_ID}"' in gateway.output


async def test_a_forms_files_are_phases_of_its_one_request(
    gateway: TestClient[Any, Any], spans: InMemorySpanExporter
) -> None:
    """Each file uploads in a task of its own; the trace still holds them."""
    form = aiohttp.FormData()
    for name in ("a.png", "b.png"):
        form.add_field("file", png_bytes(2000), filename=name, content_type="image/png")
    response = await gateway.post(
        f"/v1/chats/{CHAT_ID}/messages", data=form, headers={"traceparent": TRACEPARENT}
    )
    assert response.status == 201, await response.text()
    finished = spans.get_finished_spans()
    names = sorted(span.name for span in finished)
    assert names == sorted(
        ["POST send_message", "chert create_slot", "chert create_slot",
         "chert upload", "chert upload", "chert send"]
    )  # fmt: skip
    assert {format(span.context.trace_id, "032x") for span in finished} == {TRACE_ID}
