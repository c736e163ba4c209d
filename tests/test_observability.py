"""Metrics and logs, as an SRE reads them: each outcome counted once, gauges
that come back down, series that do not grow with traffic, a log line with
what matters and no secret."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest

from gateway.api.keys import ADMISSION, METRICS
from gateway.ops import logs
from gateway.ops.metrics import Metrics
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.constants import SECRET
from tests.gateway_calls import png_bytes, send
from tests.raw_http import RawCaller, disconnect_mid_body, until
from tests.samples import PNG_MAGIC

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics, name: str) -> Samples:
    found: Samples = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def moved(before: Samples, after: Samples) -> dict[tuple[tuple[str, str], ...], float]:
    changes = {}
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        if delta:
            changes[key[1]] = delta
    return changes


def metrics_of(client: TestClient[Any, Any]) -> Metrics:
    return client.server.app[METRICS]  # type: ignore[union-attr, no-any-return]


async def stall_mid_body(client: TestClient[Any, Any], simulator: ChertSimulator) -> None:
    reader, writer = await RawCaller(client).open(5_000_000)
    writer.write(PNG_MAGIC + os.urandom(100_000))
    await writer.drain()
    await asyncio.wait_for(reader.readline(), 10)  # the 408
    writer.close()


Action = Callable[[TestClient[Any, Any], ChertSimulator], Awaitable[Any]]


def with_faults(faults: dict[str, Any]) -> Action:
    async def act(client: TestClient[Any, Any], simulator: ChertSimulator) -> None:
        simulator.faults.update(faults)
        await send(client, png_bytes(2000))

    return act


async def draining(client: TestClient[Any, Any], simulator: ChertSimulator) -> None:
    client.server.app[ADMISSION].start_draining()  # type: ignore[union-attr]
    await send(client, png_bytes(2000))


REPLAYED_BODY = png_bytes(2000)


async def replay(client: TestClient[Any, Any], simulator: ChertSimulator) -> None:
    # The same bytes each time: a key with another body would be 422.
    await send(client, REPLAYED_BODY, headers={"Idempotency-Key": "again"})


OUTCOMES: list[tuple[str, Action]] = [
    ("sent", with_faults({})),
    ("rejected", lambda c, s: send(c, b"%PDF-1.7", content_type="text/plain")),
    ("client_aborted", disconnect_mid_body),
    ("client_timeout", stall_mid_body),
    ("upstream_error", with_faults({"fail_sends": 1, "fail_send_code": 4001})),
    ("upstream_unavailable", with_faults({"fail_sends": 9, "retry_after_seconds": 0})),
    ("upstream_timeout", with_faults({"send_delay_seconds": 1.0})),
    ("overloaded", draining),
]


@pytest.mark.parametrize(("outcome", "action"), OUTCOMES, ids=[o for o, _ in OUTCOMES])
async def test_each_outcome_moves_its_counter_by_exactly_one(
    make_gateway: GatewayFactory, simulator: ChertSimulator, outcome: str, action: Action
) -> None:
    client = await make_gateway(GATEWAY_CLIENT_TIMEOUT="0.5", CHERT_TIMEOUT="0.4")
    metrics = metrics_of(client)
    before = samples(metrics, "chert_gateway_requests_total")
    await action(client, simulator)
    await until(lambda: moved(before, samples(metrics, "chert_gateway_requests_total")))
    await asyncio.sleep(0.1)  # nothing else may follow
    changes = moved(before, samples(metrics, "chert_gateway_requests_total"))
    assert changes == {(("outcome", outcome), ("route", "send_file")): 1.0}


async def test_a_replayed_key_is_its_own_outcome(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    await replay(gateway, simulator)
    before = samples(metrics_of(gateway), "chert_gateway_requests_total")
    await replay(gateway, simulator)
    changes = moved(before, samples(metrics_of(gateway), "chert_gateway_requests_total"))
    assert changes == {(("outcome", "replayed"), ("route", "send_file")): 1.0}


async def test_in_flight_returns_to_zero_after_aborted_uploads(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_CLIENT_TIMEOUT="0.5")
    registry = metrics_of(client).registry
    await disconnect_mid_body(client, simulator)
    await stall_mid_body(client, simulator)
    await until(lambda: registry.get_sample_value("chert_gateway_uploads_in_flight") == 0.0)
    assert client.server.app[ADMISSION].in_flight == 0  # type: ignore[union-attr]


async def test_upload_metrics_are_recorded_per_upload(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"fail_sends": 1, "fail_send_code": 3002, "retry_after_seconds": 0})
    status, _, _ = await send(gateway, png_bytes(300_000))
    assert status == 201
    value = metrics_of(gateway).registry.get_sample_value
    assert value("chert_gateway_received_bytes_total") == 300_000
    assert value("chert_gateway_upstream_bytes_total") == 300_000
    assert value("chert_gateway_upload_size_bytes_count") == 1
    assert value("chert_gateway_upload_throughput_bytes_per_second_count") == 1
    assert value("chert_gateway_first_byte_relay_seconds_count", {"mode": "streamed"}) == 1
    for phase in ("create_slot", "upload", "send"):
        assert value("chert_gateway_phase_duration_seconds_count", {"phase": phase}) == 1
    call = "chert_gateway_upstream_duration_seconds_count"
    assert value(call, {"operation": "create_attachment", "status": "200"}) == 1
    assert value(call, {"operation": "upload", "status": "200"}) == 1
    assert value(call, {"operation": "send_message", "status": "503"}) == 1
    assert value(call, {"operation": "send_message", "status": "200"}) == 1
    retries = {"operation": "send_message", "reason": "3002"}
    assert value("chert_gateway_upstream_retries_total", retries) == 1
    codes = {"operation": "send_message", "code": "3002"}
    assert value("chert_gateway_chert_errors_total", codes) == 1


def series_count(metrics: Metrics) -> int:
    return sum(len(family.samples) for family in metrics.registry.collect())


async def test_a_thousand_distinct_uploads_add_no_series(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    for n in range(1000):
        simulator.state.chats[f"chat-{n}"] = {"id": f"chat-{n}", "handles": ["+15550000000"]}
    metrics = metrics_of(gateway)
    await send(gateway, png_bytes(200), params={"filename": "warm.png"})
    baseline = series_count(metrics)
    gate = asyncio.Semaphore(16)

    async def one(n: int) -> int:
        async with gate:
            status, _, _ = await send(
                gateway,
                png_bytes(200),
                chat_id=f"chat-{n}",
                params={"filename": f"file-{n}.png", "text": f"caption {n}"},
                headers={"Idempotency-Key": f"key-{n}", "X-Request-ID": f"req-{n}"},
            )
            return status

    statuses = await asyncio.gather(*(one(n) for n in range(1000)))
    assert set(statuses) == {201}
    # Process metrics are per process, not per request: same count either way.
    assert series_count(metrics) == baseline


async def test_the_log_line_carries_the_request_and_no_secret(
    gateway: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    status, answer, response = await send(
        gateway,
        png_bytes(5000),
        params={"idempotency_key": "query-held-token", "text": "hello"},
        headers={"X-Request-ID": "trace-77"},
    )
    assert status == 201
    (record,) = [r for r in caplog.records if r.name == logs.ACCESS_LOGGER]
    line = logs.JsonFormatter().format(record)
    entry = orjson.loads(line)
    assert entry["request_id"] == "trace-77"
    assert entry["route"] == "send_file"
    assert entry["status"] == 201
    assert entry["outcome"] == "sent"
    assert entry["bytes_received"] == 5000
    assert entry["size_bytes"] == 5000
    assert entry["attachment_ids"] == [answer["attachment_id"]]
    assert entry["message_id"] == answer["message"]["id"]
    assert set(entry["timings"]) == {"create_slot_s", "upload_s", "send_s", "total_s"}
    assert "query-held-token" not in line  # query strings are never logged
    assert SECRET not in line
    assert response.headers["X-Request-ID"] == "trace-77"


async def test_an_error_log_line_names_the_codes(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    simulator.faults.update({"fail_sends": 1, "fail_send_code": 4001})
    await send(gateway, png_bytes(500))
    (record,) = [r for r in caplog.records if r.name == logs.ACCESS_LOGGER]
    entry = orjson.loads(logs.JsonFormatter().format(record))
    assert (entry["error_code"], entry["chert_code"], entry["status"]) == (
        "upstream_error",
        4001,
        502,
    )


async def test_answers_are_counted_by_status_class_and_error_code(
    make_gateway: GatewayFactory,
) -> None:
    """401, 413 and 415 are told apart, with a label set bounded by the error tree."""
    client = await make_gateway(GATEWAY_CLIENT_TOKENS="tok", GATEWAY_MAX_UPLOAD_BYTES=1000)
    token = {"Authorization": "Bearer tok"}
    await send(client, png_bytes(100))  # no token: 401
    await send(client, png_bytes(5000), headers=token)  # 413
    await send(client, png_bytes(100), content_type="text/plain", headers=token)  # 415
    status, _, _ = await send(client, png_bytes(100), headers=token)
    assert status == 201
    metrics = metrics_of(client)

    def answered(status_class: str, code: str) -> float | None:
        labels = {"route": "send_file", "status_class": status_class, "code": code}
        return metrics.registry.get_sample_value("chert_gateway_responses_total", labels)

    assert answered("4xx", "unauthorized") == 1
    assert answered("4xx", "payload_too_large") == 1
    assert answered("4xx", "unsupported_media_type") == 1
    assert answered("2xx", "ok") == 1


async def test_downloaded_bytes_are_counted_and_no_created_series_is_exported(
    gateway: TestClient[Any, Any],
) -> None:
    body = png_bytes(300_000)
    status, answer, _ = await send(gateway, body)
    assert status == 201
    response = await gateway.get(f"/v1/attachments/{answer['attachment_id']}/content")
    assert len(await response.read()) == len(body)
    metrics = metrics_of(gateway)
    assert metrics.registry.get_sample_value("chert_gateway_downloaded_bytes_total") == len(body)
    exported = generate_latest(metrics.registry).decode()
    assert "_created" not in exported
    assert "chert_gateway_requests_total" in exported
