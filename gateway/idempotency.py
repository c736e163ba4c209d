"""Remembered answers by idempotency key, so a caller's retry never uploads
or sends twice.

A key names one request, identified by a fingerprint of what the gateway
knows before the body (route, chat, name, type, size, caption…):

    key unknown                         → the request runs; its 201 is remembered
    key running, same fingerprint       → 409 idempotency_in_progress
    key known, different fingerprint    → 422 idempotency_key_reused
    key completed, same fingerprint     → the first answer, nothing uploaded

Only keys that callers chose are remembered (a generated key can never come
back), only successful answers, for `TTL_SECONDS`, at most `MAX_ENTRIES`
(least recently used first out). The store is per process: replicas behind
a Service do not share it; Chert's own idempotency on the send still holds.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import IdempotencyInProgressError, IdempotencyKeyReusedError

TTL_SECONDS = 24 * 3600
MAX_ENTRIES = 10_000


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


@dataclass
class _Entry:
    fingerprint: str
    created: float
    answer: dict[str, Any] | None = None  # None while the first request runs


@dataclass
class Claim:
    """A request's hold on its key. `replay` is set when the answer is known."""

    replay: dict[str, Any] | None = None
    _answer: dict[str, Any] | None = field(default=None, repr=False)

    def complete(self, answer: dict[str, Any]) -> None:
        self._answer = answer


class IdempotencyStore:
    def __init__(self, *, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def claim(self, key: str | None, print_: str) -> Iterator[Claim]:
        """Hold `key` while the request runs; remember its answer if it completes."""
        if key is None:
            yield Claim()
            return
        now = time.monotonic()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None and now - entry.created >= self._ttl:
            del self._entries[key]
            entry = None
        if entry is not None:
            if entry.fingerprint != print_:
                raise IdempotencyKeyReusedError(
                    "this Idempotency-Key was used for a different request; use a new key"
                )
            if entry.answer is None:
                raise IdempotencyInProgressError(
                    "a request with this Idempotency-Key is still running; retry shortly",
                    retry_after=1,
                )
            self._entries.move_to_end(key)
            yield Claim(replay=entry.answer)
            return
        entry = self._entries[key] = _Entry(print_, now)
        self._evict()
        claim = Claim()
        try:
            yield claim
        finally:
            if claim._answer is not None:
                entry.answer = claim._answer
            elif self._entries.get(key) is entry:
                # It failed: the caller may try again with the same key.
                del self._entries[key]

    def _expire(self, now: float) -> None:
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            if now - oldest.created < self._ttl:
                break
            del self._entries[key]

    def _evict(self) -> None:
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
