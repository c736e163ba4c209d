"""The same Idempotency-Key twice: one upload, one message, one answer."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import tracemalloc
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.api.idempotency import IdempotencyStore
from gateway.errors import IdempotencyInProgressError, IdempotencyKeyReusedError
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.constants import CHAT_ID
from tests.gateway_calls import png_bytes, send
from tests.raw_http import RawCaller, until
from tests.samples import sample


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
    await until(lambda: simulator.state.requests_to("PUT"))
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


async def test_store_is_bounded_and_expires() -> None:
    store = IdempotencyStore(ttl=3600, max_entries=2)
    for key in ("a", "b", "c"):
        async with store.claim(key, "fp") as claim:
            claim.complete({"key": key})
    assert len(store) == 2
    async with store.claim("a", "fp") as claim:  # evicted: runs again
        assert claim.replay is None

    expiring = IdempotencyStore(ttl=0.0)
    async with expiring.claim("x", "fp") as claim:
        claim.complete({})
    async with expiring.claim("x", "other") as claim:
        assert claim.replay is None


async def test_store_states() -> None:
    store = IdempotencyStore()
    async with store.claim("k", "fp"):
        with pytest.raises(IdempotencyInProgressError):
            async with store.claim("k", "fp"):
                pass
        with pytest.raises(IdempotencyKeyReusedError):
            async with store.claim("k", "other"):
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


# -- the repeat's body is part of what the request is --------------------------


async def test_two_pdfs_of_one_name_and_size_under_one_key_are_422(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    # The digest is taken for a key even with GATEWAY_SHA256 off.
    client = await make_gateway(GATEWAY_SHA256="false")
    headers = {"Idempotency-Key": "pdf-1", "X-Filename": "invoice.pdf"}
    first, second = sample("application/pdf", 4000), sample("application/pdf", 4000)
    status1, answer1, _ = await send(client, first, content_type="application/pdf", headers=headers)
    assert status1 == 201
    assert answer1["sha256"] == hashlib.sha256(first).hexdigest()
    status2, answer2, _ = await send(
        client, second, content_type="application/pdf", headers=headers
    )
    assert (status2, answer2["error"]["code"]) == (422, "idempotency_key_reused")
    status3, answer3, _ = await send(client, first, content_type="application/pdf", headers=headers)
    assert (status3, answer3) == (201, answer1)
    assert len(simulator.state.requests_to("PUT")) == 1


def two_files_form(text: str, first: bytes, second: bytes) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("text", text)
    data.add_field("a", io.BytesIO(first), filename="a.png", content_type="image/png")
    data.add_field("b", io.BytesIO(second), filename="b.png", content_type="image/png")
    return data


async def test_forms_under_one_key_replay_only_when_fields_and_bytes_are_the_same(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    path = f"/v1/chats/{CHAT_ID}/messages"
    headers = {"Idempotency-Key": "form-1"}
    a, b, other = png_bytes(3000), png_bytes(3000), png_bytes(3000)

    async def post(data: aiohttp.FormData) -> tuple[int, dict[str, Any], str | None]:
        response = await gateway.post(path, data=data, headers=headers)
        return response.status, await response.json(), response.headers.get("Idempotent-Replayed")

    status, first, _ = await post(two_files_form("hi", a, b))
    assert status == 201
    for different in (two_files_form("hello", a, b), two_files_form("hi", a, other)):
        status, answer, _ = await post(different)
        assert (status, answer["error"]["code"]) == (422, "idempotency_key_reused")
    status, again, replayed = await post(two_files_form("hi", a, b))
    assert (status, again, replayed) == (201, first, "true")
    assert len(simulator.state.requests_to("PUT")) == 2
    assert len(simulator.state.messages) == 1


async def test_reading_a_repeat_counts_against_max_in_flight(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_MAX_IN_FLIGHT="1")
    body = png_bytes(5000)
    status, _, _ = await send(client, body, headers={"Idempotency-Key": "held"})
    assert status == 201
    # Another upload holds the only slot...
    _, other = await RawCaller(client).open(1_000_000)
    other.write(png_bytes(1000))
    await other.drain()
    await until(lambda: len(simulator.state.requests_to("PUT")) == 2)
    # ...so the repeat, which would read 5 KB of body to compare it, waits its turn.
    status, answer, response = await send(client, body, headers={"Idempotency-Key": "held"})
    other.close()
    assert (status, answer["error"]["code"]) == (503, "overloaded")
    assert response.headers["Retry-After"]


async def test_a_remembered_answer_costs_little_more_than_its_bytes() -> None:
    """A full store lives in the sidecar's memory limit: an entry is its
    answer's JSON and about 600 bytes more (docs/deploy.md's budget)."""
    store = IdempotencyStore()
    answers = [
        {
            "attachment_id": f"{n:032x}",
            "sha256": hashlib.sha256(b"%d" % n).hexdigest(),
            "pad": "x" * 500,
        }
        for n in range(2_000)
    ]
    answer_bytes = len(orjson.dumps(answers[0]))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, answer in enumerate(answers):
            async with store.claim(f"key-{n:06d}", f"print-{n}") as claim:
                claim.complete(answer, f"65536:{answer['sha256']}", {"size_bytes": 65536})
        del answers, answer
        gc.collect()
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(store)
    finally:
        tracemalloc.stop()
    assert per_entry < answer_bytes + 700, per_entry
    async with store.claim("key-000007", "print-7") as claim:
        assert claim.replay is not None
        assert orjson.loads(claim.replay.answer)["attachment_id"] == f"{7:032x}"
        assert claim.replay.log_fields == {"size_bytes": 65536}
        claim.check_body(f"65536:{hashlib.sha256(b'7').hexdigest()}")
        with pytest.raises(IdempotencyKeyReusedError):
            claim.check_body("65536:another")
