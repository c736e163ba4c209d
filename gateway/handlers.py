"""The API's handlers: thin. Each parses the request (intake), holds its
idempotency key, runs the pipeline inside an admission slot, and shapes the
answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import MultipartReader, hdrs, web

from gateway import intake, media, tuning
from gateway.errors import InvalidRequestError, UnsupportedMediaTypeError
from gateway.form import FormLimits, digest_form, read_form
from gateway.idempotency import fingerprint
from gateway.intake import CallerBody
from gateway.message_shape import ShapeError, check_send_body
from gateway.pipeline import HashedBody, Timings
from gateway.state import ADMISSION, CHERT, IDEMPOTENCY, PIPELINE, SETTINGS, SPOOL

# The size of the pieces read from the caller and written to Chert: 256 KiB
# measured fastest for a relay (64 KiB clearly slower, 1 MiB no faster).
CHUNK_BYTES = 256 * 1024
# ...unless the socket reads grow with them: a streamed body read 1 MiB per
# recv() costs a fifth less CPU per byte, but an upload then holds about
# 2 MiB instead of 0.65. So larger reads go to large bodies, and only while
# at most a quarter of GATEWAY_MAX_IN_FLIGHT uploads run: memory stays
# within about 1 MiB per upload allowed in flight (docs/deploy.md).
LARGE_READ_BYTES = 1024 * 1024
LARGE_READS_SHARE_OF_MAX_IN_FLIGHT = 0.25

PASSED_DOWNLOAD_HEADERS = (
    hdrs.CONTENT_TYPE,
    hdrs.CONTENT_LENGTH,
    hdrs.CONTENT_ENCODING,
    hdrs.CONTENT_DISPOSITION,
    hdrs.ETAG,
    hdrs.LAST_MODIFIED,
)

OUTCOME_KEY = web.RequestKey("gateway_outcome", str)
# What the access log line says of a request beyond method, route and status.
LOG_FIELDS_KEY = web.RequestKey("gateway_log_fields", dict)
REPLAYED_HEADER = "Idempotent-Replayed"


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _done(request: web.Request, outcome: str, answer: dict[str, Any] | None = None) -> None:
    """Note the outcome, and the answer's ids, sizes and timings for the log."""
    request[OUTCOME_KEY] = outcome
    if answer is None:
        return
    files = answer.get("attachments") or ([answer] if "attachment_id" in answer else [])
    message = answer.get("message") or {}
    request[LOG_FIELDS_KEY] = {
        "attachment_ids": [f["attachment_id"] for f in files] or None,
        "size_bytes": sum(f["size_bytes"] for f in files) if files else None,
        "message_id": message.get("id"),
        "timings": answer.get("timings"),
    }


def _replay(request: web.Request, answer: bytes) -> web.Response:
    _done(request, "replayed", orjson.loads(answer))
    response = web.Response(body=answer, status=201, content_type="application/json")
    response.headers[REPLAYED_HEADER] = "true"
    return response


async def _file_print(request: web.Request) -> str:
    """A repeat's body, read and hashed but sent nowhere: what `_body_print` was."""
    settings = request.app[SETTINGS]
    await intake.send_continue(request)
    size, sha256 = await intake.digest(
        request.content.read,
        limit=settings.max_upload_bytes,
        client_timeout=settings.client_timeout,
    )
    return f"{size}:{sha256}"


def _body_print(answer: dict[str, Any]) -> str | None:
    """What the first request's body was, told by its answer (sha256 is always
    taken when the caller gave a key)."""
    return f"{answer['size_bytes']}:{answer['sha256']}" if answer["sha256"] else None


def _hashes(request: web.Request, given_key: str | None) -> bool:
    """SHA-256 on: as configured, and always when a key may bring the body back."""
    return request.app[SETTINGS].sha256 or given_key is not None


@asynccontextmanager
async def _incoming_file(
    request: web.Request, meta: intake.FileMeta, size: int | None, *, sha256: bool
) -> AsyncIterator[HashedBody]:
    """The caller's body: streamed through when its length is declared,
    spooled to disk first when it is not (Chert needs the length). Either
    way its first bytes must fit its type before Chert hears of it."""
    settings = request.app[SETTINGS]
    await intake.send_continue(request)
    if size is not None:
        body = CallerBody(
            request.content, size, client_timeout=settings.client_timeout, sha256=sha256
        )
        with tuning.read_size(request.transport, _read_bytes(request, size)):
            intake.check_content(meta, await body.head(media.SNIFF_BYTES))
            yield body
        return
    async with request.app[SPOOL].receive(
        request.content.read,
        meta,
        limit=settings.max_upload_bytes,
        chunk_size=CHUNK_BYTES,
        client_timeout=settings.client_timeout,
        sha256=sha256,
    ) as spooled:
        yield spooled


def _read_bytes(request: web.Request, size: int) -> int:
    """How much to read per recv() for a streamed body of `size` bytes."""
    admission = request.app[ADMISSION]
    few_in_flight = (
        admission.in_flight <= admission.max_in_flight * LARGE_READS_SHARE_OF_MAX_IN_FLIGHT
    )
    return LARGE_READ_BYTES if few_in_flight and size > LARGE_READ_BYTES else CHUNK_BYTES


async def send_file(request: web.Request) -> web.Response:
    """POST|PUT /v1/chats/{chat_id}/attachments: one file, one message."""
    settings = request.app[SETTINGS]
    chat_id = intake.chat_id(request)
    intake.check_encoding(request)
    given_key = intake.idempotency_key(request)
    caption = intake.caption(request)
    meta = intake.file_meta(request)
    size = intake.declared_size(request, settings.max_upload_bytes)
    request_print = fingerprint(
        "send_file", chat_id, meta.filename, meta.content_type, size, caption
    )
    with request.app[IDEMPOTENCY].claim(given_key, request_print) as claim:
        if claim.replay is not None:
            claim.check_body(await _file_print(request))
            return _replay(request, claim.replay)
        incoming = _incoming_file(request, meta, size, sha256=_hashes(request, given_key))
        async with request.app[ADMISSION].slot(), incoming as body:
            answer = await request.app[PIPELINE].send_file(
                chat_id,
                meta,
                body,
                caption=caption,
                idempotency_key=given_key or uuid.uuid4().hex,
            )
        claim.complete(answer, _body_print(answer))
    _done(request, "sent", answer)
    return json_response(answer, status=201)


async def upload_only(request: web.Request) -> web.Response:
    """POST|PUT /v1/attachments: the file goes to Chert; no message is sent."""
    settings = request.app[SETTINGS]
    intake.check_encoding(request)
    given_key = intake.idempotency_key(request)
    meta = intake.file_meta(request)
    size = intake.declared_size(request, settings.max_upload_bytes)
    request_print = fingerprint("upload_only", meta.filename, meta.content_type, size)
    with request.app[IDEMPOTENCY].claim(given_key, request_print) as claim:
        if claim.replay is not None:
            claim.check_body(await _file_print(request))
            return _replay(request, claim.replay)
        incoming = _incoming_file(request, meta, size, sha256=_hashes(request, given_key))
        async with request.app[ADMISSION].slot(), incoming as body:
            uploaded = await request.app[PIPELINE].upload(meta, body, Timings())
        answer = {**uploaded.to_json(), "expires_at": uploaded.expires_at}
        claim.complete(answer, _body_print(answer))
    _done(request, "uploaded", answer)
    return json_response(answer, status=201)


async def send_message(request: web.Request) -> web.Response:
    """POST /v1/chats/{chat_id}/messages: Chert's JSON, or a form with files."""
    chat_id = intake.chat_id(request)
    intake.check_encoding(request)
    given_key = intake.idempotency_key(request)
    # Not request.content_type: aiohttp parses it with the email package,
    # which builds new classes, in reference cycles, on every call.
    declared = media.normalize(request.headers.get(hdrs.CONTENT_TYPE, ""))
    if declared == "application/json":
        return await _send_json(request, chat_id, given_key)
    if declared == "multipart/form-data":
        return await _send_form(request, chat_id, given_key)
    raise UnsupportedMediaTypeError(
        "send application/json (Chert's message shape) or multipart/form-data (files)"
    )


async def _send_json(request: web.Request, chat_id: str, given_key: str | None) -> web.Response:
    started = time.perf_counter()
    # read() is capped by the app's client_max_size; over it aiohttp says 413.
    try:
        shape = check_send_body(orjson.loads(await request.read()))
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the body is not valid JSON") from None
    except ShapeError as exc:
        raise InvalidRequestError(str(exc)) from None
    if given_key and shape.idempotency_key and given_key != shape.idempotency_key:
        raise InvalidRequestError("Idempotency-Key and message.idempotency_key differ")
    key = given_key or shape.idempotency_key
    request_print = fingerprint("send_json", chat_id, shape.parts, shape.parallel_attachments)
    with request.app[IDEMPOTENCY].claim(key, request_print) as claim:
        if claim.replay is not None:
            return _replay(request, claim.replay)
        timings = Timings()
        message = await request.app[PIPELINE].send(
            chat_id, shape.parts, key or uuid.uuid4().hex, timings, shape.parallel_attachments
        )
        timings.total_s = time.perf_counter() - started
        answer = {"message": message, "timings": timings.to_json()}
        claim.complete(answer)
    _done(request, "sent", answer)
    return json_response(answer, status=201)


async def _send_form(request: web.Request, chat_id: str, given_key: str | None) -> web.Response:
    started = time.perf_counter()
    settings = request.app[SETTINGS]
    limits = FormLimits(
        settings.max_upload_bytes,
        CHUNK_BYTES,
        settings.client_timeout,
        sha256=_hashes(request, given_key),
    )
    # A form's fields and files are known only as they arrive: the key's first
    # fingerprint covers route and chat, its body_print the whole form.
    with request.app[IDEMPOTENCY].claim(given_key, fingerprint("send_form", chat_id)) as claim:
        if claim.replay is not None:
            await intake.send_continue(request)
            claim.check_body(await digest_form(_multipart(request), chat_id=chat_id, limits=limits))
            return _replay(request, claim.replay)
        async with request.app[ADMISSION].slot():
            await intake.send_continue(request)
            form = await read_form(
                _multipart(request),
                chat_id=chat_id,
                spool=request.app[SPOOL],
                pipeline=request.app[PIPELINE],
                limits=limits,
            )
            timings = Timings()
            message = await request.app[PIPELINE].send(
                chat_id,
                form.parts,
                given_key or uuid.uuid4().hex,
                timings,
                form.parallel_attachments,
            )
        timings.total_s = time.perf_counter() - started
        answer = {
            "message": message,
            "attachments": [
                {**upload.to_json(), "timings": file_timings.to_json()}
                for upload, file_timings in zip(form.uploads, form.file_timings, strict=True)
            ],
            "timings": timings.to_json(),
        }
        claim.complete(answer, form.fingerprint)
    _done(request, "sent", answer)
    return json_response(answer, status=201)


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
    """GET /v1/attachments/{attachment_id}/content: the bytes, streamed through.

    Chert's Content-Type and Content-Length are passed on; every write is
    awaited, so a slow caller slows the read from Chert instead of filling
    memory. A break mid-stream cuts the connection: with Content-Length set,
    the caller sees a short body, never a silently truncated file.
    """
    attachment_id = intake.attachment_id(request)
    chert = request.app[CHERT]
    async with chert.open_content(attachment_id) as upstream:
        response = web.StreamResponse(status=200)
        response.headers.update(chert.passed_headers(upstream, PASSED_DOWNLOAD_HEADERS))
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError):
            # The headers are gone; a cut connection is the only honest signal.
            request[OUTCOME_KEY] = "upstream_error"
            if request.transport is not None:
                request.transport.abort()
            return response
        except ConnectionResetError:
            request[OUTCOME_KEY] = "client_aborted"
            return response
        await response.write_eof()
    _done(request, "downloaded")
    return response


OPENAPI_DOCUMENT = (Path(__file__).parent / "openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: this API, described (kept in sync with the routes by a test)."""
    return web.Response(body=OPENAPI_DOCUMENT, content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Each resource is named: the name is the `route` label of metrics and logs."""
    router = app.router
    send = router.add_resource("/v1/chats/{chat_id}/attachments", name="send_file")
    for method in ("POST", "PUT"):
        send.add_route(method, send_file, expect_handler=intake.defer_continue)
    upload = router.add_resource("/v1/attachments", name="upload")
    for method in ("POST", "PUT"):
        upload.add_route(method, upload_only, expect_handler=intake.defer_continue)
    router.add_resource("/v1/chats/{chat_id}/messages", name="send_message").add_route(
        "POST", send_message, expect_handler=intake.defer_continue
    )
    router.add_resource("/v1/attachments/{attachment_id}", name="attachment").add_route(
        "GET", attachment_metadata
    )
    router.add_resource(
        "/v1/attachments/{attachment_id}/content", name="attachment_content"
    ).add_route("GET", attachment_content)
    router.add_resource("/openapi.json", name="openapi").add_route("GET", openapi)
