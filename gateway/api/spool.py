"""A bounded disk spool for bodies whose length is unknown (chunked requests).

Chert needs `Content-Length` on the PUT, so such a body is first written to
a file as it arrives (aiofiles: the event loop never blocks on the disk),
then uploaded from the file with its now-known length (`body.spooled` does
the reading; this module owns the disk). The spool as a whole holds at most
`max_bytes`: a write past it is 503.

Files are removed on every path (success, error, cancel). Files left by a
process that died are swept at start-up; files of live processes sharing
the directory are left alone (the pid is in the name).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedReader

from gateway.errors import OverloadedError

log = logging.getLogger("chert_gateway.spool")

FILE_PREFIX = "chert-gateway-spool-"


class SpoolFile:
    """One spooled body's file: written, then read back, within its reservation."""

    def __init__(self, spool: Spool, handle: AsyncBufferedReader) -> None:
        self._spool = spool
        self._handle = handle
        self.reserved = 0

    def reserve(self, nbytes: int) -> None:
        """Count `nbytes` more against the spool; 503 when it is full."""
        spool = self._spool
        if spool.used + nbytes > spool.max_bytes:
            raise OverloadedError(
                "the gateway's spool for bodies without Content-Length is full; "
                "retry shortly, or send Content-Length",
                retry_after=1,
            )
        spool.used += nbytes
        self.reserved += nbytes

    async def write(self, chunk: bytes) -> None:
        await self._handle.write(chunk)

    async def flush(self) -> None:
        await self._handle.flush()

    async def seek(self, offset: int) -> None:
        await self._handle.seek(offset)

    async def read(self, nbytes: int) -> bytes:
        return await self._handle.read(nbytes)


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.used = 0

    def sweep(self) -> int:
        """Remove files left by gateway processes that are no longer running."""
        removed = 0
        for path in self.directory.glob(FILE_PREFIX + "*"):
            pid_text = path.name.removeprefix(FILE_PREFIX).split("-", 1)[0]
            if pid_text.isdigit() and not _alive(int(pid_text)):
                with suppress(OSError):
                    path.unlink()
                    removed += 1
        if removed:
            log.info("swept spool", extra={"fields": {"files": removed}})
        return removed

    @asynccontextmanager
    async def file(self) -> AsyncIterator[SpoolFile]:
        """A new file in the spool, removed (and its bytes released) on exit.

        It is opened and closed here, not by the body read from it: an HTTP
        client may abandon a body mid-way (a reset PUT), and an abandoned
        generator must hold nothing that needs closing.
        """
        path = self.directory / f"{FILE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        file: SpoolFile | None = None
        try:
            async with aiofiles.open(path, "w+b") as handle:
                file = SpoolFile(self, handle)
                yield file
        finally:
            if file is not None:
                self.used -= file.reserved
            with suppress(FileNotFoundError):
                path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
