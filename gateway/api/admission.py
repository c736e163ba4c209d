"""Admission: how many uploads may run at once, and whether new ones may start.

At `max_in_flight` or while draining, a new upload is refused with 503 before
its body is read. `wait_idle` lets SIGTERM wait for the running ones, and
`cut` ends those still running when the drain time is over: each is told so
(503 overloaded, send it again), not that Chert could not be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.errors import OverloadedError

# What a refused caller is told to wait: uploads here take seconds, not minutes.
RETRY_AFTER_SECONDS = 1


class Admission:
    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._running: set[asyncio.Task[object]] = set()
        self._cut = False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.draining:
            raise OverloadedError(
                "the gateway is shutting down; send to another replica",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if self.in_flight >= self.max_in_flight:
            raise OverloadedError(
                f"{self.in_flight} uploads in flight, the limit; try again shortly",
                retry_after=RETRY_AFTER_SECONDS,
            )
        self.in_flight += 1
        self._idle.clear()
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if not self._cut:
                raise
            # Our own cancellation (cut): the request answers instead of vanishing.
            task.uncancel()
            raise OverloadedError(
                "the gateway shut down before this upload finished; nothing was sent, "
                "send it again",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        finally:
            self._running.discard(task)
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    def start_draining(self) -> None:
        self.draining = True

    def cut(self) -> None:
        """End every upload still running (the drain time is over)."""
        self._cut = True
        for task in self._running:
            task.cancel()

    async def wait_idle(self, seconds: float) -> bool:
        """True when every in-flight upload finished within `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
