"""Remembered answers by idempotency key, so a caller's retry never uploads
or sends twice.

A key names one request, identified by a fingerprint of what the gateway
knows before the body (route, chat, name, type, size, caption…), and, once
it has completed, by one of its body too (the files' bytes and a form's
fields: `body_print`):

    key unknown                         → the request runs; its 201 is remembered
    key running, same fingerprint       → 409 idempotency_in_progress
    key known, different fingerprint    → 422 idempotency_key_reused
    key completed, same fingerprint     → the caller reads (and hashes) the
                                          repeat's body: the same body_print
                                          gets the first answer, nothing
                                          uploaded; another is 422

Only keys that callers chose are remembered (a generated key can never come
back), only successful answers, for `TTL_SECONDS`, at most `MAX_ENTRIES` and
`MAX_ANSWER_BYTES` of answers (least recently used first out). This store is
per process: replicas behind a Service share keys through Redis instead
(`shared_idempotency.py`, which falls back to this one while Redis is away);
Chert's own idempotency on the send holds either way.

An entry is kept compact, because a full store lives in a sidecar's memory
limit for as long as the process runs: the answer and its log fields as the
JSON bytes they are sent and logged as, and the two prints as 32-byte
digests (`digest`), in slotted objects: about 1.25 KB each with a typical
answer (docs/deploy.md counts the full store in the memory budget).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from gateway.errors import IdempotencyInProgressError, IdempotencyKeyReusedError

TTL_SECONDS = 24 * 3600
MAX_ENTRIES = 10_000
# A form's answer can hold 256 KiB of text (Chert echoes the parts): bound
# the store by bytes as well as by entries.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()


def file_print(size: int, sha256: str) -> str:
    """The body_print of one file: what the first upload was, and what its
    repeat's bytes must be to be the same request."""
    return f"{size}:{sha256}"


def _exact(data: bytes) -> bytes:
    """A copy the size of its bytes: orjson's output keeps the capacity of
    the buffer it was written in (kilobytes for a short answer)."""
    return bytes(memoryview(data))


def digest(print_: str | None) -> bytes | None:
    """A print as it is kept: 32 bytes, whatever its length."""
    return None if print_ is None else hashlib.sha256(print_.encode()).digest()


@dataclass(frozen=True, slots=True)
class Completed:
    """A completed request as remembered: its answer, what its body was, and
    what the access log said of it (said again of each replay)."""

    answer: bytes
    body_digest: bytes | None
    log_bytes: bytes

    @property
    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = orjson.loads(self.log_bytes)
        return fields


@dataclass(slots=True)
class _Entry:
    fingerprint: bytes
    created: float
    done: Completed | None = None  # None while the first request runs


@dataclass
class Claim:
    """A request's hold on its key. `replay` is set when the key's request
    has completed; a repeat's body must match its `body_print` to get it."""

    replay: Completed | None = None
    # False for a request without a key: nothing of it is remembered.
    keep: bool = True
    _done: Completed | None = field(default=None, repr=False)

    def complete(
        self,
        answer: dict[str, Any],
        body_print: str | None = None,
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        if self.keep:
            self._done = Completed(
                _exact(orjson.dumps(answer)),
                digest(body_print),
                _exact(orjson.dumps(log_fields or {})),
            )

    @property
    def done(self) -> Completed | None:
        """What `complete` remembered: None until it is called."""
        return self._done

    def check_body(self, body_print: str | None) -> None:
        """422 when a repeat's body is not the first request's."""
        assert self.replay is not None
        if digest(body_print) != self.replay.body_digest:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was used for a request with another body; use a new key"
            )


class Store(Protocol):
    """What the handlers need of a store: the in-process one, or the shared one."""

    def claim(self, key: str | None, print_: str) -> AbstractAsyncContextManager[Claim]: ...


def in_progress() -> IdempotencyInProgressError:
    return IdempotencyInProgressError(
        "a request with this Idempotency-Key is still running; retry shortly", retry_after=1
    )


def reused() -> IdempotencyKeyReusedError:
    return IdempotencyKeyReusedError(
        "this Idempotency-Key was used for a different request; use a new key"
    )


class IdempotencyStore:
    def __init__(self, *, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._answer_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def claim(self, key: str | None, print_: str) -> AsyncIterator[Claim]:
        """Hold `key` while the request runs; remember its answer if it completes."""
        if key is None:
            yield Claim(keep=False)
            return
        now = time.monotonic()
        self._expire(now)
        request_digest = digest(print_)
        assert request_digest is not None
        entry = self._entries.get(key)
        if entry is not None and now - entry.created >= self._ttl:
            self._remove(key)
            entry = None
        if entry is not None:
            if entry.fingerprint != request_digest:
                raise reused()
            if entry.done is None:
                raise in_progress()
            self._entries.move_to_end(key)
            yield Claim(replay=entry.done)
            return
        entry = self._entries[key] = _Entry(request_digest, now)
        self._evict()
        claim = Claim()
        try:
            yield claim
        finally:
            if self._entries.get(key) is not entry:
                pass  # evicted while it ran
            elif claim._done is not None:
                entry.done = claim._done
                self._answer_bytes += len(entry.done.answer)
                self._evict()
            else:
                # It failed: the caller may try again with the same key.
                self._remove(key)

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        if entry.done is not None:
            self._answer_bytes -= len(entry.done.answer)

    def _expire(self, now: float) -> None:
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            if now - oldest.created < self._ttl:
                break
            self._remove(key)

    def _evict(self) -> None:
        while len(self._entries) > self._max_entries or self._answer_bytes > MAX_ANSWER_BYTES:
            self._remove(next(iter(self._entries)))
