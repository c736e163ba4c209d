"""The retry loop as pure logic: which errors are retried, how often, how
long it waits, and when the deadline forbids another attempt. The HTTP
behaviour (one idempotency key, Retry-After from Chert) is in
test_send_file.py against the simulator."""

from __future__ import annotations

import asyncio
import gc

import pytest

from gateway.chert import retry
from gateway.chert.retry import RetryPolicy, with_retries


class Transient(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("transient")
        self.retry_after = retry_after


class Permanent(Exception):
    pass


class Calls:
    """Fails with the given errors in turn, then answers "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.count = 0
        self.retried: list[Exception] = []

    async def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def run(self, policy: RetryPolicy) -> str:
        return await with_retries(
            self,
            policy,
            is_transient=lambda exc: isinstance(exc, Transient),
            retry_after=lambda exc: getattr(exc, "retry_after", None),
            before_retry=self.retried.append,
        )


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sleeps the loop asks for, recorded instead of slept."""
    asked: list[float] = []

    async def record(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", record)
    return asked


async def test_success_first_time_is_one_call(waits: list[float]) -> None:
    calls = Calls()
    assert await calls.run(RetryPolicy()) == "ok"
    assert calls.count == 1
    assert waits == []


async def test_transient_errors_are_retried_until_success(waits: list[float]) -> None:
    calls = Calls(Transient(), Transient())
    assert await calls.run(RetryPolicy(attempts=4)) == "ok"
    assert calls.count == 3
    assert len(calls.retried) == 2
    assert len(waits) == 2


async def test_the_last_error_is_raised_when_attempts_are_spent(waits: list[float]) -> None:
    last = Transient()
    calls = Calls(Transient(), Transient(), last)
    with pytest.raises(Transient) as raised:
        await calls.run(RetryPolicy(attempts=3))
    assert raised.value is last
    assert calls.count == 3
    assert len(calls.retried) == 2  # no retry is announced after the last attempt


async def test_a_permanent_error_is_never_retried(waits: list[float]) -> None:
    calls = Calls(Permanent())
    with pytest.raises(Permanent):
        await calls.run(RetryPolicy())
    assert calls.count == 1
    assert waits == []


async def test_backoff_is_full_jitter_within_a_growing_capped_ceiling(
    waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # uniform(0, ceiling) at its top, to read the ceiling back.
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: high)
    calls = Calls(Transient(), Transient(), Transient(), Transient())
    await calls.run(RetryPolicy(attempts=5, base_delay=0.2, max_delay=0.5))
    assert waits == [0.2, 0.4, 0.5, 0.5]


async def test_retry_after_is_a_floor_on_the_wait(waits: list[float]) -> None:
    calls = Calls(Transient(retry_after=3.0))
    await calls.run(RetryPolicy(base_delay=0.2))
    assert waits == [3.0]


async def test_no_retry_starts_whose_wait_would_pass_the_deadline(waits: list[float]) -> None:
    too_late = Transient(retry_after=10.0)
    calls = Calls(too_late)
    with pytest.raises(Transient) as raised:
        await calls.run(RetryPolicy(deadline=5.0))
    assert raised.value is too_late
    assert calls.count == 1
    assert calls.retried == []


async def test_a_call_leaves_no_reference_cycles(waits: list[float]) -> None:
    # Garbage cycles on every call made the collector a fifth of the
    # gateway's CPU on small files; a success must be freed by refcount.
    calls = Calls()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(100):
            await calls.run(RetryPolicy())
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 100, f"{grown} container objects outlived 100 calls"
