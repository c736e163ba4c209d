"""A caller written by hand over a socket, for misbehaviour a client library
will not commit, and small waiting helpers."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from gateway.simulator import ChertSimulator
from tests.constants import CHAT_ID
from tests.samples import PNG_MAGIC

PATH = f"/v1/chats/{CHAT_ID}/attachments"


class RawCaller:
    """One HTTP/1.1 request written by hand."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        assert client.server.host
        assert client.server.port
        self.host, self.port = client.server.host, client.server.port

    async def open(
        self,
        declared: int,
        *,
        expect: bool = False,
        content_type: str = "image/png",
        headers: dict[str, str] | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {declared}\r\n"
        )
        if expect:
            head += "Expect: 100-continue\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        writer.write((head + "\r\n").encode())
        await writer.drain()
        return reader, writer


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def read_status(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 10)
    return int(line.split()[1])


async def read_json_answer(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The rest of an answer whose status line was read: its JSON body."""
    length = 0
    while (line := await asyncio.wait_for(reader.readline(), 10)) != b"\r\n":
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    answer: dict[str, Any] = orjson.loads(await reader.readexactly(length))
    return answer


async def disconnect_mid_body(client: TestClient[Any, Any], simulator: ChertSimulator) -> None:
    """Start a 5 MB upload, and leave once its PUT to Chert has begun."""
    _, writer = await RawCaller(client).open(5_000_000)
    writer.write(PNG_MAGIC + os.urandom(500_000))
    await writer.drain()
    await until(lambda: simulator.state.requests_to("PUT"))
    writer.close()
