"""Idempotency keys shared by every replica, and kept across restarts, in
Redis (GATEWAY_IDEMPOTENCY_URL): the same answers as the in-process store
(idempotency.py), 409 while running, 422 for another request, the replay of
a completed one, whichever replica the repeat reaches.

One Redis string per key, its value JSON:

    running     {"fp": …, "owner": …}                   PX the lease, renewed
    completed   {"fp": …, "answer": …, "body": …, "log": …}   PX the TTL

The claim is one `SET NX PX` (in a script that returns what holds the key
when it is taken, so a refusal names 409 or 422 without a second round
trip). The lease outlives a replica that dies mid-upload only by
`LEASE_SECONDS`; while the upload runs it is renewed every third of that.
Renewing, completing and releasing each check the owner first: a replica
never overwrites a claim that is no longer its own.

Redis unavailable: the keyed request is remembered in this replica's own
store instead (uploads go on, and Chert's idempotency_key still stops a
second message), one warning says so, `idempotency_fallbacks_total` counts
each such request, and a probe beside the requests pings Redis every
`RETRY_SECONDS` until it answers: no request waits on a Redis that is known
to be away.

Keys are `chert-gateway:idem:{deployment}:{tenant}:{sha256 of the caller's
key}`; neither they nor the values hold the Chert secret or a client token.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as redis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from yarl import URL

from gateway.api.idempotency import (
    Claim,
    Completed,
    IdempotencyStore,
    digest,
    in_progress,
    reused,
)
from gateway.ops.metrics import Metrics

log = logging.getLogger("chert_gateway.idempotency")

# How long a running request holds its key without a renewal: what a
# replica that died mid-upload costs its caller's retries (409 until then).
LEASE_SECONDS = 30.0
# Every Redis call is on an upload's path: a Redis that stops answering
# costs the requests that find it so at most this, then the local store
# serves them until the probe (every RETRY_SECONDS) finds Redis again.
CALL_TIMEOUT_SECONDS = 1.0
RETRY_SECONDS = 2.0

# KEYS[1]: the key. ARGV: the running value, the lease in ms.
# Nothing when the key was free (now claimed), else what holds it.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""
# ARGV: the owner's running value, then PEXPIRE's or SET's arguments.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_COMPLETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def redacted(url: str) -> str:
    """The URL as logs may show it: without its password, given in the
    URL's userinfo or (as redis-py also reads it) in its query."""
    parsed = URL(url)
    if parsed.password:
        parsed = parsed.with_password("***")
    if "password" in parsed.query:
        parsed = parsed.update_query(password="***")
    return str(parsed)


def key_prefix(deployment: str, tenant: str | None) -> str:
    """Whose keys these are: one deployment, one tenant (quoted, so a ':' in
    a name cannot make two prefixes the same)."""
    quote = urllib.parse.quote
    return f"chert-gateway:idem:{quote(deployment, safe='')}:{quote(tenant or '-', safe='')}:"


class SharedIdempotencyStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl: float,
        local: IdempotencyStore,
        metrics: Metrics,
        lease: float = LEASE_SECONDS,
    ) -> None:
        self._redis = redis.from_url(
            url,
            socket_timeout=CALL_TIMEOUT_SECONDS,
            socket_connect_timeout=CALL_TIMEOUT_SECONDS,
            # One immediate retry when a pooled connection was closed (a
            # restart, an idle timeout): it is replaced once. Never on a
            # timeout, which would double CALL_TIMEOUT_SECONDS.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._url = redacted(url)
        self._prefix = prefix
        self._ttl_ms = int(ttl * 1000)
        self._lease_ms = int(lease * 1000)
        self._local = local
        self._metrics = metrics
        self._claim = self._redis.register_script(_CLAIM)
        self._renew = self._redis.register_script(_RENEW)
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)
        self._probe: asyncio.Task[None] | None = None
        self._up_gauge = metrics.idempotency_store_up.labels(store="redis")
        self._set_up(True)

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """The app's cleanup_ctx: checked at start, closed at the end."""
        await self.check()
        try:
            yield
        finally:
            await self.aclose()

    async def check(self) -> None:
        """Say at start-up where keys go, and whether Redis answers."""
        log.info(
            "idempotency keys shared in Redis",
            extra={"fields": {"store": self._url, "prefix": self._prefix}},
        )
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            self._unavailable(exc)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with suppress(asyncio.CancelledError):
                await self._probe
        await self._redis.aclose()

    def redis_key(self, key: str) -> str:
        return self._prefix + hashlib.sha256(key.encode()).hexdigest()

    @asynccontextmanager
    async def claim(self, key: str | None, print_: str) -> AsyncIterator[Claim]:
        held = await self._hold(key, print_) if key is not None and self._up else None
        if held is None:  # no key, or Redis away: this replica's own store
            if key is not None:
                self._metrics.idempotency_fallbacks.inc()
            async with self._local.claim(key, print_) as claim:
                yield claim
        elif isinstance(held, Claim):  # the replay of a completed request
            yield held
        else:
            claim = Claim()
            renewing = asyncio.create_task(self._keep(held))
            try:
                yield claim
            finally:
                renewing.cancel()
                with suppress(asyncio.CancelledError):
                    await renewing
                await self._settle(held, claim.done)

    async def _hold(self, key: str, print_: str) -> _Held | Claim | None:
        """Claim `key` in Redis: held, or the replay of what completed under
        it (409 or 422 raise); None when Redis cannot say."""
        request_print = _hex(print_)
        held = _Held(
            self.redis_key(key),
            orjson.dumps({"fp": request_print, "owner": uuid.uuid4().hex}),
            request_print,
        )
        try:
            existing = await self._claim(keys=[held.redis_key], args=[held.running, self._lease_ms])
        except (RedisError, OSError) as exc:
            self._unavailable(exc)
            return None
        if existing is None:
            return held
        try:
            return _replay(orjson.loads(existing), held.request_print)
        except (ValueError, KeyError, TypeError, AttributeError):
            # Not a value this gateway writes: leave it, and serve the
            # request as if Redis were away.
            log.warning(
                "idempotency entry in Redis is unreadable; not used",
                extra={"fields": {"redis_key": held.redis_key}},
            )
            return None

    async def _keep(self, held: _Held) -> None:
        """Renew the lease while the request runs."""
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                kept = await self._renew(keys=[held.redis_key], args=[held.running, self._lease_ms])
            except (RedisError, OSError) as exc:
                self._unavailable(exc)
                continue
            if not kept:
                log.warning(
                    "idempotency claim lost while its request ran",
                    extra={"fields": {"redis_key": held.redis_key}},
                )
                return

    async def _settle(self, held: _Held, done: Completed | None) -> None:
        """Remember the answer, or free the key so the caller may retry."""
        try:
            if done is None:
                await self._release(keys=[held.redis_key], args=[held.running])
            else:
                value = orjson.dumps(
                    {
                        "fp": held.request_print,
                        "answer": done.answer.decode(),
                        "body": None if done.body_digest is None else done.body_digest.hex(),
                        "log": done.log_bytes.decode(),
                    }
                )
                await self._complete(
                    keys=[held.redis_key], args=[held.running, value, self._ttl_ms]
                )
        except (RedisError, OSError) as exc:
            # Not remembered: a repeat uploads again, and Chert's idempotency
            # key answers its send with the first message.
            self._unavailable(exc)

    def _set_up(self, up: bool) -> None:
        self._up = up
        self._up_gauge.set(int(up))

    def _unavailable(self, exc: BaseException) -> None:
        if not self._up:
            return
        self._set_up(False)
        log.warning(
            "idempotency store unreachable; keys are remembered by this replica "
            "alone until it answers",
            extra={"fields": {"store": self._url, "error": f"{type(exc).__name__}: {exc}"}},
        )
        self._probe = asyncio.create_task(self._until_reachable())

    async def _until_reachable(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await self._redis.ping()
            except (RedisError, OSError):
                continue
            self._set_up(True)
            log.info("idempotency store reachable again", extra={"fields": {"store": self._url}})
            return


@dataclass(frozen=True, slots=True)
class _Held:
    """A key this replica holds in Redis: the value that says so (its owner
    token with it) and the request's print."""

    redis_key: str
    running: bytes
    request_print: str


def _hex(print_: str) -> str:
    request_digest = digest(print_)
    assert request_digest is not None
    return request_digest.hex()


def _replay(held: dict[str, Any], request_print: str) -> Claim:
    """What holds the key: another request (422), this one running (409),
    or this one completed (its replay)."""
    if held["fp"] != request_print:
        raise reused()
    if "answer" not in held:
        raise in_progress()
    body = held.get("body")
    return Claim(
        replay=Completed(
            held["answer"].encode(),
            None if body is None else bytes.fromhex(body),
            held["log"].encode(),
        )
    )
