"""The gateway across a real link: Chert in a network namespace behind a
wire of 20 ms each way at 200 Mbit/s (tests/netns.py; this kernel has no
netem, so tests/wire.py shapes it), the gateway and its caller outside
it, as in production.

Assertions here count round trips (40 ms each), not speed: a machine's
noise is a few milliseconds, a round trip is not.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.chert import client as chert_client
from gateway.errors import UpstreamError
from tests.chert_direct import Caller, direct_client
from tests.constants import CHAT_ID, SECRET
from tests.gateway_calls import png_bytes
from tests.netns import Link
from tests.processes import GatewayProcess, curl
from tests.samples import make_file

DELAY_MS = 20
RATE_MBIT = 200
ROUND_TRIP_S = 2 * DELAY_MS / 1000
CHERT_PORT = 8090  # the namespace has ports of its own
BIG = 100 * 1024 * 1024
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def link() -> Iterator[Link]:
    with Link(delay_ms=DELAY_MS, rate_mbit=RATE_MBIT) as made:
        yield made


class Chert:
    """The simulator, run inside the namespace; its control surface over the link."""

    def __init__(self, link: Link, http: aiohttp.ClientSession) -> None:
        self.url = f"http://{link.chert_address}:{CHERT_PORT}"
        self._http = http

    async def faults(self, **changes: Any) -> None:
        async with self._http.post(f"{self.url}/_simulator/faults", json=changes) as answer:
            assert answer.status == 200, await answer.text()

    async def requests(self) -> list[dict[str, Any]]:
        async with self._http.get(f"{self.url}/_simulator/requests") as answer:
            seen: list[dict[str, Any]] = await answer.json()
            return seen


@pytest.fixture
async def chert(link: Link) -> AsyncIterator[Chert]:
    argv = [sys.executable, "-m", "gateway", "simulate", "--host", link.chert_address,
            "--port", str(CHERT_PORT), "--secret", SECRET, "--discard"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *link.inside(argv), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"Chert simulator on" not in await proc.stderr.readline():
                pass
        async with aiohttp.ClientSession() as http:
            yield Chert(link, http)
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_100_mb_upload_streams_across_the_link_with_memory_flat(
    chert: Chert, tmp_path: Path
) -> None:
    source = tmp_path / "big.png"
    source_sha256 = make_file(source, BIG)
    async with GatewayProcess({"CHERT_API_URL": chert.url, "CHERT_SIGNING_SECRET": SECRET}) as gw:
        url = f"{gw.api}/v1/chats/{CHAT_ID}/attachments?filename=big.png"
        warm = tmp_path / "warm.png"
        make_file(warm, 1024 * 1024)
        status, _ = await curl("-T", str(warm), "-H", "Content-Type: image/png", url)
        assert status == 201
        before = gw.peak_rss_bytes()
        started = time.monotonic()
        status, body = await curl("-T", str(source), "-H", "Content-Type: image/png", url)
        took = time.monotonic() - started
        growth = gw.peak_rss_bytes() - before
    assert status == 201, body
    answer = orjson.loads(body)
    assert answer["size_bytes"] == BIG
    # The link, not the gateway, set the pace: at least the time 200 Mbit/s takes.
    assert took >= BIG * 8 / (RATE_MBIT * 1e6) * 0.9
    # While Chert took it at the link's pace, the caller's bytes waited in
    # the caller's socket, not in the gateway.
    assert growth < 32 * 1024 * 1024, f"peak RSS grew {growth / 2**20:.1f} MiB"
    put = [r for r in await chert.requests() if r["method"] == "PUT"][-1]
    headers = {name.lower(): value for name, value in put["headers"]}
    assert headers["content-length"] == str(BIG)
    assert "transfer-encoding" not in headers
    assert put["body_complete"]
    assert put["body_bytes"] == BIG
    assert answer["sha256"] == source_sha256


async def direct_three_calls(http: aiohttp.ClientSession, chert: Chert, body: bytes) -> float:
    """Slot, PUT and send made straight to Chert on a warm connection."""
    started = time.perf_counter()
    slot_body = {"filename": "a.png", "content_type": "image/png", "size_bytes": len(body)}
    async with http.post(f"{chert.url}/api/v1/attachments", json=slot_body, headers=AUTH) as r:
        slot = await r.json()
    headers = {**AUTH, "Content-Type": "image/png"}
    async with http.put(slot["upload_url"], data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
    message = {"message": {"parts": [{"type": "media", "attachment_id": slot["attachment_id"]}],
                           "idempotency_key": os.urandom(8).hex()}}  # fmt: skip
    async with http.post(f"{chert.url}/api/v1/chats/{CHAT_ID}/messages", json=message,
                         headers=AUTH) as r:  # fmt: skip
        assert r.status == 200, await r.text()
    return time.perf_counter() - started


async def through_gateway(http: aiohttp.ClientSession, api: str, body: bytes) -> float:
    started = time.perf_counter()
    async with http.post(
        f"{api}/v1/chats/{CHAT_ID}/attachments?filename=a.png",
        data=body,
        headers={"Content-Type": "image/png"},
    ) as answer:
        assert answer.status == 201, await answer.text()
    return time.perf_counter() - started


async def test_the_gateway_adds_no_round_trip_to_the_three_calls(chert: Chert) -> None:
    body = png_bytes(64 * 1024)
    direct: list[float] = []
    gateway: list[float] = []
    async with (
        GatewayProcess({"CHERT_API_URL": chert.url, "CHERT_SIGNING_SECRET": SECRET}) as gw,
        aiohttp.ClientSession() as http,
    ):
        await direct_three_calls(http, chert, body)  # both warm: connections open
        await through_gateway(http, gw.api, body)
        for _ in range(5):
            direct.append(await direct_three_calls(http, chert, body))
            gateway.append(await through_gateway(http, gw.api, body))
    # Three calls are three round trips at least, each way.
    assert statistics.median(direct) >= 3 * ROUND_TRIP_S
    # The gateway's are the same three: within half a round trip of them.
    extra = statistics.median(gateway) - statistics.median(direct)
    assert extra < ROUND_TRIP_S / 2, f"gateway {gateway}, direct {direct}"


async def test_a_put_on_a_forgotten_connection_across_the_link_starts_over_whole(
    chert: Chert,
) -> None:
    """A reset takes a round trip to come back; meanwhile the PUT waits on
    the bytes it holds, so it can start over with nothing lost."""
    caller = Caller(png_bytes(3_000_000), piece=16 * 1024, every=0.001)
    async with direct_client(chert.url) as (client, observer):
        await chert.faults(drop_idle_after_seconds=0.3, drop_idle_how="forget")
        slot = await client.create_attachment("big.png", "image/png", len(caller.body))
        await asyncio.sleep(chert_client.PROBE_AFTER_IDLE_SECONDS + 0.2)
        body = await caller.upload_body()
        await client.upload(slot, body, "image/png")
    await caller.close()
    assert observer.retries == [("upload", "dropped_connection")]
    puts = [r for r in await chert.requests() if r["method"] == "PUT"]
    assert [(put["body_bytes"], put["body_complete"]) for put in puts] == [(3_000_000, True)]
    assert await body.sha256() == hashlib.sha256(caller.body).hexdigest()


async def test_without_the_wait_a_forgotten_connection_costs_the_callers_bytes(
    chert: Chert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the wait prevents: sent straight on, the PUT has taken more of
    the caller's body than it holds by the time the reset comes back."""
    monkeypatch.setattr(chert_client, "PROBE_AFTER_IDLE_SECONDS", float("inf"))
    caller = Caller(png_bytes(3_000_000), piece=16 * 1024, every=0.001)
    async with direct_client(chert.url) as (client, observer):
        await chert.faults(drop_idle_after_seconds=0.3, drop_idle_how="forget")
        slot = await client.create_attachment("big.png", "image/png", len(caller.body))
        await asyncio.sleep(0.5)
        body = await caller.upload_body()
        with pytest.raises(UpstreamError):
            await client.upload(slot, body, "image/png")
    await caller.close()
    assert not body.restartable
    assert observer.retries == []
    assert [r for r in await chert.requests() if r["method"] == "PUT"] == []
