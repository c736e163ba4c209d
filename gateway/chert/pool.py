"""The pool of keep-alive connections to Chert, and the ones Chert's side dropped.

A load balancer in front of Chert may drop a connection that sat idle, by
closing it (a FIN: aiohttp notices and does not reuse it, unless the FIN
and the next request cross) or by forgetting it (nothing is sent: the next
request on it is reset). `ChertConnector` is aiohttp's TCPConnector with
three changes for that:

- the most recently used connection is reused first (aiohttp's pool is
  first-in first-out): the PUT that follows a slot creation goes out on the
  connection that has just answered, and connections left idle sink to the
  bottom, where keep-alive closes them;
- each call made inside `attempt()` learns whether its connection was
  reused, and how long it had sat idle;
- `evict_idle` closes every pooled connection idle at least as long as one
  that turned out dead: Chert's side has most likely dropped those too, and
  the retry should not meet them.

It reaches into aiohttp's pool (`_get`, `_release`, `_conns`), which is why
aiohttp is pinned to a minor version; tests/test_dropped_connections.py
fails if that changes under it.
"""

from __future__ import annotations

import contextvars
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ConnectionKey
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace


@dataclass
class Attempt:
    """One call's connection: idle_seconds is None for a new connection."""

    idle_seconds: float | None = None

    @property
    def reused(self) -> bool:
        return self.idle_seconds is not None


_ATTEMPT: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "chert_attempt", default=None
)


@contextmanager
def attempt() -> Iterator[Attempt]:
    """The connection a call made inside this block gets is described here."""
    current = Attempt()
    token = _ATTEMPT.set(current)
    try:
        yield current
    finally:
        _ATTEMPT.reset(token)


class ChertConnector(aiohttp.TCPConnector):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._released_at: weakref.WeakKeyDictionary[ResponseHandler, float] = (
            weakref.WeakKeyDictionary()
        )

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        connection = await super()._get(key, traces)
        current = _ATTEMPT.get()
        if connection is not None and current is not None and connection.protocol is not None:
            released = self._released_at.get(connection.protocol)
            if released is not None:
                current.idle_seconds = time.monotonic() - released
        return connection

    def _release(
        self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
    ) -> None:
        super()._release(key, protocol, should_close=should_close)
        pooled = self._conns.get(key)
        if pooled and pooled[-1][0] is protocol:
            self._released_at[protocol] = pooled[-1][1]
            # aiohttp takes from the left: the newest goes there.
            pooled.rotate(1)

    def evict_idle(self, at_least: float) -> int:
        """Close the pooled connections idle for `at_least` seconds or more;
        how many there were."""
        now = time.monotonic()
        closed = 0
        for key, pooled in list(self._conns.items()):
            keep = deque(entry for entry in pooled if now - entry[1] < at_least)
            for protocol, released in pooled:
                if now - released >= at_least:
                    protocol.close()
                    closed += 1
            if keep:
                self._conns[key] = keep
            else:
                del self._conns[key]
        return closed
