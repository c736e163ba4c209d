"""Process tuning applied when the gateway starts serving: the event loop
(`event_loop_factory`), malloc (`tune_malloc`, `trim_malloc_every`) and the
garbage collector (`tune_gc`); and the socket read size of an upload's
connection (`read_size`).

glibc's malloc: by default its mmap threshold adapts upwards as buffers
are freed, so the relay's per-chunk buffers churn through brk/trim and page
faults. A fixed mmap threshold (4 MiB) with a 64 MiB trim threshold removes
them; what that gains is in docs/performance.md. This is what
MALLOC_MMAP_THRESHOLD_=4194304 and MALLOC_TRIM_THRESHOLD_=67108864 do,
applied with mallopt() so that every way of starting the gateway gets it.

The price of the high trim threshold is memory that is free but kept: under
a long mixed load RSS crept up by megabytes a minute. So the gateway gives
free pages back itself, on a timer rather than on every free():
malloc_trim(0) every TRIM_EVERY_SECONDS returns what is free in every arena,
and MALLOC_ARENA_MAX=2 keeps the threads (hashing, file I/O) from each
growing an arena of their own (docs/performance.md, "Memory over weeks").
An operator's own MALLOC_* variables win over all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
ARENA_MAX = 2
TRIM_EVERY_SECONDS = 10.0
GC_GEN0_THRESHOLD = 50_000

log = logging.getLogger("chert_gateway")


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when chosen; None for asyncio's own, the default.

    asyncio's is the default because, with read_size() below, it measured
    faster than uvloop for every workload (docs/performance.md).
    """
    if choice != "uvloop":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _glibc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it and the operator set no MALLOC_*."""
    if any(name.startswith("MALLOC_") for name in os.environ):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (musl has neither)
        return None
    return libc


def tune_malloc() -> bool:
    """Apply the malloc thresholds and the arena cap; False where glibc is
    absent or overridden. Call before any thread starts."""
    libc = _glibc()
    if libc is None:
        return False
    settings = (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (M_ARENA_MAX, ARENA_MAX),
    )
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


@contextlib.asynccontextmanager
async def trim_malloc_every(seconds: float = TRIM_EVERY_SECONDS) -> AsyncIterator[None]:
    """While inside, give free heap pages back to the system every `seconds`."""
    libc = _glibc()
    if libc is None:
        yield
        return

    async def trim() -> None:
        while True:
            await asyncio.sleep(seconds)
            started = time.perf_counter()
            libc.malloc_trim(0)
            log.debug("malloc_trim took %.1f ms", 1000 * (time.perf_counter() - started))

    task = asyncio.get_running_loop().create_task(trim(), name="malloc-trim")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def tune_gc() -> None:
    """Fewer garbage collections; called once everything is imported.

    The gateway's upload paths make no reference cycles, so a collection
    finds almost nothing; what it costs is scanning the young objects of
    every upload in flight, many times a second at CPython's default
    threshold. Freezing what lives as long as the process (modules,
    classes, functions) and a threshold of GC_GEN0_THRESHOLD take the
    collector off the profile (docs/performance.md). The cycles an error
    leaves are small: the middleware clears the frames that held body
    pieces (api.app._release_frames).
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@contextlib.contextmanager
def read_size(transport: asyncio.BaseTransport | None, nbytes: int) -> Iterator[None]:
    """Read up to `nbytes` per recv() on this connection while inside.

    asyncio's socket transports read at most `max_size` bytes (256 KiB) at a
    time; larger pieces mean fewer reads, writes and loop turns per byte
    (docs/performance.md). uvloop's transports have no such attribute and
    keep their own size.
    """
    if transport is None or not hasattr(transport, "max_size"):
        yield
        return
    previous = transport.max_size
    transport.max_size = nbytes
    try:
        yield
    finally:
        transport.max_size = previous
