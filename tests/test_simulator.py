"""The simulator's upload rules and its control surface, over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import BaseTestServer

from gateway.simulator import ChertSimulator
from gateway.simulator.app import NOT_FOUND
from tests.conftest import require_root
from tests.constants import CHAT_ID, SECRET

AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def create_slot(
    http: aiohttp.ClientSession, server: BaseTestServer, size: int, content_type: str = "image/png"
) -> dict[str, Any]:
    body = {"filename": "a.png", "content_type": content_type, "size_bytes": size}
    async with http.post(server.make_url("/api/v1/attachments"), json=body, headers=AUTH) as r:
        assert r.status == 200
        return dict(await r.json())


async def put(
    http: aiohttp.ClientSession, url: str, data: Any, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.put(url, data=data, headers=headers) as response:
        return response.status, await response.json()


async def test_put_needs_bearer_auth(http: aiohttp.ClientSession, chert_server: BaseTestServer):
    slot = await create_slot(http, chert_server, 10)
    hmac_auth = {"Authorization": "HMAC keyid=1,signature=abc", "Content-Type": "image/png"}
    status, body = await put(http, slot["upload_url"], b"x" * 10, hmac_auth)
    assert status == 401
    assert isinstance(body["error"]["code"], int)
    status, _ = await put(http, slot["upload_url"], b"x" * 10, {"Content-Type": "image/png"})
    assert status == 401


async def test_put_refuses_chunked_with_411(
    http: aiohttp.ClientSession, chert_server: BaseTestServer
) -> None:
    slot = await create_slot(http, chert_server, 10)

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 10

    status, _ = await put(http, slot["upload_url"], body(), {**AUTH, "Content-Type": "image/png"})
    assert status == 411


async def test_put_larger_than_registered_is_refused_before_the_body(
    chert_server: BaseTestServer, http: aiohttp.ClientSession, simulator: ChertSimulator
) -> None:
    slot = await create_slot(http, chert_server, 10)
    reader, writer = await asyncio.open_connection(chert_server.host, chert_server.port)
    path = slot["upload_url"].split(str(chert_server.port), 1)[1]
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
        "Content-Type: image/png\r\nContent-Length: 5000000\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)  # no body sent at all
    writer.close()
    assert b" 413 " in status_line
    assert simulator.state.requests_to("PUT")[0].body_bytes == 0


@pytest.mark.parametrize(
    ("size", "content_type", "status", "code"),
    [(9, "image/png", 400, 1002), (10, "image/jpeg", 400, 1002)],
)
async def test_put_mismatches_are_1002(
    http: aiohttp.ClientSession,
    chert_server: BaseTestServer,
    size: int,
    content_type: str,
    status: int,
    code: int,
) -> None:
    slot = await create_slot(http, chert_server, 10)
    got, body = await put(
        http, slot["upload_url"], b"x" * size, {**AUTH, "Content-Type": content_type}
    )
    assert (got, body["error"]["code"]) == (status, code)


async def test_expired_slot_is_rejected(
    http: aiohttp.ClientSession, chert_server: BaseTestServer, simulator: ChertSimulator
) -> None:
    simulator.faults.update({"slot_ttl_seconds": 0.0})
    slot = await create_slot(http, chert_server, 10)
    await asyncio.sleep(0.01)
    status, body = await put(
        http, slot["upload_url"], b"x" * 10, {**AUTH, "Content-Type": "image/png"}
    )
    assert status == 400
    assert "expired" in body["error"]["message"]


async def test_metadata_and_streamed_content(
    http: aiohttp.ClientSession, chert_server: BaseTestServer
) -> None:
    slot = await create_slot(http, chert_server, 3)
    await put(http, slot["upload_url"], b"abc", {**AUTH, "Content-Type": "image/png"})
    url = chert_server.make_url(f"/api/v1/attachments/{slot['attachment_id']}")
    async with http.get(url, headers=AUTH) as response:
        meta = (await response.json())["attachment"]
    assert meta["size_bytes"] == 3
    assert meta["uploaded_at"]
    async with http.get(url / "content", headers=AUTH) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.headers["Content-Length"] == "3"
        assert await response.read() == b"abc"


async def test_control_surface_sets_faults_and_lists_requests(
    http: aiohttp.ClientSession, chert_server: BaseTestServer, simulator: ChertSimulator
) -> None:
    faults_url = chert_server.make_url("/_simulator/faults")
    async with http.post(faults_url, json={"fail_sends": 2, "fail_send_code": 4001}) as r:
        assert r.status == 200
    assert simulator.faults.fail_sends == 2
    async with http.post(faults_url, json={"no_such_fault": 1}) as r:
        assert r.status == 400
    await create_slot(http, chert_server, 10)
    async with http.get(chert_server.make_url("/_simulator/requests")) as r:
        (recorded,) = await r.json()
    assert recorded["method"] == "POST"
    assert recorded["status"] == 200
    async with http.post(chert_server.make_url("/_simulator/reset")) as r:
        assert r.status == 200
    assert simulator.faults.fail_sends == 0
    assert simulator.state.requests == []


async def idle_connection(server: BaseTestServer) -> tuple[asyncio.StreamReader, Any]:
    """A raw keep-alive connection that has made one request and read its answer."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /_simulator/faults HTTP/1.1\r\nHost: chert\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return reader, writer


async def test_an_idle_connection_is_closed_with_a_fin(
    chert_server: BaseTestServer, simulator: ChertSimulator
) -> None:
    simulator.faults.update({"drop_idle_after_seconds": 0.2, "drop_idle_how": "close"})
    reader, writer = await idle_connection(chert_server)
    try:
        assert await asyncio.wait_for(reader.read(1), 2) == b""  # the FIN
    finally:
        writer.close()
    assert simulator.idle.dropped == 1


async def test_an_idle_connection_is_forgotten_silently_then_reset(
    chert_server: BaseTestServer, simulator: ChertSimulator
) -> None:
    require_root("forgetting a connection uses TCP repair mode (CAP_NET_ADMIN)")
    simulator.faults.update({"drop_idle_after_seconds": 0.2, "drop_idle_how": "forget"})
    reader, writer = await idle_connection(chert_server)
    try:
        # Past the limit, nothing arrives: no FIN, no reset.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.6)
        assert simulator.idle.dropped == 1
        writer.write(b"GET /api/v1/attachments/a HTTP/1.1\r\nHost: chert\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 2)
    finally:
        writer.close()
    # The request on the forgotten connection never reached the simulator.
    assert simulator.state.requests == []


async def test_only_known_chats_take_messages(
    http: aiohttp.ClientSession, chert_server: BaseTestServer
) -> None:
    """The documented example chat exists, a chat made with POST /api/v1/chats
    exists, and any other id is Chert's 404 with a code."""
    text = {"message": {"parts": [{"type": "text", "value": "hi"}]}}

    async def send(chat_id: str) -> tuple[int, dict[str, Any]]:
        url = chert_server.make_url(f"/api/v1/chats/{chat_id}/messages")
        async with http.post(url, json=text, headers=AUTH) as response:
            return response.status, await response.json()

    status, answer = await send(CHAT_ID)
    assert status == 200, answer
    status, answer = await send("no-such-chat")
    assert status == 404
    assert answer["error"]["code"] == NOT_FOUND

    create = {"to": ["+15551230000"], **text}
    async with http.post(chert_server.make_url("/api/v1/chats"), json=create, headers=AUTH) as r:
        assert r.status == 200
        made = await r.json()
    assert made["message"]["parts"] == text["message"]["parts"]
    status, answer = await send(made["chat"]["id"])
    assert status == 200, answer
    assert answer["message"]["chat_id"] == made["chat"]["id"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, 1003),
        ({"to": "+15551230000"}, 1002),
        (
            {
                "to": ["+15551230000", "+15551230001"],
                "message": {"parts": [{"type": "rich_link", "url": "https://example.com/"}]},
            },
            1002,
        ),
    ],
)
async def test_a_chat_needs_recipients_and_a_group_starts_with_text(
    http: aiohttp.ClientSession, chert_server: BaseTestServer, body: dict[str, Any], code: int
) -> None:
    async with http.post(chert_server.make_url("/api/v1/chats"), json=body, headers=AUTH) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == code
