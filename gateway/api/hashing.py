"""SHA-256 of the bodies as they pass: on a thread beside the event loop
when the process may use a second CPU, inline on the loop otherwise.

    Hashing     the process's choice (`Hashing.start(threads)`), made once;
                `digest()` gives one body's BodyDigest
    BodyDigest  update(chunk) as the bytes pass, `await hexdigest()` at the end

SHA-256 costs more CPU than the rest of a large upload's relay, and
hashlib's update() releases the GIL for buffers of 2 KiB and more, so a
thread can hash while the loop moves the next bytes. What must not happen
is a loop wake-up per chunk (an executor call per chunk measured worse than
inline): chunks go to the hashing thread through a SimpleQueue, and the loop
is woken only when it waits for a digest the thread has not finished, or
for the thread to catch up when one upload's backlog passes
`BACKLOG_BYTES` or a thread's passes `THREAD_BACKLOG_BYTES` (which bound
what the queues hold, whatever the number of uploads). A chunk in the queue
is the caller's own bytes object: it is released when both the PUT and the
hash are done with it. Bodies under THREAD_MIN_BYTES hash inline: for a
small body the hand-over costs more than the hash (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Protocol

log = logging.getLogger("chert_gateway")

# Bodies below this are hashed inline even when a thread is available.
THREAD_MIN_BYTES = 1024 * 1024
# What one upload may have queued for its hashing thread before the loop
# waits for it to catch up.
BACKLOG_BYTES = 2 * 1024 * 1024
# What one hashing thread may have queued, from every upload it serves.
THREAD_BACKLOG_BYTES = 8 * 1024 * 1024
MAX_THREADS = 4


class BodyDigest(Protocol):
    def update(self, chunk: bytes) -> None: ...

    def behind(self) -> bool:
        """True when the caller should `await caught_up()` before more."""
        ...

    async def caught_up(self) -> None: ...

    async def hexdigest(self) -> str | None: ...

    def abandon(self) -> None:
        """The body will not be finished: drop what is still queued."""
        ...


class Hashing:
    """How this process hashes: on `threads` threads, or inline (0)."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._workers: list[_Worker] = []
        self._next = 0

    @classmethod
    def start(cls, threads: int | None) -> Hashing:
        """From GATEWAY_SHA256_THREADS: a number of threads (0: inline), or
        None for one less than the usable CPUs, at most MAX_THREADS."""
        cpus = usable_cpus()
        if threads is None:
            threads = min(MAX_THREADS, max(0, int(cpus) - 1))
        hashing = cls(threads)
        if threads:
            log.info(
                "SHA-256 on %d thread(s) beside the event loop (%g CPUs usable)", threads, cpus
            )
        else:
            log.info("SHA-256 inline on the event loop (%g CPU(s) usable)", cpus)
        return hashing

    def digest(self, enabled: bool = True, size: int | None = None) -> BodyDigest:
        """One body's digest; `size` (when known) decides whether a thread is worth it."""
        if not enabled:
            return _NoDigest()
        if not self.threads or (size is not None and size < THREAD_MIN_BYTES):
            return _InlineDigest()
        if len(self._workers) < self.threads:
            self._workers.append(_Worker())
        worker = self._workers[self._next % len(self._workers)]
        self._next += 1
        return _ThreadedDigest(worker, asyncio.get_running_loop())

    def stop(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers.clear()


INLINE = Hashing(0)


def usable_cpus(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float:
    """The CPUs this process may use: its affinity, capped by its cgroup's quota."""
    cpus: float = len(os.sched_getaffinity(0))
    quota = _cgroup_quota(cgroup_root, proc_cgroup)
    return min(cpus, quota) if quota is not None else cpus


def _cgroup_quota(root: Path, proc_cgroup: Path) -> float | None:
    """cpu.max (cgroup v2) or cpu.cfs_quota_us / cfs_period_us (v1), as CPUs."""
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                found = _quota_v2(root / path.lstrip("/"), root)
            elif "cpu" in controllers.split(","):
                found = _quota_v1(root / controllers / path.lstrip("/"))
            else:
                continue
            if found is not None:
                return found
    except (OSError, ValueError):
        return None
    return None


def _quota_v2(directory: Path, root: Path) -> float | None:
    """The tightest cpu.max from the process's cgroup up to the root."""
    tightest: float | None = None
    while True:
        try:
            quota, period = (directory / "cpu.max").read_text().split()
        except (OSError, ValueError):
            quota = "max"
            period = "1"
        if quota != "max":
            cpus = int(quota) / int(period)
            tightest = cpus if tightest is None else min(tightest, cpus)
        if directory == root or root not in directory.parents:
            return tightest
        directory = directory.parent


def _quota_v1(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


class _NoDigest:
    """GATEWAY_SHA256=false: nothing hashed."""

    def update(self, chunk: bytes) -> None:
        pass

    def behind(self) -> bool:
        return False

    async def caught_up(self) -> None:
        pass

    async def hexdigest(self) -> str | None:
        return None

    def abandon(self) -> None:
        pass


class _InlineDigest(_NoDigest):
    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    async def hexdigest(self) -> str | None:
        return self._hash.hexdigest()


class _Worker:
    """A hashing thread: (digest, chunk) pairs in order, from every upload it serves."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[_ThreadedDigest, bytes] | None] = queue.SimpleQueue()
        self.queued = 0  # bytes queued by every upload it serves, not yet hashed
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            digest, chunk = item
            digest.hash_now(chunk)
            del item, digest, chunk  # the caller's bytes go as soon as they are hashed

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join()


class _ThreadedDigest:
    """A body hashed on a worker thread; the loop waits only at the end, or
    when the body's backlog passes BACKLOG_BYTES."""

    def __init__(self, worker: _Worker, loop: asyncio.AbstractEventLoop) -> None:
        self._hash = hashlib.sha256()
        self._worker = worker
        self._loop = loop
        self._lock = threading.Lock()
        self._queued = 0  # bytes handed over and not yet hashed
        self._abandoned = False
        # Set when the loop waits: for no backlog (hexdigest) or less (caught_up).
        self._waiter: asyncio.Future[None] | None = None
        self._wake_at = 0

    def update(self, chunk: bytes) -> None:
        with self._lock:
            self._queued += len(chunk)
        with self._worker.lock:
            self._worker.queued += len(chunk)
        self._worker.queue.put((self, chunk))

    def behind(self) -> bool:
        return self._queued > BACKLOG_BYTES or (
            self._queued > 0 and self._worker.queued > THREAD_BACKLOG_BYTES
        )

    async def caught_up(self) -> None:
        """Until this body's backlog is down to half its bound, or gone when
        the thread as a whole is the one behind."""
        thread_behind = self._worker.queued > THREAD_BACKLOG_BYTES
        await self._until(0 if thread_behind else BACKLOG_BYTES // 2)

    async def hexdigest(self) -> str | None:
        await self._until(0)
        return self._hash.hexdigest()

    def abandon(self) -> None:
        self._abandoned = True

    async def _until(self, queued: int) -> None:
        with self._lock:
            if self._queued <= queued:
                return
            waiter = self._waiter = self._loop.create_future()
            self._wake_at = queued
        await waiter

    def hash_now(self, chunk: bytes) -> None:
        """On the worker thread."""
        if not self._abandoned:
            self._hash.update(chunk)
        with self._worker.lock:
            self._worker.queued -= len(chunk)
        with self._lock:
            self._queued -= len(chunk)
            waiter = self._waiter
            if waiter is None or self._queued > self._wake_at:
                return
            self._waiter = None
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self._loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
