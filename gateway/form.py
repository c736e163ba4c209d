"""multipart/form-data → one message: its parts in form order, each file
uploaded as soon as its part has arrived.

The form is read part by part from the stream. A file part has no length of
its own, so it is spooled (Chert needs one); once spooled, its upload starts
in the background (at most UPLOAD_CONCURRENCY at a time) while the next part
is still being received. Only when every upload has finished is the message
sent; if any file fails, the others are cancelled and nothing is sent.

Fields: `text` (a text part), `rich_link` (a URL), `parallel_attachments`
(`true`/`false`; when absent it is set for two or more images), and any
number of file parts (any field name, each with a filename).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, hdrs

from gateway import intake, media
from gateway.errors import InvalidRequestError
from gateway.message_shape import URL_RE
from gateway.pipeline import Timings, UploadedFile, UploadPipeline
from gateway.spool import Spool, SpooledBody

MAX_FILES = 10
MAX_FIELD_BYTES = 64 * 1024
# Files uploaded to Chert at once for one form; more wait their turn.
UPLOAD_CONCURRENCY = 3
BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass
class FormMessage:
    parts: list[dict[str, Any]]
    uploads: list[UploadedFile]
    parallel_attachments: bool | None
    file_timings: list[Timings] = field(default_factory=list)


@dataclass(frozen=True)
class FormLimits:
    max_upload_bytes: int
    chunk_size: int
    client_timeout: float
    sha256: bool = True


async def read_form(
    reader: MultipartReader, *, spool: Spool, pipeline: UploadPipeline, limits: FormLimits
) -> FormMessage:
    """Read the whole form, uploading its files as they arrive; return the parts."""
    entries: list[dict[str, Any] | int] = []  # an int is the index of an upload
    uploads: list[asyncio.Task[UploadedFile]] = []
    timings: list[Timings] = []
    parallel: bool | None = None
    gate = asyncio.Semaphore(UPLOAD_CONCURRENCY)

    async def upload(
        meta: intake.FileMeta, body: SpooledBody, file_timings: Timings
    ) -> UploadedFile:
        async with gate:
            return await pipeline.upload(meta, body, file_timings)

    async with AsyncExitStack() as spooled_files:
        try:
            async for part in reader:
                _raise_first_failure(uploads)
                if not isinstance(part, BodyPartReader):
                    raise InvalidRequestError("nested multipart bodies are not taken")
                if part.filename is None:
                    name, value = part.name or "", await _read_field(part)
                    if name == "parallel_attachments":
                        parallel = _boolean(value)
                    elif (entry := _field_part(name, value)) is not None:
                        entries.append(entry)
                    continue
                if len(uploads) == MAX_FILES:
                    raise InvalidRequestError(f"at most {MAX_FILES} files in one message")
                meta = intake.resolve_file_meta(
                    part.filename, part.headers.get(hdrs.CONTENT_TYPE, "")
                )
                body = await spooled_files.enter_async_context(
                    spool.receive(
                        part.read_chunk,
                        meta,
                        limit=limits.max_upload_bytes,
                        chunk_size=limits.chunk_size,
                        client_timeout=limits.client_timeout,
                        sha256=limits.sha256,
                    )
                )
                timings.append(Timings())
                entries.append(len(uploads))
                uploads.append(asyncio.create_task(upload(meta, body, timings[-1])))
            if not entries:
                raise InvalidRequestError("the form has no text, file or rich_link")
            done = list(await asyncio.gather(*uploads))
        except BaseException:
            # One failure (or the caller leaving) stops the rest: no message.
            for task in uploads:
                task.cancel()
            await asyncio.gather(*uploads, return_exceptions=True)
            raise

    parts = [
        {"type": "media", "attachment_id": done[e].attachment_id} if isinstance(e, int) else e
        for e in entries
    ]
    if parallel is None and len(done) >= 2:
        parallel = all(u.meta.content_type in media.IMAGE_TYPES for u in done) or None
    return FormMessage(parts, done, parallel, timings)


def _raise_first_failure(uploads: list[asyncio.Task[UploadedFile]]) -> None:
    """Stop reading the form as soon as one of its uploads has failed."""
    for task in uploads:
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def _read_field(part: BodyPartReader) -> str:
    data = b""
    while chunk := await part.read_chunk(MAX_FIELD_BYTES):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise InvalidRequestError(f"form field {part.name!r} is over {MAX_FIELD_BYTES} bytes")
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise InvalidRequestError(f"form field {part.name!r} is not valid text") from None


def _field_part(name: str, value: str) -> dict[str, Any] | None:
    if name == "text":
        return {"type": "text", "value": value} if value else None
    if name == "rich_link":
        if not URL_RE.match(value):
            raise InvalidRequestError("rich_link must be an http(s) URL")
        return {"type": "rich_link", "url": value}
    raise InvalidRequestError(
        f"unknown form field {name!r}: fields are text, rich_link, parallel_attachments "
        "and files (with a filename)"
    )


def _boolean(value: str) -> bool:
    try:
        return BOOLEANS[value.strip().lower()]
    except KeyError:
        raise InvalidRequestError("parallel_attachments must be true or false") from None
