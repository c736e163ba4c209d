"""The API's handlers: thin. Each takes its request from intake in one call,
runs the pipeline inside the one exactly-once skeleton (`_exactly_once`), and
answers with the result's JSON."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp import MultipartReader, hdrs, web

from gateway.api import body, intake
from gateway.api import openapi as openapi_document
from gateway.api.body import CHUNK_BYTES, BodyLimits, HashedBody
from gateway.api.form import MESSAGE_FORM, FormMessage, FormRules, digest_form, read_form
from gateway.api.http_protocol import BODY_CEILING
from gateway.api.idempotency import file_print, fingerprint
from gateway.api.keys import (
    ADMISSION,
    CALLER_KEY,
    CHERT,
    HASHING,
    IDEMPOTENCY,
    LOG_FIELDS_KEY,
    METRICS,
    OUTCOME_KEY,
    PIPELINE,
    QUOTAS,
    SETTINGS,
    SPOOL,
)
from gateway.api.pipeline import Result, SentFile, SentMessage, Timings
from gateway.chert import media
from gateway.chert.media import FileMeta
from gateway.chert.message_shape import ShapeError, check_send_body
from gateway.errors import GatewayError, InvalidRequestError, PayloadTooLargeError

PASSED_DOWNLOAD_HEADERS = (
    hdrs.CONTENT_TYPE,
    hdrs.CONTENT_LENGTH,
    hdrs.CONTENT_ENCODING,
    hdrs.CONTENT_DISPOSITION,
    hdrs.ETAG,
    hdrs.LAST_MODIFIED,
)
REPLAYED_HEADER = "Idempotent-Replayed"
# How long a download's first byte may wait for Chert's metadata to name it.
FILENAME_WAIT_SECONDS = 2.0


def json_response(answer: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(answer), status=status, content_type="application/json")


def _limits(request: web.Request, key: str | None) -> BodyLimits:
    """The caller's body limits. SHA-256 is on as configured, and always when a
    key may bring the body back (its repeat is told apart by its hash)."""
    settings = request.app[SETTINGS]
    return BodyLimits(
        max_bytes=settings.max_upload_bytes,
        client_timeout=settings.client_timeout,
        sha256=settings.sha256 or key is not None,
        hashing=request.app[HASHING],
    )


async def _exactly_once(
    request: web.Request,
    key: str | None,
    request_print: str,
    *,
    run: Callable[[str], Awaitable[Result]],
    repeat_print: Callable[[], Awaitable[str | None]] | None = None,
    admitted: bool = True,
    outcome: str = "sent",
) -> web.Response:
    """claim the key → replay a completed repeat (if its body is the same) →
    run inside an admission slot → remember → 201.

    `run` gets the key to give Chert: the caller's, or a new one.
    `repeat_print` reads a repeat's body (uploading nothing) for comparison
    with the first request's `body_print`.
    """
    async with request.app[IDEMPOTENCY].claim(key, request_print) as claim:
        if claim.replay is not None:
            if repeat_print is not None:
                # Reading a repeat's body is an upload's worth of reading: it
                # counts against GATEWAY_MAX_IN_FLIGHT (and the caller's quota) like one.
                async with _upload_slot(request):
                    claim.check_body(await repeat_print())
            request[OUTCOME_KEY] = "replayed"
            request[LOG_FIELDS_KEY] = claim.replay.log_fields
            response = web.Response(
                body=claim.replay.answer, status=201, content_type="application/json"
            )
            response.headers[REPLAYED_HEADER] = "true"
            return response
        chert_key = key or uuid.uuid4().hex
        if admitted:
            async with _upload_slot(request):
                result = await run(chert_key)
        else:
            result = await run(chert_key)
        answer, log_fields = result.to_json(), result.log_fields()
        claim.complete(answer, result.body_print, log_fields)
    request[OUTCOME_KEY] = outcome
    request[LOG_FIELDS_KEY] = log_fields
    return json_response(answer, status=201)


@asynccontextmanager
async def _upload_slot(request: web.Request) -> AsyncIterator[None]:
    """An upload's place: the caller's own quota first (429), then the
    gateway's (503)."""
    async with request.app[QUOTAS].slot(request.get(CALLER_KEY)), request.app[ADMISSION].slot():
        yield


def _incoming(
    request: web.Request, upload: intake.UploadRequest, limits: BodyLimits
) -> AbstractAsyncContextManager[tuple[FileMeta, HashedBody]]:
    admission = request.app[ADMISSION]
    recv_bytes = body.read_size(
        upload.size or 0, in_flight=admission.in_flight, max_in_flight=admission.max_in_flight
    )
    return body.incoming(
        request,
        upload.meta,
        upload.size,
        limits=limits,
        spool=request.app[SPOOL],
        recv_bytes=recv_bytes,
    )


def _file_print(request: web.Request, limits: BodyLimits) -> Callable[[], Awaitable[str]]:
    """A repeat's body, read and hashed but sent nowhere, as a `body_print`."""

    async def read() -> str:
        await body.send_continue(request)
        return file_print(*await body.digest(request.content.read, limits))

    return read


async def send_file(request: web.Request) -> web.Response:
    """POST|PUT /v1/chats/{chat_id}/attachments: one file, one message. The
    file is the body, or the one file of a form (`requests.post(files=…)`)."""
    if intake.is_form(request):
        return await _send_file_form(request)
    upload = intake.upload_request(request, request.app[SETTINGS].max_upload_bytes)
    assert upload.chat_id is not None
    chat_id = upload.chat_id
    limits = _limits(request, upload.key)

    async def run(key: str) -> Result:
        async with _incoming(request, upload, limits) as (meta, file_body):
            return await request.app[PIPELINE].send_file(
                chat_id, meta, file_body, caption=upload.caption, idempotency_key=key
            )

    meta = upload.meta
    request_print = fingerprint(
        "send_file", chat_id, meta.filename, meta.content_type, upload.size, upload.caption
    )
    return await _exactly_once(
        request, upload.key, request_print, run=run, repeat_print=_file_print(request, limits)
    )


async def upload_only(request: web.Request) -> web.Response:
    """POST|PUT /v1/attachments: the file goes to Chert; no message is sent.
    The file is the body, or the one file of a form."""
    if intake.is_form(request):
        return await _upload_form(request)
    upload = intake.upload_request(request, request.app[SETTINGS].max_upload_bytes)
    limits = _limits(request, upload.key)

    async def run(key: str) -> Result:
        async with _incoming(request, upload, limits) as (meta, file_body):
            return await request.app[PIPELINE].upload(meta, file_body)

    meta = upload.meta
    request_print = fingerprint("upload_only", meta.filename, meta.content_type, upload.size)
    return await _exactly_once(
        request,
        upload.key,
        request_print,
        run=run,
        repeat_print=_file_print(request, limits),
        outcome="uploaded",
    )


async def send_message(request: web.Request) -> web.Response:
    """POST /v1/chats/{chat_id}/messages: Chert's JSON, or a form with files."""
    started = time.perf_counter()
    asked = intake.message_request(request)
    if asked.kind == "json":
        return await _send_json(request, asked, started)
    return await _send_form(request, asked, started)


async def _send_json(
    request: web.Request, asked: intake.MessageRequest, started: float
) -> web.Response:
    # read() is capped by the app's client_max_size; over it aiohttp says 413.
    try:
        shape = check_send_body(orjson.loads(await request.read()))
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the body is not valid JSON") from None
    except ShapeError as exc:
        raise InvalidRequestError(str(exc)) from None
    if asked.key and shape.idempotency_key and asked.key != shape.idempotency_key:
        raise InvalidRequestError("Idempotency-Key and message.idempotency_key differ")
    key = asked.key or shape.idempotency_key

    async def run(chert_key: str) -> Result:
        return await request.app[PIPELINE].send_message(
            asked.chat_id,
            shape.parts,
            chert_key,
            started=started,
            parallel_attachments=shape.parallel_attachments,
        )

    request_print = fingerprint("send_json", asked.chat_id, shape.parts, shape.parallel_attachments)
    # The whole body is in the fingerprint: a repeat has nothing more to read.
    return await _exactly_once(request, key, request_print, run=run, admitted=False)


async def _send_form(
    request: web.Request, asked: intake.MessageRequest, started: float
) -> web.Response:
    async def send(form: FormMessage, key: str) -> Result:
        return await request.app[PIPELINE].send_message(
            asked.chat_id,
            form.parts,
            key,
            started=started,
            parallel_attachments=form.parallel_attachments,
            files=form.uploads,
            body_print=form.fingerprint,
        )

    return await _form_request(request, asked.chat_id, asked.key, MESSAGE_FORM, send)


SEVERAL_FILES = "; send several files as one message to /v1/chats/{chat_id}/messages"
SEND_FILE_FORM = FormRules(max_files=1, fields=frozenset({"text"}), elsewhere=SEVERAL_FILES)
UPLOAD_FORM = FormRules(max_files=1, fields=frozenset(), elsewhere="; upload one file per request")


async def _send_file_form(request: web.Request) -> web.Response:
    """The single-file send, its file and caption in a form: answered as
    the single-file send is."""
    started = time.perf_counter()
    chat_id = intake.chat_id(request)
    intake.check_encoding(request)

    async def send(form: FormMessage, key: str) -> Result:
        sent = await request.app[PIPELINE].send_message(chat_id, form.parts, key, started=started)
        (file,) = form.uploads
        return FormAnswered(
            SentFile(file, sent.message, _one_file_timings(file.timings, sent)), form.fingerprint
        )

    key = intake.idempotency_key(request)
    return await _form_request(request, chat_id, key, SEND_FILE_FORM, send, name="send_file_form")


async def _upload_form(request: web.Request) -> web.Response:
    intake.check_encoding(request)

    async def finish(form: FormMessage, key: str) -> Result:
        (file,) = form.uploads
        return FormAnswered(file, form.fingerprint)

    key = intake.idempotency_key(request)
    return await _form_request(
        request, "", key, UPLOAD_FORM, finish, name="upload_form", outcome="uploaded"
    )


def _one_file_timings(upload: Timings, sent: SentMessage) -> Timings:
    return Timings(
        create_slot_s=upload.create_slot_s,
        upload_s=upload.upload_s,
        send_s=sent.timings.send_s,
        total_s=sent.timings.total_s,
    )


class FormAnswered:
    """A result whose request was a form: a repeat is told apart by the
    whole form's print, not by its file's alone."""

    def __init__(self, result: Result, body_print: str) -> None:
        self._result = result
        self.body_print: str | None = body_print

    def to_json(self) -> dict[str, Any]:
        return self._result.to_json()

    def log_fields(self) -> dict[str, Any]:
        return self._result.log_fields()


async def _form_request(
    request: web.Request,
    chat_id: str,
    key: str | None,
    rules: FormRules,
    finish: Callable[[FormMessage, str], Awaitable[Result]],
    *,
    name: str = "send_form",
    outcome: str = "sent",
) -> web.Response:
    """A form read part by part, its files uploaded as they arrive, then
    `finish` (the send) with the form and the key to give Chert."""
    limits = _limits(request, key)
    ceiling = rules.ceiling(limits.max_bytes)
    if request.content_length is not None and request.content_length > ceiling:
        raise PayloadTooLargeError(
            f"the form is {request.content_length} bytes; a form takes at most {ceiling}"
        )
    # A chunked form is counted as it arrives, preamble and epilogue too.
    request[BODY_CEILING] = ceiling
    # Made now, so a form without a usable boundary is refused before its key
    # is claimed or a slot taken.
    reader = _multipart(request)

    async def run(chert_key: str) -> Result:
        await body.send_continue(request)
        form = await read_form(
            reader,
            chat_id=chat_id,
            spool=request.app[SPOOL],
            pipeline=request.app[PIPELINE],
            limits=limits,
            rules=rules,
        )
        return await finish(form, chert_key)

    async def repeat_print() -> str:
        await body.send_continue(request)
        return await digest_form(reader, chat_id=chat_id, limits=limits, rules=rules)

    # A form's fields and files are known only as they arrive: the first
    # fingerprint covers route and chat, the body_print the whole form.
    request_print = fingerprint(name, chat_id)
    return await _exactly_once(
        request, key, request_print, run=run, repeat_print=repeat_print, outcome=outcome
    )


def _multipart(request: web.Request) -> MultipartReader:
    """The form's reader; a Content-Type without a usable boundary is the caller's 400."""
    try:
        return MultipartReader(request.headers, request.content)
    except (ValueError, KeyError):
        raise InvalidRequestError(
            "multipart/form-data needs a boundary parameter of 1-70 characters"
        ) from None


async def attachment_metadata(request: web.Request) -> web.Response:
    """GET /v1/attachments/{attachment_id}: Chert's metadata."""
    answer = await request.app[CHERT].get_attachment(intake.attachment_id(request))
    return json_response(answer)


async def attachment_content(request: web.Request) -> web.StreamResponse:
    """GET|HEAD /v1/attachments/{attachment_id}/content: the bytes, streamed through.

    Chert's Content-Type and Content-Length are passed on, and a
    Content-Disposition with the registered filename (`curl -OJ` saves
    `invoice.pdf`, not `content`). Every write is awaited, so a slow caller
    slows the read from Chert instead of filling memory. A break mid-stream
    cuts the connection: with Content-Length set, the caller sees a short
    body, never a silently truncated file. HEAD answers the same headers
    and reads none of the body.
    """
    attachment_id = intake.attachment_id(request)
    chert = request.app[CHERT]
    # The name is asked for beside the content, not before it.
    registered = asyncio.ensure_future(_registered_filename(request, attachment_id))
    try:
        async with chert.open_content(attachment_id) as upstream:
            response = web.StreamResponse(status=200)
            response.headers.update(chert.passed_headers(upstream, PASSED_DOWNLOAD_HEADERS))
            if hdrs.CONTENT_DISPOSITION not in response.headers:
                await asyncio.wait({registered}, timeout=FILENAME_WAIT_SECONDS)
                filename = (registered.done() and registered.result()) or _fallback_filename(
                    attachment_id, response.headers.get(hdrs.CONTENT_TYPE, "")
                )
                response.headers[hdrs.CONTENT_DISPOSITION] = attachment_disposition(filename)
            if request.method == hdrs.METH_HEAD:
                request[OUTCOME_KEY] = "downloaded"
                return response
            await response.prepare(request)
            sent = 0
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                    await response.write(chunk)
                    sent += len(chunk)
            except (aiohttp.ClientError, TimeoutError):
                # The headers are gone; a cut connection is the only honest signal.
                request[OUTCOME_KEY] = "upstream_error"
                if request.transport is not None:
                    request.transport.abort()
                return response
            except ConnectionResetError:
                request[OUTCOME_KEY] = "client_aborted"
                return response
            finally:
                request.app[METRICS].downloaded_bytes.inc(sent)  # once per download
            await response.write_eof()
    finally:
        registered.cancel()
    request[OUTCOME_KEY] = "downloaded"
    return response


async def _registered_filename(request: web.Request, attachment_id: str) -> str | None:
    """The filename Chert's metadata has for the attachment; None when it has
    none (an inbound media id) or cannot say now: a download does not fail
    over its name."""
    try:
        answer = await request.app[CHERT].get_attachment(attachment_id)
    except GatewayError:
        return None
    attachment = answer.get("attachment")
    name = attachment.get("filename") if isinstance(attachment, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return name[: intake.MAX_FILENAME_BYTES]  # a header line, bounded whatever Chert holds


def _fallback_filename(attachment_id: str, content_type: str) -> str:
    """`in_536f….jpg`: the id, with the extension of Chert's type."""
    extensions = media.SUPPORTED_TYPES.get(media.normalize(content_type))
    return attachment_id + (extensions[0] if extensions else "")


def attachment_disposition(filename: str) -> str:
    """RFC 6266: an ASCII `filename` every client reads (curl -J reads only
    that), and `filename*` with the exact UTF-8 name when they differ."""
    base = re.split(r"[/\\]", filename)[-1] or "attachment"
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in base)
    header = f'attachment; filename="{fallback}"'
    if fallback != base:
        header += "; filename*=UTF-8''" + urllib.parse.quote(base, safe="")
    return header


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: this API, described (kept in sync with the routes by a test)."""
    return web.Response(body=openapi_document.DOCUMENT, content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Each resource is named: the name is the `route` label of metrics and logs."""
    router = app.router
    send = router.add_resource("/v1/chats/{chat_id}/attachments", name="send_file")
    for method in ("POST", "PUT"):
        send.add_route(method, send_file, expect_handler=body.defer_continue)
    upload = router.add_resource("/v1/attachments", name="upload")
    for method in ("POST", "PUT"):
        upload.add_route(method, upload_only, expect_handler=body.defer_continue)
    router.add_resource("/v1/chats/{chat_id}/messages", name="send_message").add_route(
        "POST", send_message, expect_handler=body.defer_continue
    )
    router.add_resource("/v1/attachments/{attachment_id}", name="attachment").add_route(
        "GET", attachment_metadata
    )
    content = router.add_resource(
        "/v1/attachments/{attachment_id}/content", name="attachment_content"
    )
    for method in ("GET", "HEAD"):
        content.add_route(method, attachment_content)
    router.add_resource("/openapi.json", name="openapi").add_route("GET", openapi)
