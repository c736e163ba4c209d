"""A bounded disk spool for bodies whose length is unknown (chunked requests).

Chert needs `Content-Length` on the PUT, so such a body is first written to
a file as it arrives (aiofiles: the event loop never blocks on the disk),
refused with 413 the moment it passes the upload limit and with 503 when
the spool as a whole is full, then uploaded from the file with its now-known
length. A spooled body can be replayed, so its PUT may be retried.

Files are removed on every path (success, error, cancel). Files left by a
process that died are swept at start-up; files of live processes sharing
the directory are left alone (the pid is in the name).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiofiles
from aiofiles.threadpool.binary import AsyncBufferedReader

from gateway import media
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
)
from gateway.intake import BodyDigest, CallerReader, FileMeta, ReadFn, check_content
from gateway.progress import ProgressDeadline

log = logging.getLogger("chert_gateway.spool")

FILE_PREFIX = "chert-gateway-spool-"


class SpooledBody:
    """A complete body on disk. Implements `chert.UploadBody`, replayably."""

    replayable = True
    failure: GatewayError | None = None

    def __init__(
        self,
        source: AsyncBufferedReader,
        size: int,
        sha256: str | None,
        chunk_size: int,
        first_byte_received_at: float | None,
    ) -> None:
        # The file is opened and closed by Spool.receive, not here: an HTTP
        # client may abandon `chunks` mid-way (a reset PUT), and an abandoned
        # generator must hold nothing that needs closing.
        self._source = source
        self.size = size
        self.received = size
        self.sha256 = sha256
        self._chunk_size = chunk_size
        self.first_byte_received_at = first_byte_received_at
        self.first_byte_sent_at: float | None = None

    async def chunks(self, progress: ProgressDeadline) -> AsyncIterator[bytes]:
        await self._source.seek(0)  # every attempt starts from the first byte
        if self.first_byte_sent_at is None:
            self.first_byte_sent_at = time.perf_counter()
        while chunk := await self._source.read(self._chunk_size):
            progress.progressed()
            yield chunk


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
    async def receive(
        self,
        read: ReadFn,
        meta: FileMeta,
        *,
        limit: int,
        chunk_size: int,
        client_timeout: float,
        sha256: bool = True,
    ) -> AsyncIterator[SpooledBody]:
        """Spool the whole body, then refuse an empty file or one whose first
        bytes contradict its type. The file lives as long as the context."""
        path = self.directory / f"{FILE_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        reader = CallerReader(read, client_timeout=client_timeout)
        hasher = BodyDigest(sha256)
        head = b""
        reserved = 0
        try:
            async with aiofiles.open(path, "w+b") as sink:
                while chunk := await reader.read(chunk_size):
                    if reader.received > limit:
                        raise PayloadTooLargeError(
                            f"the body passed the {limit}-byte limit; upload abandoned"
                        )
                    if self.used + len(chunk) > self.max_bytes:
                        raise OverloadedError(
                            "the gateway's spool for bodies without Content-Length is full; "
                            "retry shortly, or send Content-Length",
                            retry_after=1,
                        )
                    self.used += len(chunk)
                    reserved += len(chunk)
                    if len(head) < media.SNIFF_BYTES:
                        head += chunk[: media.SNIFF_BYTES - len(head)]
                    hasher.update(chunk)
                    await sink.write(chunk)
                if reader.received == 0:
                    raise InvalidRequestError(f"{meta.filename} is empty; send the file's bytes")
                check_content(meta, head)
                await sink.flush()
                yield SpooledBody(
                    sink,
                    reader.received,
                    hasher.hexdigest(),
                    chunk_size,
                    first_byte_received_at=reader.first_byte_at,
                )
        finally:
            self.used -= reserved
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
