"""Pooled connections that Chert's side has dropped never fail an upload.

The simulator drops keep-alive connections idle for DROP_AFTER seconds the
two ways load balancers do (simulator/idle.py): closing them, or forgetting
them so that the next request on one is reset. The gateway keeps them for
15 s, longer on purpose. A slot creation, a send and a streamed PUT that
meet such a connection still succeed; a PUT starts over only when Chert
never took a byte of it, so nothing is sent twice or cut short.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient

from gateway.api.keys import METRICS
from gateway.chert import client as chert_client
from gateway.chert.client import ChertClient, UploadSlot
from gateway.errors import UpstreamError
from gateway.simulator import ChertSimulator
from tests.chert_direct import Caller, Observer, direct_client
from tests.conftest import GatewayFactory, require_root
from tests.constants import CHAT_ID
from tests.gateway_calls import png_bytes, send

Gateway = TestClient[web.Request, web.Application]

DROP_AFTER = 0.3
# Past the simulator's limit, and past the gateway's probe threshold.
IDLE = chert_client.PROBE_AFTER_IDLE_SECONDS + 0.2
WARM_UPLOADS = 3


def counted(gateway: Gateway, name: str, **labels: str) -> float:
    app = gateway.app
    assert app is not None
    return sum(
        float(sample.value)
        for metric in app[METRICS].registry.collect()
        for sample in metric.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def dropping(simulator: ChertSimulator, how: str) -> None:
    if how == "forget":
        require_root("forgetting a connection uses TCP repair mode (CAP_NET_ADMIN)")
    simulator.faults.update({"drop_idle_after_seconds": DROP_AFTER, "drop_idle_how": how})


async def warm_pool(gateway: Gateway) -> None:
    """Uploads at once, so the pool holds several connections, then idle."""
    answers = await asyncio.gather(
        *(send(gateway, png_bytes(300_000)) for _ in range(WARM_UPLOADS))
    )
    assert [status for status, _, _ in answers] == [201] * WARM_UPLOADS
    await asyncio.sleep(IDLE)


async def json_send(gateway: Gateway) -> int:
    body = {"message": {"parts": [{"type": "text", "value": "after a quiet spell"}]}}
    response = await gateway.post(f"/v1/chats/{CHAT_ID}/messages", json=body)
    return response.status


@pytest.mark.parametrize("how", ["close", "forget"])
@pytest.mark.parametrize("call", ["slot creation", "send"])
async def test_a_call_that_meets_a_dropped_connection_succeeds(
    make_gateway: GatewayFactory, simulator: ChertSimulator, how: str, call: str
) -> None:
    dropping(simulator, how)
    gateway = await make_gateway()
    await warm_pool(gateway)
    assert simulator.idle.dropped >= WARM_UPLOADS
    puts_before = len(simulator.state.requests_to("PUT"))
    if call == "send":
        assert await json_send(gateway) == 201
    else:
        status, answer, _ = await send(gateway, png_bytes(300_000))
        assert status == 201, answer
        puts = simulator.state.requests_to("PUT")[puts_before:]
        assert [put.body_complete for put in puts] == [True]
    dropped_retries = counted(
        gateway, "chert_gateway_upstream_retries_total", reason="dropped_connection"
    )
    if how == "close":
        # The FIN arrived first: aiohttp does not reuse a closed connection.
        assert dropped_retries == 0
    else:
        # One dead connection met; the others as old are closed with it,
        # so the retry does not meet them too.
        assert dropped_retries == 1


async def test_the_put_follows_its_slot_creation_on_the_same_connection(
    gateway: Gateway, simulator: ChertSimulator
) -> None:
    """The pool hands out its most recently used connection first: with
    several idle, one upload's three calls still share one connection."""
    answers = await asyncio.gather(
        *(send(gateway, png_bytes(300_000)) for _ in range(WARM_UPLOADS))
    )
    assert [status for status, _, _ in answers] == [201] * WARM_UPLOADS
    before = len(simulator.state.requests)
    await asyncio.sleep(0.05)  # every warm connection back in the pool
    status, _, _ = await send(gateway, png_bytes(300_000))
    assert status == 201
    calls = simulator.state.requests[before:]
    assert [call.method for call in calls] == ["POST", "PUT", "POST"]
    assert len({call.peer for call in calls}) == 1


# -- a streamed PUT on a dead connection, made directly ------------------------


@pytest.fixture
async def chert(chert_server: BaseTestServer) -> AsyncIterator[tuple[ChertClient, Observer]]:
    async with direct_client(str(chert_server.make_url(""))) as made:
        yield made


async def dead_slot(chert: ChertClient, simulator: ChertSimulator, size: int) -> UploadSlot:
    """A slot whose creation left its connection idle until Chert's side forgot it."""
    require_root("forgetting a connection uses TCP repair mode (CAP_NET_ADMIN)")
    simulator.faults.update({"drop_idle_after_seconds": DROP_AFTER, "drop_idle_how": "forget"})
    slot = await chert.create_attachment("big.png", "image/png", size)
    await asyncio.sleep(IDLE)
    assert simulator.idle.dropped == 1
    return slot


async def test_a_streamed_put_on_a_forgotten_connection_starts_over_once_and_whole(
    chert: tuple[ChertClient, Observer], simulator: ChertSimulator
) -> None:
    client, observer = chert
    caller = Caller(png_bytes(3_000_000))
    slot = await dead_slot(client, simulator, len(caller.body))
    body = await caller.upload_body()
    await client.upload(slot, body, "image/png")
    assert observer.retries == [("upload", "dropped_connection")]
    # The first PUT never reached Chert; the second carried every byte once.
    puts = simulator.state.requests_to("PUT")
    assert [(put.body_bytes, put.body_complete) for put in puts] == [(len(caller.body), True)]
    stored = simulator.state.attachments[slot.attachment_id]
    assert stored.sha256 == hashlib.sha256(caller.body).hexdigest()
    assert await body.sha256() == stored.sha256


async def test_without_the_wait_a_put_on_a_forgotten_connection_is_lost_not_resent(
    chert: tuple[ChertClient, Observer],
    simulator: ChertSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sent straight on, with no acknowledgement awaited, a PUT cannot know
    whether Chert took its bytes: its failure is final (retryable by the
    caller), never a second PUT. Across a real link it would also have taken
    more of the caller's body by the time the reset came
    (test_real_link.py)."""
    monkeypatch.setattr(chert_client, "PROBE_AFTER_IDLE_SECONDS", float("inf"))
    client, observer = chert
    caller = Caller(png_bytes(3_000_000))
    slot = await dead_slot(client, simulator, len(caller.body))
    body = await caller.upload_body()
    with pytest.raises(UpstreamError) as failed:
        await client.upload(slot, body, "image/png")
    assert failed.value.retryable
    assert observer.retries == []
    assert simulator.state.requests_to("PUT") == []


async def test_a_put_reset_once_its_body_flows_is_never_sent_again(
    chert: tuple[ChertClient, Observer], simulator: ChertSimulator
) -> None:
    """On an idle connection that is alive, the PUT goes on after Chert's
    acknowledgement; a reset after that is final: one PUT, cut short, 502."""
    client, observer = chert
    caller = Caller(png_bytes(3_000_000))
    slot = await client.create_attachment("big.png", "image/png", len(caller.body))
    await asyncio.sleep(IDLE)
    simulator.faults.update({"reset_put_after_bytes": 1_000_000})
    body = await caller.upload_body()
    with pytest.raises(UpstreamError) as failed:
        await client.upload(slot, body, "image/png")
    assert failed.value.retryable
    assert observer.retries == []
    puts = simulator.state.requests_to("PUT")
    assert len(puts) == 1
    assert not puts[0].body_complete


def test_a_fault_names_only_the_ways_connections_are_dropped(simulator: ChertSimulator) -> None:
    with pytest.raises(ValueError, match="drop_idle_how"):
        simulator.faults.update({"drop_idle_how": "vanish"})
    simulator.faults.update({"drop_idle_how": "forget"})
    assert simulator.faults.drop_idle_how == "forget"
