"""Callers that leave, stall, lie about their length or wait for 100-continue.

These speak raw HTTP/1.1 over a socket, because a well-behaved client
library will not misbehave on request.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.api.keys import METRICS
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.raw_http import PATH, RawCaller, read_json_answer, read_status, until
from tests.samples import PNG_MAGIC


async def test_caller_that_disconnects_mid_body_aborts_the_put_and_sends_nothing(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    size = 10_000_000
    _reader, writer = await RawCaller(gateway).open(size)
    writer.write(PNG_MAGIC + os.urandom(size // 5))  # 20 %, then gone
    await writer.drain()
    await until(lambda: simulator.state.requests_to("PUT"))
    writer.close()

    (put,) = simulator.state.requests_to("PUT")
    await until(lambda: put.status is not None)
    assert not put.body_complete
    assert put.body_bytes < size
    metrics = gateway.server.app[METRICS]  # type: ignore[union-attr]
    aborted = {"route": "send_file", "outcome": "client_aborted"}
    await until(lambda: metrics.registry.get_sample_value("chert_gateway_requests_total", aborted))
    assert simulator.state.requests_to("POST", "/messages") == []
    # And the gateway keeps serving.
    response = await gateway.post(
        PATH, data=PNG_MAGIC + b"x" * 10, headers={"Content-Type": "image/png"}
    )
    assert response.status == 201


async def test_bytes_past_the_declared_length_never_reach_chert(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    """Pieces are handed on as they arrived, with no size cap of the gateway's
    own: the HTTP parser must end the body at Content-Length."""
    declared = 3 * 1024 * 1024
    body = PNG_MAGIC + os.urandom(declared - len(PNG_MAGIC))
    reader, writer = await RawCaller(gateway).open(declared)
    writer.write(body + os.urandom(500_000))
    await writer.drain()
    assert await read_status(reader) == 201
    answer = await read_json_answer(reader)
    writer.close()
    assert answer["size_bytes"] == declared
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    (put,) = simulator.state.requests_to("PUT")
    assert (put.body_bytes, put.body_complete) == (declared, True)
    assert len(simulator.state.messages) == 1


async def test_caller_that_sends_less_than_declared_causes_no_send(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    declared = 10 * 1024 * 1024
    _reader, writer = await RawCaller(gateway).open(declared)
    writer.write(PNG_MAGIC + os.urandom(9 * 1024 * 1024))
    await writer.drain()
    writer.write_eof()  # "done" — 1 MB short
    await until(lambda: any(r.status for r in simulator.state.requests_to("PUT")))
    writer.close()
    await asyncio.sleep(0.2)
    (put,) = simulator.state.requests_to("PUT")
    assert not put.body_complete
    assert simulator.state.requests_to("POST", "/messages") == []
    assert simulator.state.messages == []


async def test_stalled_caller_gets_408_and_the_put_is_aborted(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_CLIENT_TIMEOUT="0.5")
    reader, writer = await RawCaller(client).open(1_000_000)
    writer.write(PNG_MAGIC + os.urandom(100_000))
    await writer.drain()  # … and then nothing more
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert b" 408 " in status_line
    writer.close()
    (put,) = simulator.state.requests_to("PUT")
    await until(lambda: put.status is not None)
    assert not put.body_complete
    assert simulator.state.requests_to("POST", "/messages") == []


async def test_expect_100_continue_refusal_costs_no_body_bytes(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_MAX_UPLOAD_BYTES=1000)
    reader, writer = await RawCaller(client).open(5000, expect=True)
    # No body written: the answer must come without it.
    assert await read_status(reader) == 413
    writer.close()
    assert simulator.state.requests == []


async def test_expect_100_continue_is_answered_once_checks_pass(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    body = PNG_MAGIC + os.urandom(5000)
    reader, writer = await RawCaller(gateway).open(len(body), expect=True)
    assert await read_status(reader) == 100
    await reader.readline()  # the blank line after "100 Continue"
    writer.write(body)
    await writer.drain()
    assert await read_status(reader) == 201
    writer.close()
    assert len(simulator.state.messages) == 1


async def test_unsupported_type_with_expect_is_refused_before_the_body(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    reader, writer = await RawCaller(gateway).open(5000, expect=True, content_type="text/html")
    assert await read_status(reader) == 415
    writer.close()
    assert simulator.state.requests == []


async def trickle(client: TestClient[Any, Any], *, pieces: int, size: int, pause: float) -> int:
    """A PNG upload sent as `pieces` pieces of `size` bytes, `pause` seconds
    apart; the status it gets."""
    body = [PNG_MAGIC + os.urandom(size - len(PNG_MAGIC))] + [
        os.urandom(size) for _ in range(pieces - 1)
    ]
    reader, writer = await RawCaller(client).open(pieces * size)
    for piece in body:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(pause)
    status = await read_status(reader)
    writer.close()
    return status


async def test_waiting_on_a_slow_caller_does_not_count_against_chert(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    """Pauses longer than CHERT_TIMEOUT between the caller's pieces: Chert
    is idle because the caller is, and the upload goes through."""
    client = await make_gateway(GATEWAY_CLIENT_TIMEOUT="3", CHERT_TIMEOUT="0.3")
    assert await trickle(client, pieces=3, size=50_000, pause=0.7) == 201
    assert len(simulator.state.messages) == 1


async def test_a_slow_steady_caller_is_not_cut_by_a_total_time_limit(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    """Progress is bounded, not duration: 2 s of steady trickle, 0.5 s limits."""
    client = await make_gateway(GATEWAY_CLIENT_TIMEOUT="0.5", CHERT_TIMEOUT="0.5")
    assert await trickle(client, pieces=20, size=20_000, pause=0.1) == 201
    assert len(simulator.state.messages) == 1
