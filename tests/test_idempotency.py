"""The same Idempotency-Key twice: one upload, one message, one answer."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import IdempotencyInProgressError, IdempotencyKeyReusedError
from gateway.idempotency import IdempotencyStore
from gateway.simulator import ChertSimulator
from tests.conftest import CHAT_ID
from tests.gateway_calls import png_bytes, send
from tests.raw_http import RawCaller, wait_for


async def test_a_repeat_returns_the_first_answer_without_uploading_again(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    body = png_bytes(50_000)
    headers = {"Idempotency-Key": "invoice-42"}
    status1, first, _ = await send(gateway, body, headers=headers, params={"text": "hi"})
    status2, second, response = await send(gateway, body, headers=headers, params={"text": "hi"})
    assert (status1, status2) == (201, 201)
    assert second == first
    assert response.headers["Idempotent-Replayed"] == "true"
    assert len(simulator.state.requests_to("PUT")) == 1
    assert len(simulator.state.messages) == 1


async def test_the_same_key_for_a_different_request_is_422(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    headers = {"Idempotency-Key": "k-1"}
    await send(gateway, png_bytes(500), headers=headers)
    status, answer, _ = await send(gateway, png_bytes(501), headers=headers)
    assert (status, answer["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(simulator.state.requests_to("PUT")) == 1


async def test_a_repeat_while_the_first_runs_is_409(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    size = 1_000_000
    _, first = await RawCaller(gateway).open(size, headers={"Idempotency-Key": "slow-1"})
    first.write(png_bytes(1000))
    await first.drain()
    await wait_for(lambda: simulator.state.requests_to("PUT"))
    status, answer, response = await send(
        gateway, png_bytes(size), headers={"Idempotency-Key": "slow-1"}
    )
    assert (status, answer["error"]["code"]) == (409, "idempotency_in_progress")
    assert response.headers["Retry-After"]
    first.close()


async def test_a_failed_request_frees_its_key(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"fail_sends": 1, "fail_send_code": 4001})
    headers = {"Idempotency-Key": "retry-me"}
    status, _, _ = await send(gateway, png_bytes(500), headers=headers)
    assert status == 502
    status, _, _ = await send(gateway, png_bytes(500), headers=headers)
    assert status == 201


async def test_keys_are_passed_to_chert_on_the_send(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    response = await gateway.post(
        f"/v1/chats/{CHAT_ID}/attachments",
        params={"idempotency_key": "from-query"},
        data=io.BytesIO(png_bytes(500)),
        headers={"Content-Type": "image/png"},
    )
    assert response.status == 201
    assert list(simulator.state.messages_by_key) == ["from-query"]


def test_store_is_bounded_and_expires() -> None:
    store = IdempotencyStore(ttl=3600, max_entries=2)
    for key in ("a", "b", "c"):
        with store.claim(key, "fp") as claim:
            claim.complete({"key": key})
    assert len(store) == 2
    with store.claim("a", "fp") as claim:  # evicted: runs again
        assert claim.replay is None

    expiring = IdempotencyStore(ttl=0.0)
    with expiring.claim("x", "fp") as claim:
        claim.complete({})
    with expiring.claim("x", "other") as claim:
        assert claim.replay is None


def test_store_states() -> None:
    store = IdempotencyStore()
    with store.claim("k", "fp"):
        with pytest.raises(IdempotencyInProgressError), store.claim("k", "fp"):
            pass
        with pytest.raises(IdempotencyKeyReusedError), store.claim("k", "other"):
            pass


async def test_concurrent_repeats_upload_once(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    body = png_bytes(200_000)
    results = await asyncio.gather(
        *(send(gateway, body, headers={"Idempotency-Key": "burst"}) for _ in range(5))
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    assert len(simulator.state.requests_to("PUT")) == 1
    assert len(simulator.state.messages) == 1
