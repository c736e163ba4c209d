"""A quota per named caller (GATEWAY_CLIENT_TOKENS=name:token,…): beyond its
own in-flight limit or rate a caller gets 429 with Retry-After while the
others go on; limits and refusals are metrics by caller; the log names it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.api.keys import METRICS
from gateway.api.quota import CallerQuotas
from gateway.errors import RateLimitedError
from gateway.ops.credentials import Credential
from gateway.ops.metrics import Metrics
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.gateway_calls import png_bytes, send
from tests.raw_http import RawCaller, read_status, until

TOKENS = "billing:tok-billing-1,reports:tok-reports-1,tok-anonymous-1"
BILLING = {"Authorization": "Bearer tok-billing-1"}
REPORTS = {"Authorization": "Bearer tok-reports-1"}


def limited(client: TestClient[Any, Any], caller: str, reason: str) -> float | None:
    registry = client.server.app[METRICS].registry  # type: ignore[union-attr]
    labels = {"caller": caller, "reason": reason}
    return registry.get_sample_value("chert_gateway_caller_limited_total", labels)


def test_tokens_name_their_callers_and_a_rotation_renames_them(tmp_path: Path) -> None:
    tokens = Credential(inline=TOKENS, many=True)
    assert tokens.caller("tok-billing-1", 0) == "billing"
    assert tokens.caller("tok-anonymous-1", 0) == ""
    assert tokens.caller("billing:tok-billing-1", 0) is None  # the name is not the token
    assert tokens.caller("nope", 0) is None
    assert tokens.names(0) == {"billing", "reports"}
    path = tmp_path / "tokens"
    path.write_text("billing:tok-a\nops:tok-b\n")
    rotated = Credential(path=path, many=True)
    assert rotated.caller("tok-b", 0) == "ops"
    path.write_text("billing:tok-c\n")
    os.utime(path, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    assert rotated.caller("tok-c", 10) == "billing"
    assert rotated.caller("tok-b", 10) is None
    assert "tok-b" in rotated.known_values(10)  # still kept out of logs


async def test_a_caller_at_its_in_flight_limit_gets_429_while_another_goes_on(
    make_gateway: GatewayFactory, simulator: ChertSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_gateway(GATEWAY_CLIENT_TOKENS=TOKENS, GATEWAY_CALLER_MAX_IN_FLIGHT=1)
    caplog.set_level("INFO", logger="chert_gateway.access")
    size = 3_000_000
    _, first = await RawCaller(client).open(size, headers=BILLING)
    first.write(png_bytes(100_000))
    await first.drain()
    registry = client.server.app[METRICS].registry  # type: ignore[union-attr]
    running = "chert_gateway_caller_uploads_in_flight"
    await until(lambda: registry.get_sample_value(running, {"caller": "billing"}) == 1)

    reader, second = await RawCaller(client).open(size, expect=True, headers=BILLING)
    assert await read_status(reader) == 429
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().lower()
    assert "retry-after: 1" in head
    second.close()
    assert limited(client, "billing", "in_flight") == 1

    # Another caller, and an unnamed token, go on meanwhile.
    status, _, _ = await send(client, png_bytes(1000), headers=REPORTS)
    assert status == 201
    status, _, _ = await send(
        client, png_bytes(1000), headers={"Authorization": "Bearer tok-anonymous-1"}
    )
    assert status == 201

    first.write(os.urandom(size - 100_000))
    await first.drain()
    await until(lambda: len(simulator.state.messages) == 3)
    first.close()
    await until(lambda: registry.get_sample_value(running, {"caller": "billing"}) == 0)
    status, _, _ = await send(client, png_bytes(1000), headers=BILLING)
    assert status == 201

    callers = {getattr(r, "fields", {}).get("caller") for r in caplog.records}
    assert {"billing", "reports"} <= callers
    assert registry.get_sample_value("chert_gateway_caller_max_in_flight") == 1


async def test_a_caller_over_its_rate_gets_429_with_when_to_come_back(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway(GATEWAY_CLIENT_TOKENS=TOKENS, GATEWAY_CALLER_RATE="0.2")
    status, _, _ = await send(client, png_bytes(1000), headers=BILLING)
    assert status == 201
    status, answer, response = await send(client, png_bytes(1000), headers=BILLING)
    assert status == 429, answer
    assert answer["error"]["code"] == "rate_limited"
    assert answer["error"]["retryable"] is True
    assert int(response.headers["Retry-After"]) == 5  # one upload per 5 s
    assert limited(client, "billing", "rate") == 1
    status, _, _ = await send(client, png_bytes(1000), headers=REPORTS)
    assert status == 201


async def test_the_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    quotas = CallerQuotas(None, 2.0, Metrics(), clock=lambda: now[0])
    for _ in range(2):  # a second's worth at start
        async with quotas.slot("billing"):
            pass
    with pytest.raises(RateLimitedError):
        async with quotas.slot("billing"):
            pass
    now[0] = 0.5  # one more upload's worth
    async with quotas.slot("billing"):
        pass
    async with quotas.slot(""):  # unnamed: no quota of its own
        pass
