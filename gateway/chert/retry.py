"""Retries of calls to Chert: full-jitter exponential backoff that honours
Retry-After, a bounded number of attempts, and an overall deadline.

A plain loop rather than a retry library: the one tried (tenacity) built a
reference cycle per call, success or not, which brought the garbage
collector back on small files (docs/performance.md). Here a call that
succeeds first time costs one `try`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

T = TypeVar("T")

# The longest wait a Retry-After may ask for, from Chert or of the gateway's
# own: a larger value (or `inf`, or a date years away) would park a caller
# for longer than any upload here takes.
MAX_RETRY_AFTER_SECONDS = 60.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (RFC 9110 §10.2.3) in seconds, capped; None when
    absent or malformed. It is either delay-seconds (digits only) or an
    HTTP-date; `now` is the Unix time a date is measured from."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(int(value)), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110: an HTTP-date is always GMT
        return None
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    # No retry starts when its wait would end past this many seconds since
    # the first attempt; the caller's request should not hang for minutes.
    deadline: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait after failed attempt number `attempt` (1-based): uniform
        in [0, base·2ⁿ⁻¹] capped at max_delay, but never before Retry-After."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        delay = random.uniform(0, ceiling)
        return max(delay, retry_after) if retry_after else delay


async def with_retries(
    attempt_once: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    is_transient: Callable[[Exception], bool],
    retry_after: Callable[[Exception], float | None],
    before_retry: Callable[[Exception], None],
) -> T:
    """The first successful result of `attempt_once`; the last error when
    it is not transient, the attempts are spent, or the next wait would end
    past the policy's deadline."""
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return await attempt_once()
        except Exception as exc:
            if not is_transient(exc) or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt, retry_after(exc))
            if time.monotonic() - started + delay >= policy.deadline:
                raise
            before_retry(exc)
        # Outside the except block, so no failed attempt's traceback stays
        # alive (or chains onto the next error) while we wait.
        await asyncio.sleep(delay)
        attempt += 1
