"""The gateway's Chert client used directly, as the app builds it, with a
caller's body fed to it as aiohttp's server would hand it over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp.base_protocol import BaseProtocol
from yarl import URL

from gateway.api.body import CallerBody
from gateway.chert.client import ChertClient
from gateway.chert.pool import ChertConnector
from gateway.ops.credentials import Credential
from tests.constants import SECRET


class Observer:
    """Records the retries the client makes."""

    def __init__(self) -> None:
        self.retries: list[tuple[str, str]] = []

    def upstream_call(self, operation: str, status: str, seconds: float) -> None:
        pass

    def upstream_retry(self, operation: str, reason: str) -> None:
        self.retries.append((operation, reason))

    def chert_error(self, operation: str, code: int) -> None:
        pass


@asynccontextmanager
async def direct_client(url: str) -> AsyncIterator[tuple[ChertClient, Observer]]:
    observer = Observer()
    connector = ChertConnector(limit=30, keepalive_timeout=15)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield (
            ChertClient(
                session, URL(url), Credential(inline=SECRET), timeout=10, observer=observer
            ),
            observer,
        )


class Caller:
    """A caller's body as a StreamReader, fed in pieces: all at once, or
    one piece per `every` seconds as a caller on a slower link would."""

    def __init__(self, body: bytes, *, piece: int = 256 * 1024, every: float | None = None) -> None:
        self.body = body
        self._pieces = [body[start : start + piece] for start in range(0, len(body), piece)]
        loop = asyncio.get_running_loop()
        # Its limit past the whole body: it never pauses reading.
        self.content = aiohttp.StreamReader(BaseProtocol(loop), len(body), loop=loop)
        self._every = every
        self._feeder: asyncio.Task[None] | None = None
        if every is None:
            self._feed_all()

    def _feed_all(self) -> None:
        for piece in self._pieces:
            self.content.feed_data(piece)
        self.content.feed_eof()

    async def _feed(self, every: float) -> None:
        for piece in self._pieces:
            await asyncio.sleep(every)
            self.content.feed_data(piece)
        self.content.feed_eof()

    async def upload_body(self) -> CallerBody:
        """The body as the gateway's handler makes it: its head read ahead.
        A caller fed piece by piece starts sending now."""
        if self._every is not None:
            self.content.feed_data(self._pieces.pop(0))
            self._feeder = asyncio.create_task(self._feed(self._every))
        body = CallerBody(self.content, len(self.body), client_timeout=5)
        await body.head(64)
        return body

    async def close(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
