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

Every dimension is bounded (the README names each number): files, other
fields, each field's size and their total. A limit is enforced the moment
it is crossed, before anything more is uploaded. Chert's own rules for the
message (parallel_attachments takes two or more images) are checked as soon
as the form has said enough, and always before the send.

A form can also be read without uploading (`digest_form`): the replay of a
completed Idempotency-Key hashes its files to tell the same request from a
different one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, hdrs
from aiohttp.http_exceptions import HttpProcessingError

from gateway.api import body, intake
from gateway.api.body import BodyLimits
from gateway.api.http_protocol import parser_reason
from gateway.api.idempotency import fingerprint
from gateway.api.pipeline import UploadedFile, UploadPipeline
from gateway.api.spool import Spool
from gateway.chert import media
from gateway.chert.media import FileMeta
from gateway.chert.message_shape import URL_RE, ShapeError, check_send_body
from gateway.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from gateway.ops.config import parse_boolean

MAX_FILES = 10
MAX_FIELDS = 20  # parts that are not files: text, rich_link, parallel_attachments
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS_TOTAL_BYTES = 256 * 1024
# Room for a form's own framing (boundaries, part headers) beyond its content.
FORM_FRAMING_BYTES = 1024 * 1024
# Files uploaded to Chert at once for one form; more wait their turn.
UPLOAD_CONCURRENCY = 3
# A part's own transfer coding: only those that leave the bytes as they are.
IDENTITY_CODINGS = frozenset({"", "identity", "binary", "8bit", "7bit"})


@dataclass(frozen=True)
class FormRules:
    """What a route's form may hold: the message route takes every field and
    up to MAX_FILES files; a single-file route one file (and its caption)."""

    max_files: int = MAX_FILES
    fields: frozenset[str] = frozenset({"text", "rich_link", "parallel_attachments"})
    # Said when the form holds more than the route takes.
    elsewhere: str = ""

    def ceiling(self, max_upload_bytes: int) -> int:
        """The most a form within every other limit can declare as its length."""
        return self.max_files * max_upload_bytes + MAX_FIELDS_TOTAL_BYTES + FORM_FRAMING_BYTES


MESSAGE_FORM = FormRules()


@dataclass(frozen=True)
class FileSeen:
    """What a form's file is, for the request's fingerprint."""

    meta: FileMeta
    size: int
    sha256: str | None


@dataclass(frozen=True)
class FormMessage:
    """A form read whole, its files at Chert: what the send needs."""

    parts: list[dict[str, Any]]
    uploads: list[UploadedFile]
    parallel_attachments: bool | None
    # The whole request, fields and file bytes: for idempotency.
    fingerprint: str


# Takes one file part; returns what will, once awaited, describe it.
FileHandler = Callable[[FileMeta, BodyPartReader], Awaitable["asyncio.Future[Any]"]]


async def read_form(
    reader: MultipartReader,
    *,
    chat_id: str,
    spool: Spool,
    pipeline: UploadPipeline,
    limits: BodyLimits,
    rules: FormRules = MESSAGE_FORM,
) -> FormMessage:
    """Read the whole form, uploading its files as they arrive; return the parts."""
    gate = asyncio.Semaphore(UPLOAD_CONCURRENCY)

    async with AsyncExitStack() as spooled_files:

        async def upload(meta: FileMeta, part: BodyPartReader) -> asyncio.Future[Any]:
            file_body = await spooled_files.enter_async_context(
                body.spooled(part.read_chunk, meta, spool=spool, limits=limits)
            )

            async def run() -> UploadedFile:
                async with gate:
                    return await pipeline.upload(meta, file_body)

            return asyncio.ensure_future(run())

        form = await _read(reader, upload, rules)
    uploads: list[UploadedFile] = form.files
    return FormMessage(
        parts=form.parts([u.attachment_id for u in uploads]),
        uploads=uploads,
        parallel_attachments=form.parallel,
        fingerprint=form.fingerprint(chat_id, [_seen(u) for u in uploads]),
    )


async def digest_form(
    reader: MultipartReader,
    *,
    chat_id: str,
    limits: BodyLimits,
    rules: FormRules = MESSAGE_FORM,
) -> str:
    """The fingerprint of a form, read and hashed but uploaded nowhere."""

    async def digest(meta: FileMeta, part: BodyPartReader) -> asyncio.Future[Any]:
        size, sha256 = await body.digest(part.read_chunk, limits)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(FileSeen(meta, size, sha256))
        return done

    form = await _read(reader, digest, rules)
    return form.fingerprint(chat_id, list(form.files))


def _seen(upload: UploadedFile) -> FileSeen:
    return FileSeen(upload.meta, upload.size_bytes, upload.sha256)


@dataclass
class _Form:
    """A form as read: its fields and files in order, and what they came to."""

    entries: list[dict[str, Any] | int] = field(default_factory=list)  # int: a file's index
    metas: list[FileMeta] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)  # what each file handler's future gave
    parallel: bool | None = None
    fields: int = 0
    field_bytes: int = 0

    def parts(self, attachment_ids: list[str]) -> list[dict[str, Any]]:
        return [
            {"type": "media", "attachment_id": attachment_ids[e]} if isinstance(e, int) else e
            for e in self.entries
        ]

    def fingerprint(self, chat_id: str, files: list[FileSeen]) -> str:
        described = [
            [files[e].meta.filename, files[e].meta.content_type, files[e].size, files[e].sha256]
            if isinstance(e, int)
            else e
            for e in self.entries
        ]
        return fingerprint("send_form", chat_id, described, self.parallel)


async def _read(reader: MultipartReader, on_file: FileHandler, rules: FormRules) -> _Form:
    form = _Form()
    pending: list[asyncio.Future[Any]] = []
    try:
        while (part := await _next_part(reader)) is not None:
            _raise_first_failure(pending)
            filename = intake.disposition_param(
                part.headers.get(hdrs.CONTENT_DISPOSITION), "filename"
            )
            _check_coding(part)
            if filename is None:
                await _take_field(form, part, rules)
                continue
            if len(form.metas) == rules.max_files:
                raise InvalidRequestError(
                    f"at most {rules.max_files} file(s) in one request{rules.elsewhere}"
                )
            meta = intake.resolve_file_meta(filename, part.headers.get(hdrs.CONTENT_TYPE, ""))
            form.metas.append(meta)
            _check_parallel(form)
            form.entries.append(len(pending))
            pending.append(await on_file(meta, part))
        if not form.entries:
            raise InvalidRequestError("the form has no text, file or rich_link")
        if rules.max_files == 1 and not form.metas:
            raise InvalidRequestError(
                "the form has no file part: a file part has a filename in its Content-Disposition"
            )
        _check_message(form)
        form.files = list(await asyncio.gather(*pending))
    except BaseException:
        # One failure (or the caller leaving) stops the rest: no message.
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise
    if form.parallel is None and len(form.metas) >= 2:
        form.parallel = all(m.content_type in media.IMAGE_TYPES for m in form.metas) or None
    return form


async def _next_part(reader: MultipartReader) -> BodyPartReader | None:
    """The next part; a malformed form is the caller's 400, whatever aiohttp raised."""
    try:
        part = await reader.next()
    except (ValueError, KeyError, AssertionError, HttpProcessingError) as exc:
        raise InvalidRequestError(f"the form is malformed: {parser_reason(exc)}") from None
    if part is None:
        return None
    if not isinstance(part, BodyPartReader):
        raise InvalidRequestError("nested multipart bodies are not taken")
    return part


def _check_coding(part: BodyPartReader) -> None:
    for header in (hdrs.CONTENT_ENCODING, hdrs.CONTENT_TRANSFER_ENCODING):
        coding = part.headers.get(header, "").strip().lower()
        if coding not in IDENTITY_CODINGS:
            raise UnsupportedMediaTypeError(
                f"a form part with {header} {coding!r} is not taken: send the file's own bytes"
            )


async def _take_field(form: _Form, part: BodyPartReader, rules: FormRules) -> None:
    form.fields += 1
    if form.fields > MAX_FIELDS:
        raise InvalidRequestError(f"at most {MAX_FIELDS} fields besides the files")
    name = intake.disposition_param(part.headers.get(hdrs.CONTENT_DISPOSITION), "name") or ""
    if name not in rules.fields and name in MESSAGE_FORM.fields:
        taken = ", ".join(sorted(rules.fields)) or "no field"
        raise InvalidRequestError(
            f"form field {name!r} is not taken here (this route takes {taken} beside "
            f"its file){rules.elsewhere}"
        )
    value = await _read_field(part, name, MAX_FIELDS_TOTAL_BYTES - form.field_bytes)
    form.field_bytes += len(value.encode())
    if name == "parallel_attachments":
        form.parallel = _boolean(value)
        _check_parallel(form)
    elif (entry := _field_part(name, value)) is not None:
        form.entries.append(entry)


async def _read_field(part: BodyPartReader, name: str, room: int) -> str:
    limit = min(MAX_FIELD_BYTES, room)
    data = bytearray()
    try:
        while chunk := await part.read_chunk(MAX_FIELD_BYTES):
            data += chunk
            if len(data) > limit:
                if limit < MAX_FIELD_BYTES:
                    raise PayloadTooLargeError(
                        f"the form's fields are over {MAX_FIELDS_TOTAL_BYTES} bytes in all"
                    )
                raise PayloadTooLargeError(f"form field {name!r} is over {MAX_FIELD_BYTES} bytes")
    except (ValueError, HttpProcessingError) as exc:
        raise InvalidRequestError(f"the form is malformed: {parser_reason(exc)}") from None
    try:
        return data.decode(part.get_charset("utf-8"))
    except (UnicodeDecodeError, LookupError):
        raise InvalidRequestError(f"form field {name!r} is not valid text") from None


def _check_parallel(form: _Form) -> None:
    """parallel_attachments=true takes images only: say so before uploading one that isn't."""
    if not form.parallel:
        return
    for meta in form.metas:
        if meta.content_type not in media.IMAGE_TYPES:
            raise InvalidRequestError(
                f"parallel_attachments takes images only; {meta.filename} is {meta.content_type}"
            )


def _check_message(form: _Form) -> None:
    """The message as Chert will see it, checked against its rules before the send."""
    placeholders = [f"file-{n}" for n in range(len(form.metas))]
    payload: dict[str, Any] = {"message": {"parts": form.parts(placeholders)}}
    if form.parallel is not None:
        payload["parallel_attachments"] = form.parallel
    try:
        check_send_body(payload)
    except ShapeError as exc:
        raise InvalidRequestError(str(exc)) from None


def _raise_first_failure(pending: list[asyncio.Future[Any]]) -> None:
    """Stop reading the form as soon as one of its uploads has failed."""
    for task in pending:
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise error


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
        return parse_boolean(value)
    except ValueError:
        raise InvalidRequestError("parallel_attachments must be true or false") from None
