"""The shared idempotency store against a real redis-server: the claim's
lease and its owner, the TTL of an answer, TLS with a password, and a Redis
that is not there when the gateway starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
from aiohttp.test_utils import TestClient

from gateway.api.idempotency import IdempotencyStore, digest
from gateway.api.keys import METRICS
from gateway.api.shared_idempotency import SharedIdempotencyStore, key_prefix, redacted
from gateway.errors import IdempotencyInProgressError
from gateway.ops.metrics import Metrics
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.gateway_calls import png_bytes, send
from tests.processes import free_port
from tests.redis_server import RedisServer


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[Any]:
    """Stores as two replicas would have them, with a short lease."""
    made: list[SharedIdempotencyStore] = []

    def make(lease: float = 0.3, ttl: float = 60) -> SharedIdempotencyStore:
        store = SharedIdempotencyStore(
            redis_server.url,
            prefix=key_prefix("test", None),
            ttl=ttl,
            local=IdempotencyStore(),
            metrics=Metrics(),
            lease=lease,
        )
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def test_a_running_claim_outlives_its_lease_and_is_freed_when_it_fails(
    stores: Any, redis_server: RedisServer
) -> None:
    one, other = stores(), stores()

    async def failing_upload() -> None:
        async with one.claim("k", "print"):
            await asyncio.sleep(1.0)  # three leases: renewed all along
            with pytest.raises(IdempotencyInProgressError):
                async with other.claim("k", "print"):
                    pass
            raise RuntimeError("the upload failed")

    with pytest.raises(RuntimeError):
        await failing_upload()
    async with other.claim("k", "print") as claim:  # freed: the retry runs
        assert claim.replay is None
        claim.complete({"ok": True})
    async with one.claim("k", "print") as claim:
        assert claim.replay is not None
        assert orjson.loads(claim.replay.answer) == {"ok": True}


async def test_a_claim_left_by_a_dead_replica_expires_with_its_lease(
    stores: Any, redis_server: RedisServer
) -> None:
    store = stores()
    key = store.redis_key("orphan")
    held = orjson.dumps({"fp": (digest("print") or b"").hex(), "owner": "gone"})
    client = redis_server.client()
    try:
        await client.set(key, held, px=300)
        with pytest.raises(IdempotencyInProgressError):
            async with store.claim("orphan", "print"):
                pass
        await asyncio.sleep(0.4)
        async with store.claim("orphan", "print") as claim:
            assert claim.replay is None
    finally:
        await client.aclose()


async def test_a_claim_taken_over_is_never_overwritten_by_its_first_owner(
    stores: Any, redis_server: RedisServer
) -> None:
    store = stores()
    key = store.redis_key("taken")
    client = redis_server.client()
    try:
        async with store.claim("taken", "print") as claim:
            await client.set(key, b"someone else's")
            claim.complete({"late": True})
        assert await client.get(key) == b"someone else's"
        # Nothing this gateway wrote: left alone, the request served all the same.
        async with store.claim("taken", "print") as claim:
            assert claim.replay is None
        assert await client.get(key) == b"someone else's"
    finally:
        await client.aclose()


async def test_a_completed_answer_is_kept_for_the_ttl(
    make_gateway: GatewayFactory, simulator: ChertSimulator, redis_server: RedisServer
) -> None:
    client = await make_gateway(GATEWAY_IDEMPOTENCY_URL=redis_server.url, GATEWAY_IDEMPOTENCY_TTL=1)
    body, headers = png_bytes(1000), {"Idempotency-Key": "short-lived"}
    assert (await send(client, body, headers=headers))[0] == 201
    stored = redis_server.client()
    try:
        (key,) = [key async for key in stored.scan_iter("chert-gateway:idem:*")]
        assert 0 < await stored.pttl(key) <= 1000
        await asyncio.sleep(1.1)
        assert await stored.exists(key) == 0
    finally:
        await stored.aclose()
    _, _, again = await send(client, body, headers=headers)
    assert "Idempotent-Replayed" not in again.headers
    assert len(simulator.state.requests_to("PUT")) == 2


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    authority = trustme.CA()
    leaf = authority.issue_cert("localhost")
    cert, key, ca = tmp_path / "redis.crt", tmp_path / "redis.key", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    authority.cert_pem.write_to_path(ca)
    return cert, key, ca


async def test_rediss_with_a_private_ca_and_a_password(
    make_gateway: GatewayFactory,
    simulator: ChertSimulator,
    tls_files: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    async with RedisServer(tmp_path, password="r3dis-pa55", tls=tls_files) as server:
        client = await make_gateway(GATEWAY_IDEMPOTENCY_URL=server.url)
        body, headers = png_bytes(1000), {"Idempotency-Key": "over-tls"}
        assert (await send(client, body, headers=headers))[0] == 201
        _, _, again = await send(client, body, headers=headers)
        assert again.headers["Idempotent-Replayed"] == "true"
        stored = server.client()
        try:
            assert len([key async for key in stored.scan_iter("chert-gateway:idem:*")]) == 1
        finally:
            await stored.aclose()
    assert len(simulator.state.requests_to("PUT")) == 1


async def test_a_redis_that_is_not_there_at_start_is_said_once_and_uploads_go_on(
    make_gateway: GatewayFactory, simulator: ChertSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    client: TestClient[Any, Any] = await make_gateway(
        GATEWAY_IDEMPOTENCY_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    )
    bodies = [png_bytes(1000) for _ in range(3)]
    for n, body in enumerate(bodies):
        status, _, _ = await send(client, body, headers={"Idempotency-Key": f"k{n}"})
        assert status == 201
    # Remembered by this replica meanwhile: a repeat is still a replay.
    _, _, again = await send(client, bodies[0], headers={"Idempotency-Key": "k0"})
    assert again.headers["Idempotent-Replayed"] == "true"
    warnings = [
        r for r in caplog.records if r.getMessage().startswith("idempotency store unreachable")
    ]
    assert len(warnings) == 1
    assert "hunter2" not in caplog.text
    registry = client.server.app[METRICS].registry  # type: ignore[union-attr]
    assert registry.get_sample_value("chert_gateway_idempotency_fallbacks_total") == 4
    assert registry.get_sample_value("chert_gateway_idempotency_store_up", {"store": "redis"}) == 0


async def test_a_redis_that_hangs_is_waited_on_once_not_by_every_request(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    """A Redis that accepts and never answers: the request that finds it so
    waits for its timeout, the next ones go to the local store at once, and
    only the probe keeps trying it (no new connection per request)."""
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()  # until the gateway gives up on it
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client: TestClient[Any, Any] = await make_gateway(
            GATEWAY_IDEMPOTENCY_URL=f"redis://127.0.0.1:{port}/0"
        )
        first = connections  # the start-up ping's
        for n in range(10):
            status, _, _ = await send(client, png_bytes(1000), headers={"Idempotency-Key": f"h{n}"})
            assert status == 201
        registry = client.server.app[METRICS].registry  # type: ignore[union-attr]
        assert registry.get_sample_value("chert_gateway_idempotency_fallbacks_total") == 10
        assert connections - first <= 1  # the probe's, if its 2 s came round
    finally:
        server.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pa55@redis:6379/0", "redis://:***@redis:6379/0"),
        (
            "rediss://app:pa55@redis/0?ssl_ca_certs=/ca.pem",
            "rediss://app:***@redis/0?ssl_ca_certs=/ca.pem",
        ),
        ("unix:///run/redis.sock?db=1&password=pa55", "unix:/run/redis.sock?db=1&password=***"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
    ],
)
def test_logs_show_the_redis_url_without_its_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
