"""A quota per named caller: uploads it may run at once, and uploads per
second (a token bucket holding at most one second's worth, and at least
one). Beyond either, that caller gets 429 with Retry-After while the others
go on. Callers are named by their client token (`name:token`); an unnamed
token has no quota of its own, only the gateway's GATEWAY_MAX_IN_FLIGHT.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.errors import RateLimitedError
from gateway.ops.metrics import Metrics


@dataclass
class _Caller:
    tokens: float
    refilled_at: float
    in_flight: int = 0


class CallerQuotas:
    def __init__(
        self,
        max_in_flight: int | None,
        rate: float | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.rate = rate
        self._burst = max(1.0, rate or 0.0)
        self._metrics = metrics
        self._clock = clock
        self._callers: dict[str, _Caller] = {}

    @property
    def active(self) -> bool:
        return self.max_in_flight is not None or self.rate is not None

    @asynccontextmanager
    async def slot(self, caller: str | None) -> AsyncIterator[None]:
        """One upload of `caller`'s, or 429 when it is over its quota."""
        if not caller or not self.active:
            yield
            return
        now = self._clock()
        state = self._callers.get(caller)
        if state is None:
            state = self._callers[caller] = _Caller(tokens=self._burst, refilled_at=now)
        if self.max_in_flight is not None and state.in_flight >= self.max_in_flight:
            self._limited(caller, "in_flight")
            raise RateLimitedError(
                f"caller {caller!r} has {state.in_flight} uploads running, its limit "
                "(GATEWAY_CALLER_MAX_IN_FLIGHT); try again shortly",
                retry_after=1,
            )
        if self.rate is not None:
            state.tokens = min(self._burst, state.tokens + (now - state.refilled_at) * self.rate)
            state.refilled_at = now
            if state.tokens < 1:
                self._limited(caller, "rate")
                wait = (1 - state.tokens) / self.rate
                raise RateLimitedError(
                    f"caller {caller!r} is over its {self.rate:g} uploads per second "
                    "(GATEWAY_CALLER_RATE)",
                    retry_after=max(1, math.ceil(wait)),
                )
            state.tokens -= 1
        state.in_flight += 1
        gauge = self._metrics.caller_in_flight.labels(caller)  # bounded: configured names
        gauge.inc()
        try:
            yield
        finally:
            state.in_flight -= 1
            gauge.dec()

    def _limited(self, caller: str, reason: str) -> None:
        self._metrics.caller_limited.labels(caller, reason).inc()
