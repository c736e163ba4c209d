"""The Chert simulator: Chert's documented API (chert-api/), served by aiohttp.

It is the gateway's only stand-in for Chert in tests, demos and benchmarks, so
it follows the vendor's pages, including the parts that make a client's life
hard: `Content-Length` is required on the PUT, a larger body is refused before
it is read, media must be fully uploaded before it can be sent. Bodies are
streamed to disk (or discarded) while hashed, never held in memory.

Besides Chert's routes it has a control surface under `/_simulator/` (faults,
the request record, reset) for tests that run it in another process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiofiles
import orjson
from aiohttp import web
from yarl import URL

from gateway.chert import media
from gateway.chert.message_shape import SendBody, ShapeError, check_send_body
from gateway.simulator.idle import IdleDropper
from gateway.simulator.state import (
    Attachment,
    Faults,
    RecordedRequest,
    SimulatorState,
)

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# The chat id Chert's own pages use in their examples (send-follow-up-message.md).
READ_CHUNK_BYTES = 256 * 1024

# Chert's documented error codes (chert-api/attachments.md).
INVALID = 1002  # invalid part shape or MIME mismatch
MISSING_FIELD = 1003
NO_SENDER_LINE = 3002
DELIVERY_FAILED = 4001
# code → (HTTP status, Chert's wording), as the error table documents them.
DOCUMENTED_ERRORS = {
    MISSING_FIELD: (400, "Missing required field."),
    INVALID: (400, "Invalid part shape or MIME mismatch."),
    NO_SENDER_LINE: (503, "No eligible sender line available in your project."),
    DELIVERY_FAILED: (502, "Delivery failed downstream."),
}
# Cases Chert's pages leave out. These numbers are the simulator's own; the
# gateway relies only on the HTTP status for them.
UNAUTHORIZED = 1001
NOT_FOUND = 1004

# The placeholder Chert's own page shows in required_headers: the caller is
# expected to put its own secret there.
SECRET_PLACEHOLDER = "Bearer <your-signing-secret>"


STATE_KEY = web.AppKey("state", SimulatorState)
RECORD_KEY = web.RequestKey("chert_simulator_record", RecordedRequest)
ChertHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ChertError(Exception):
    """An answer in Chert's error shape: {"error": {"code": int, "message": str}}."""

    def __init__(self, status: int, code: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        body = {"error": {"code": self.code, "message": self.message}}
        return _json(body, status=self.status, headers=headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _cipher(tls: ssl.SSLObject | None) -> str | None:
    """A connection's TLS version and cipher, or None for plain HTTP."""
    if tls is None or (cipher := tls.cipher()) is None:
        return None
    return f"{tls.version()} {cipher[0]}"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class ChertSimulator:
    """Chert's API and its state. `app()` gives the aiohttp application."""

    def __init__(
        self,
        secret: str,
        *,
        tenant: str | None = None,
        store_bodies: bool = True,
        storage_dir: Path | None = None,
    ) -> None:
        self.secret = secret
        self.tenant = tenant
        self.store_bodies = store_bodies
        self.state = SimulatorState()
        self._storage_dir = storage_dir
        self._owns_storage = storage_dir is None
        self.idle = IdleDropper()

    @property
    def faults(self) -> Faults:
        return self.state.faults

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._drop_idle, self._record_and_map_errors])
        app[STATE_KEY] = self.state
        app.cleanup_ctx.append(self._storage)
        app.router.add_post("/api/v1/attachments", self.create_attachment)
        app.router.add_put("/api/v1/attachments/{attachment_id}/upload", self.upload)
        app.router.add_get("/api/v1/attachments/{attachment_id}", self.get_attachment)
        app.router.add_get("/api/v1/attachments/{attachment_id}/content", self.get_content)
        app.router.add_post("/api/v1/chats", self.create_chat)
        app.router.add_post("/api/v1/chats/{chat_id}/messages", self.send_message)
        app.router.add_get("/_simulator/faults", self.control_get_faults)
        app.router.add_post("/_simulator/faults", self.control_set_faults)
        app.router.add_get("/_simulator/requests", self.control_requests)
        app.router.add_post("/_simulator/reset", self.control_reset)
        return app

    async def _storage(self, app: web.Application) -> AsyncIterator[None]:
        if self._storage_dir is None:
            self._storage_dir = Path(tempfile.mkdtemp(prefix="chert-simulator-"))
        yield
        if self._owns_storage:
            shutil.rmtree(self._storage_dir, ignore_errors=True)

    # -- plumbing -----------------------------------------------------------

    @web.middleware
    async def _drop_idle(self, request: web.Request, handler: ChertHandler) -> web.StreamResponse:
        self.idle.request_started(request)
        try:
            return await handler(request)
        finally:
            faults = self.faults
            self.idle.request_ended(request, faults.drop_idle_after_seconds, faults.drop_idle_how)

    @web.middleware
    async def _record_and_map_errors(
        self, request: web.Request, handler: ChertHandler
    ) -> web.StreamResponse:
        if request.path.startswith("/_simulator/"):
            return await handler(request)
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        tls = transport.get_extra_info("ssl_object") if transport else None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=list(request.headers.items()),
            peer=(str(peer[0]), int(peer[1])) if peer else None,
            tls=request.secure,
            tls_resumed=bool(tls is not None and tls.session_reused),
            tls_cipher=_cipher(tls),
        )
        request[RECORD_KEY] = record
        self.state.requests.append(record)
        try:
            response = await handler(request)
        except ChertError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            response = ChertError(exc.status, NOT_FOUND, exc.reason).response()
        record.status = response.status
        return response

    def _authorize(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.secret.encode()
        ):
            # "HMAC is not supported on the binary upload route. Use bearer auth."
            raise ChertError(401, UNAUTHORIZED, "missing or invalid bearer token")

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        record = request[RECORD_KEY]
        record.body_bytes, record.body_complete = len(raw), True
        try:
            body = record.json = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ChertError(400, INVALID, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ChertError(400, INVALID, "request body must be a JSON object")
        return body

    def _canned(self, request: web.Request, call: str) -> web.Response | None:
        """The next canned answer for `call`, if a test asked for one."""
        queue = self.faults.canned.get(call)
        if not queue:
            return None
        answer = queue.pop(0)
        quoted = request.headers.get("Authorization", "")

        def fill(value: Any) -> Any:
            if isinstance(value, str):
                return value.replace("{authorization}", quoted)
            if isinstance(value, dict):
                return {fill(k): fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value

        headers = fill(answer.get("headers") or {})
        body = answer.get("body")
        if isinstance(body, str):
            return web.Response(status=answer["status"], text=fill(body), headers=headers)
        return _json(fill(body), status=answer["status"], headers=headers)

    def _attachment(self, request: web.Request) -> Attachment:
        attachment = self.state.attachments.get(request.match_info["attachment_id"])
        if attachment is None:
            raise ChertError(404, NOT_FOUND, "attachment not found")
        return attachment

    # -- POST /api/v1/attachments ------------------------------------------

    async def create_attachment(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._json_body(request)
        if (canned := self._canned(request, "create")) is not None:
            return canned
        faults = self.faults
        if faults.create_delay_seconds:
            await asyncio.sleep(faults.create_delay_seconds)
        if faults.redirect_creates_to:
            return web.Response(status=307, headers={"Location": faults.redirect_creates_to})
        if faults.drop_creates > 0 and request.transport is not None:
            faults.drop_creates -= 1
            request.transport.abort()
            return web.Response()  # never written: the connection is gone
        if faults.fail_creates > 0:
            faults.fail_creates -= 1
            return web.Response(
                status=503,
                text="503 Service Temporarily Unavailable",
                headers={"Retry-After": str(faults.retry_after_seconds)},
            )
        for name in ("filename", "content_type", "size_bytes"):
            if body.get(name) in (None, ""):
                raise ChertError(400, MISSING_FIELD, f"missing required field: {name}")
        filename, content_type, size = body["filename"], body["content_type"], body["size_bytes"]
        if not isinstance(filename, str) or not isinstance(content_type, str):
            raise ChertError(400, INVALID, "filename and content_type must be strings")
        if not media.is_supported(content_type):
            raise ChertError(400, INVALID, f"unsupported MIME type: {content_type}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ChertError(400, INVALID, "size_bytes must be a positive integer")
        if size > MAX_UPLOAD_BYTES:
            raise ChertError(
                400, INVALID, f"size_bytes {size} is over the {MAX_UPLOAD_BYTES}-byte limit"
            )
        now = time.time()
        attachment = Attachment(
            attachment_id=uuid.uuid4().hex,
            filename=filename,
            content_type=content_type,
            size_bytes=size,
            created_at=now,
            expires_at=now + faults.slot_ttl_seconds,
        )
        self.state.attachments[attachment.attachment_id] = attachment
        origin = URL(faults.upload_origin) if faults.upload_origin else request.url.origin()
        upload_url = origin.with_path(f"/api/v1/attachments/{attachment.attachment_id}/upload")
        return _json(
            {
                "attachment_id": attachment.attachment_id,
                "upload_url": str(upload_url),
                "required_headers": {
                    "authorization": SECRET_PLACEHOLDER,
                    "content-type": content_type,
                    **faults.extra_required_headers,
                },
                "expires_at": _iso(attachment.expires_at),
            }
        )

    # -- PUT upload_url ----------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        self._authorize(request)
        if (canned := self._canned(request, "upload")) is not None:
            return canned
        attachment = self._attachment(request)
        if time.time() > attachment.expires_at:
            raise ChertError(400, INVALID, "upload slot has expired; create a new one")
        if request.content_length is None:
            raise ChertError(411, INVALID, "Content-Length is required")
        if request.content_length > attachment.size_bytes:
            # Fast reject, before a byte of the body is read.
            raise ChertError(
                413,
                INVALID,
                f"Content-Length {request.content_length} exceeds the registered "
                f"size_bytes {attachment.size_bytes}",
            )
        if request.content_length != attachment.size_bytes:
            raise ChertError(
                400,
                INVALID,
                f"Content-Length {request.content_length} does not match the "
                f"registered size_bytes {attachment.size_bytes}",
            )
        declared = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if declared != attachment.content_type:
            raise ChertError(
                400,
                INVALID,
                f"Content-Type {declared or '(none)'} does not match the registered "
                f"{attachment.content_type}",
            )
        digest, path = await self._receive_body(request, attachment)
        if digest is None:
            # The connection was reset or the body broke off: nothing is stored.
            return web.Response(status=400)
        attachment.uploaded_at, attachment.sha256, attachment.path = time.time(), digest, path
        return _json({"attachment": self._metadata(attachment)})

    async def _receive_body(
        self, request: web.Request, attachment: Attachment
    ) -> tuple[str | None, Path | None]:
        """Stream the body to disk (or nowhere) while hashing it."""
        record = request[RECORD_KEY]
        faults = self.faults
        reset_after, faults.reset_put_after_bytes = faults.reset_put_after_bytes, None
        stall_for, faults.stall_put_seconds = faults.stall_put_seconds, 0.0
        stall_after = faults.stall_put_after_bytes
        # Discarding (benchmarks) reads as fast as it can: no hash either.
        hasher = hashlib.sha256() if self.store_bodies else None
        path = None
        if self.store_bodies:
            assert self._storage_dir is not None
            path = self._storage_dir / attachment.attachment_id
        sink = await aiofiles.open(path, "wb") if path else None
        try:
            while True:
                if stall_for and record.body_bytes >= stall_after:
                    await asyncio.sleep(stall_for)
                    stall_for = 0.0
                chunk = await request.content.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                record.body_bytes += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                if sink is not None:
                    await sink.write(chunk)
                if reset_after is not None and record.body_bytes >= reset_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return None, None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            # aiohttp raises several kinds for a body that breaks off.
            del exc
            return None, None
        finally:
            if sink is not None:
                await sink.close()
        if record.body_bytes != attachment.size_bytes:
            return None, None
        record.body_complete = True
        return (hasher.hexdigest() if hasher is not None else ""), path

    # -- GET metadata and content ------------------------------------------

    def _metadata(self, attachment: Attachment) -> dict[str, Any]:
        return {
            "attachment_id": attachment.attachment_id,
            "content_type": attachment.content_type,
            "size_bytes": attachment.size_bytes,
            "filename": attachment.filename,
            "uploaded_at": _iso(attachment.uploaded_at),
            "expires_at": _iso(attachment.expires_at),
        }

    async def get_attachment(self, request: web.Request) -> web.Response:
        self._authorize(request)
        if (canned := self._canned(request, "metadata")) is not None:
            return canned
        return _json({"attachment": self._metadata(self._attachment(request))})

    async def get_content(self, request: web.Request) -> web.StreamResponse:
        self._authorize(request)
        if self.tenant is not None and request.headers.get("x-chert-tenant") != self.tenant:
            raise ChertError(404, NOT_FOUND, "attachment not found for this tenant")
        attachment = self._attachment(request)
        if attachment.path is None:
            raise ChertError(404, NOT_FOUND, "attachment has no stored content")
        # FileResponse streams from disk (sendfile where it can).
        return web.FileResponse(attachment.path, headers={"Content-Type": attachment.content_type})

    # -- POST /api/v1/chats ---------------------------------------------------

    async def create_chat(self, request: web.Request) -> web.Response:
        """A chat with `to` (the recipients' handles), and optionally a first
        message: text only for a group, as Chert's caveat says."""
        self._authorize(request)
        body = await self._json_body(request)
        handles = body.get("to")
        if not handles:
            raise ChertError(400, MISSING_FIELD, "to: the recipients' handles are required")
        if not isinstance(handles, list) or not all(isinstance(h, str) and h for h in handles):
            raise ChertError(400, INVALID, "to must be a list of handles")
        shape = None
        if "message" in body:
            try:
                shape = check_send_body(body)
            except ShapeError as exc:
                raise ChertError(400, MISSING_FIELD if exc.missing else INVALID, str(exc)) from None
            if len(handles) > 1 and any(p.get("type") != "text" for p in shape.parts):
                raise ChertError(
                    400, INVALID, "create the group with text first, then send media or links"
                )
            self._check_media(shape)
        chat_id = str(uuid.uuid4())
        chat = {"id": chat_id, "handles": handles, "created_at": _iso(time.time())}
        self.state.chats[chat_id] = chat
        first = self._record_message(chat_id, shape.parts, body) if shape else None
        return _json({"chat": chat, "message": first})

    # -- POST /api/v1/chats/{chat_id}/messages ------------------------------

    async def send_message(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._json_body(request)
        if (canned := self._canned(request, "send")) is not None:
            return canned
        chat_id = request.match_info["chat_id"]
        if chat_id not in self.state.chats:
            raise ChertError(404, NOT_FOUND, "chat not found")
        faults = self.faults
        if faults.send_delay_seconds:
            await asyncio.sleep(faults.send_delay_seconds)
        try:
            shape = check_send_body(body)
        except ShapeError as exc:
            raise ChertError(400, MISSING_FIELD if exc.missing else INVALID, str(exc)) from None
        key = shape.idempotency_key
        if key and key in self.state.messages_by_key:
            return _json({"message": self.state.messages_by_key[key]})
        parts = shape.parts
        self._check_media(shape)
        if faults.fail_sends > 0:
            faults.fail_sends -= 1
            code = faults.fail_send_code
            status, text = DOCUMENTED_ERRORS.get(code, (500, "simulated failure"))
            status = faults.fail_send_status or status
            retry_after = faults.retry_after_seconds if status in (429, 503) else None
            raise ChertError(status, code, text, retry_after=retry_after)
        sent = self._record_message(chat_id, parts, body)
        if key:
            self.state.messages_by_key[key] = sent
        return _json({"message": sent})

    def _record_message(
        self, chat_id: str, parts: list[dict[str, Any]], body: dict[str, Any]
    ) -> dict[str, Any]:
        sent = {
            "id": uuid.uuid4().hex,
            "chat_id": chat_id,
            "parts": parts,
            "status": "sent",
            "direction": "outbound",
            "created_at": _iso(time.time()),
            "delivered_at": None,
            "read_at": None,
            "service": "imessage",
        }
        self.state.messages.append(sent)
        self.state.send_bodies.append(body)
        return sent

    def _check_media(self, shape: SendBody) -> None:
        """What only Chert knows: is each attachment uploaded, is it an image?"""
        for attachment_id in shape.media_ids:
            attachment = self.state.attachments.get(attachment_id)
            if attachment is None or attachment.uploaded_at is None:
                raise ChertError(400, INVALID, f"attachment {attachment_id} is not fully uploaded")
            if shape.parallel_attachments and attachment.content_type not in media.IMAGE_TYPES:
                raise ChertError(
                    400,
                    INVALID,
                    f"parallel_attachments takes images only; {attachment_id} "
                    f"is {attachment.content_type}",
                )

    # -- control surface -----------------------------------------------------

    async def control_get_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults.to_json())

    async def control_set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValueError, TypeError, AttributeError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(self.faults.to_json())

    async def control_requests(self, request: web.Request) -> web.Response:
        return _json([r.to_json() for r in self.state.requests])

    async def control_reset(self, request: web.Request) -> web.Response:
        faults = type(self.faults)()
        self.state.faults = faults
        self.state.requests.clear()
        return _json(faults.to_json())
