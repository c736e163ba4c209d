"""A shared gateway: two gateway processes in front of one Chert, sharing
their idempotency keys through a real redis-server (GATEWAY_IDEMPOTENCY_URL),
each with its own per-caller quota. What a retry that lands on the other
replica, or after a restart, must get; and what happens when Redis stops."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import BaseTestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.simulator import ChertSimulator
from tests.conftest import gateway_env
from tests.constants import CHAT_ID, SECRET
from tests.gateway_calls import png_bytes
from tests.processes import GatewayProcess
from tests.redis_server import RedisServer

TOKENS = "billing:tok-billing-1,reports:tok-reports-1"
BILLING = {"Authorization": "Bearer tok-billing-1"}
REPORTS = {"Authorization": "Bearer tok-reports-1"}
UNREACHABLE = "idempotency store unreachable"


class Answer(NamedTuple):
    status: int
    body: dict[str, Any]
    replayed: bool


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path) as server:
        yield server


def replica(chert: BaseTestServer, redis_url: str, **env: Any) -> GatewayProcess:
    settings = {
        "GATEWAY_IDEMPOTENCY_URL": redis_url,
        "GATEWAY_CLIENT_TOKENS": TOKENS,
        "CHERT_TENANT": "acme",
        **env,
    }
    return GatewayProcess(gateway_env(str(chert.make_url("")), **settings))


@asynccontextmanager
async def two_replicas(
    chert: BaseTestServer, redis_url: str, **env: Any
) -> AsyncIterator[tuple[GatewayProcess, GatewayProcess]]:
    async with AsyncExitStack() as stack:
        a, b = await asyncio.gather(
            stack.enter_async_context(replica(chert, redis_url, **env)),
            stack.enter_async_context(replica(chert, redis_url, **env)),
        )
        yield a, b


async def post(
    http: aiohttp.ClientSession,
    gateway: GatewayProcess,
    body: bytes,
    key: str | None,
    *,
    headers: dict[str, str] = BILLING,
    text: str | None = None,
) -> Answer:
    sent = {**headers, "Content-Type": "image/png"}
    if key is not None:
        sent["Idempotency-Key"] = key
    params = {"text": text} if text else {}
    url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments"
    async with http.post(url, data=body, headers=sent, params=params) as response:
        return Answer(
            response.status,
            await response.json(),
            response.headers.get("Idempotent-Replayed") == "true",
        )


async def metric(http: aiohttp.ClientSession, gateway: GatewayProcess, name: str) -> float | None:
    async with http.get(f"{gateway.ops}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def chert_saw(simulator: ChertSimulator) -> tuple[int, int]:
    """(uploads, messages) that reached Chert."""
    return len(simulator.state.requests_to("PUT")), len(simulator.state.messages)


def logged(gateway: GatewayProcess, message: str) -> int:
    return sum(1 for entry in gateway.log_entries() if str(entry["msg"]).startswith(message))


async def test_the_same_key_sent_to_both_replicas_at_once_uploads_and_sends_once(
    chert_server: BaseTestServer, simulator: ChertSimulator, redis_server: RedisServer
) -> None:
    # Each first request holds its key for at least this long: its twin,
    # sent to the other replica at the same moment, finds it running.
    simulator.faults.update({"create_delay_seconds": 0.3})
    async with (
        two_replicas(chert_server, redis_server.url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        for n in range(4):
            body, key = png_bytes(500_000 + n), f"order-{n}"
            first, second = await asyncio.gather(post(http, a, body, key), post(http, b, body, key))
            assert sorted([first.status, second.status]) == [201, 409], (first, second)
            winner = first if first.status == 201 else second
            # The retry the 409 asked for, to either replica, is the replay.
            for gateway in (a, b):
                again = await post(http, gateway, body, key)
                assert (again.status, again.replayed, again.body) == (201, True, winner.body)
    assert chert_saw(simulator) == (4, 4)


async def test_a_completed_request_is_replayed_after_its_gateway_restarts(
    chert_server: BaseTestServer, simulator: ChertSimulator, redis_server: RedisServer
) -> None:
    body = png_bytes(200_000)
    async with aiohttp.ClientSession() as http:
        async with replica(chert_server, redis_server.url) as a:
            first = await post(http, a, body, "invoice-7", text="paid")
        assert first.status == 201
        async with replica(chert_server, redis_server.url) as restarted:
            again = await post(http, restarted, body, "invoice-7", text="paid")
    assert (again.status, again.replayed, again.body) == (201, True, first.body)
    assert chert_saw(simulator) == (1, 1)


async def test_the_same_key_for_another_request_is_422_on_the_other_replica(
    chert_server: BaseTestServer, simulator: ChertSimulator, redis_server: RedisServer
) -> None:
    body = png_bytes(100_000)
    async with (
        two_replicas(chert_server, redis_server.url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        assert (await post(http, a, body, "k-1")).status == 201
        # Another caption: a different request before any byte is read.
        other = await post(http, b, body, "k-1", text="another")
        assert (other.status, other.body["error"]["code"]) == (422, "idempotency_key_reused")
        # The same size, type and caption, other bytes: told apart by their hash.
        forged = bytearray(body)
        forged[-1] ^= 0xFF
        other = await post(http, b, bytes(forged), "k-1")
        assert (other.status, other.body["error"]["code"]) == (422, "idempotency_key_reused")
    assert chert_saw(simulator) == (1, 1)


async def test_uploads_go_on_while_redis_is_stopped_and_return_to_it(
    chert_server: BaseTestServer, simulator: ChertSimulator, redis_server: RedisServer
) -> None:
    answers: list[Answer] = []

    async def uploads(
        http: aiohttp.ClientSession, gateways: tuple[GatewayProcess, ...], count: int, tag: str
    ) -> None:
        for n in range(count):
            gateway = gateways[n % len(gateways)]
            answers.append(await post(http, gateway, png_bytes(300_000 + n), f"{tag}-{n}"))

    async with (
        two_replicas(chert_server, redis_server.url) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        before = asyncio.create_task(uploads(http, (a, b), 6, "before"))
        await asyncio.sleep(0)
        while len(answers) < 2:
            await asyncio.sleep(0.01)
        # Stopped with uploads running: some claimed in Redis, finishing without it.
        await redis_server.stop()
        await before
        await uploads(http, (a, b), 6, "during")
        # A request completed in Redis, repeated now on the other replica:
        # uploaded again, but Chert's own idempotency_key sends no second message.
        repeat = await post(http, b, png_bytes(300_000), "before-0")
        assert repeat.status == 201
        assert repeat.body["message"] == answers[0].body["message"]

        for gateway in (a, b):
            assert logged(gateway, UNREACHABLE) == 1, gateway.output
            assert await metric(http, gateway, "chert_gateway_idempotency_store_up") == 0
            fallbacks = await metric(http, gateway, "chert_gateway_idempotency_fallbacks_total")
            assert fallbacks is not None
            assert fallbacks >= 3

        await redis_server.start()
        async with asyncio.timeout(10):  # each replica's probe pings every RETRY_SECONDS
            while not all(
                logged(gateway, "idempotency store reachable again") for gateway in (a, b)
            ):
                await asyncio.sleep(0.1)
        await uploads(http, (a, b), 4, "after")
        for gateway in (a, b):
            assert logged(gateway, "idempotency store reachable again") == 1, gateway.output
            assert await metric(http, gateway, "chert_gateway_idempotency_store_up") == 1
        stored = redis_server.client()
        try:
            keys = {key async for key in stored.scan_iter("chert-gateway:idem:*")}
        finally:
            await stored.aclose()
        assert len(keys) == 4  # the "after" uploads, in Redis again (it restarted empty)
    assert [answer.status for answer in answers] == [201] * 16
    sent = {answer.body["message"]["id"] for answer in answers}
    assert len(simulator.state.messages) == len(sent) == 16


async def test_a_caller_over_its_quota_gets_429_while_another_caller_succeeds(
    chert_server: BaseTestServer, simulator: ChertSimulator, redis_server: RedisServer
) -> None:
    async with (
        two_replicas(chert_server, redis_server.url, GATEWAY_CALLER_RATE="0.1") as (a, b),
        aiohttp.ClientSession() as http,
    ):
        assert (await post(http, a, png_bytes(1000), None)).status == 201
        refused = await post(http, a, png_bytes(1001), None)
        assert (refused.status, refused.body["error"]["code"]) == (429, "rate_limited")
        for gateway in (a, b):
            answer = await post(http, gateway, png_bytes(1002), None, headers=REPORTS)
            assert answer.status == 201
        assert await metric(http, a, "chert_gateway_caller_limited_total") == 1
    access = [entry for entry in a.log_entries() if entry.get("status") == 429]
    assert [entry["caller"] for entry in access] == ["billing"]


async def test_keys_are_namespaced_hashed_and_hold_no_secret_or_token(
    chert_server: BaseTestServer, simulator: ChertSimulator, redis_server: RedisServer
) -> None:
    body = png_bytes(50_000)
    async with (
        aiohttp.ClientSession() as http,
        replica(chert_server, redis_server.url, GATEWAY_DEPLOYMENT="eu") as eu,
        replica(chert_server, redis_server.url, GATEWAY_DEPLOYMENT="us") as us,
    ):
        # Two deployments on one Redis: the same key is two requests to the
        # gateways (Chert, one tenant, still sends one message for it).
        assert (await post(http, eu, body, "shared-key")).status == 201
        other = await post(http, us, body, "shared-key")
        assert (other.status, other.replayed) == (201, False)
    stored = redis_server.client()
    try:
        keys = sorted([key async for key in stored.scan_iter("*")])
        values = [await stored.get(key) for key in keys]
    finally:
        await stored.aclose()
    hashed = hashlib.sha256(b"shared-key").hexdigest()
    assert keys == [
        f"chert-gateway:idem:eu:acme:{hashed}".encode(),
        f"chert-gateway:idem:us:acme:{hashed}".encode(),
    ]
    everything = b"".join(keys) + b"".join(value or b"" for value in values)
    for secret in (SECRET, "tok-billing-1", "tok-reports-1", "shared-key"):
        assert secret.encode() not in everything
    assert orjson.loads(values[0] or b"{}")["answer"]
    assert chert_saw(simulator) == (2, 1)  # two uploads; one message, by Chert's own key
