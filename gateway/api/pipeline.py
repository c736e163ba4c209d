"""The upload itself: slot → streaming PUT → send, with timings and metrics.

It knows the order of Chert's calls and the promise that ties them: a message
is sent only after every byte of its files reached Chert. It knows nothing of
the caller's HTTP (that is `handlers.py`) nor of Chert's URLs (`chert.py`).

Each call returns a typed result that knows its answer (`to_json`), what the
access log says of it (`log_fields`) and, for idempotency, what its body was
(`body_print`):

    upload()        → UploadedFile   one file at Chert, no message
    send_file()     → SentFile       one file, then its message
    send_message()  → SentMessage    parts (a form's uploaded files among them)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.api.body import HashedBody
from gateway.api.idempotency import file_print
from gateway.chert.client import ChertClient
from gateway.chert.media import FileMeta
from gateway.errors import GatewayError
from gateway.ops import tracing
from gateway.ops.metrics import Metrics


@dataclass(frozen=True)
class Timings:
    create_slot_s: float = 0.0
    upload_s: float = 0.0
    send_s: float = 0.0
    total_s: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {name: round(value, 6) for name, value in vars(self).items()}


class Result(Protocol):
    """What a write route answers, logs and remembers."""

    @property
    def body_print(self) -> str | None: ...

    def to_json(self) -> dict[str, Any]: ...

    def log_fields(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class UploadedFile:
    attachment_id: str
    meta: FileMeta
    size_bytes: int
    sha256: str | None  # None when GATEWAY_SHA256 is off and no key was given
    expires_at: str | None
    timings: Timings  # create_slot_s and upload_s

    def describe(self) -> dict[str, Any]:
        """The file as every answer shows it."""
        return {
            "attachment_id": self.attachment_id,
            "filename": self.meta.filename,
            "content_type": self.meta.content_type,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }

    @property
    def body_print(self) -> str | None:
        return file_print(self.size_bytes, self.sha256) if self.sha256 else None

    def to_json(self) -> dict[str, Any]:
        return {**self.describe(), "expires_at": self.expires_at}

    def log_fields(self) -> dict[str, Any]:
        return _log_fields([self], None, None)


@dataclass(frozen=True)
class SentFile:
    file: UploadedFile
    message: dict[str, Any]
    timings: Timings

    @property
    def body_print(self) -> str | None:
        return self.file.body_print

    def to_json(self) -> dict[str, Any]:
        return {**self.file.describe(), "message": self.message, "timings": self.timings.to_json()}

    def log_fields(self) -> dict[str, Any]:
        return _log_fields([self.file], self.message, self.timings)


@dataclass(frozen=True)
class SentMessage:
    message: dict[str, Any]
    timings: Timings
    # A form's files, each answered with its own timings; None for Chert's
    # own JSON, whose answer has no `attachments`.
    files: list[UploadedFile] | None = None
    body_print: str | None = None

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"message": self.message}
        if self.files is not None:
            answer["attachments"] = [
                {**f.describe(), "timings": f.timings.to_json()} for f in self.files
            ]
        answer["timings"] = self.timings.to_json()
        return answer

    def log_fields(self) -> dict[str, Any]:
        return _log_fields(self.files or [], self.message, self.timings)


def _log_fields(
    files: list[UploadedFile], message: dict[str, Any] | None, timings: Timings | None
) -> dict[str, Any]:
    return {
        "attachment_ids": [f.attachment_id for f in files] or None,
        "size_bytes": sum(f.size_bytes for f in files) if files else None,
        "message_id": (message or {}).get("id"),
        "timings": timings.to_json() if timings is not None else None,
    }


class UploadPipeline:
    def __init__(self, chert: ChertClient, metrics: Metrics) -> None:
        self._chert = chert
        self._metrics = metrics

    async def upload(self, meta: FileMeta, body: HashedBody) -> UploadedFile:
        """Create the slot and stream the body into it; nothing is sent."""
        started = time.perf_counter()
        sized = {"chert_gateway.size_bytes": body.size}
        with phase_span(
            "create_slot", **sized, **{"chert_gateway.content_type": meta.content_type}
        ):
            slot = await self._chert.create_attachment(meta.filename, meta.content_type, body.size)
        slot_done = time.perf_counter()
        self._metrics.phase_seconds.labels("create_slot").observe(slot_done - started)
        try:
            with phase_span(
                "upload", **sized, **{"chert_gateway.attachment_id": slot.attachment_id}
            ):
                await self._chert.upload(slot, body, meta.content_type)
        finally:
            upload_done = time.perf_counter()
            self._metrics.received_bytes.inc(body.received)
        self._observe_upload(body, upload_done - slot_done)
        timings = Timings(create_slot_s=slot_done - started, upload_s=upload_done - slot_done)
        return UploadedFile(
            slot.attachment_id, meta, body.size, await body.sha256(), slot.expires_at, timings
        )

    def _observe_upload(self, body: HashedBody, seconds: float) -> None:
        """Per upload, never per chunk: the hot path stays free of metrics."""
        metrics = self._metrics
        metrics.phase_seconds.labels("upload").observe(seconds)
        metrics.upstream_bytes.inc(body.size)
        metrics.upload_size.observe(body.size)
        if seconds > 0:
            metrics.upload_throughput.observe(body.size / seconds)
        received, sent = body.first_byte_received_at, body.first_byte_sent_at
        if received is not None and sent is not None:
            mode = "spooled" if body.replayable else "streamed"
            metrics.first_byte_relay.labels(mode).observe(max(0.0, sent - received))

    async def send_file(
        self,
        chat_id: str,
        meta: FileMeta,
        body: HashedBody,
        *,
        caption: str | None,
        idempotency_key: str,
    ) -> SentFile:
        """One file, one message: the single-file route's whole job."""
        started = time.perf_counter()
        uploaded = await self.upload(meta, body)
        # Only now, with every byte at Chert, may the message go.
        parts: list[dict[str, Any]] = []
        if caption:
            parts.append({"type": "text", "value": caption})
        parts.append({"type": "media", "attachment_id": uploaded.attachment_id})
        message, send_s = await self._send(chat_id, parts, idempotency_key, None)
        timings = Timings(
            create_slot_s=uploaded.timings.create_slot_s,
            upload_s=uploaded.timings.upload_s,
            send_s=send_s,
            total_s=time.perf_counter() - started,
        )
        return SentFile(uploaded, message, timings)

    async def send_message(
        self,
        chat_id: str,
        parts: list[dict[str, Any]],
        idempotency_key: str,
        *,
        started: float,
        parallel_attachments: bool | None = None,
        files: list[UploadedFile] | None = None,
        body_print: str | None = None,
    ) -> SentMessage:
        """Send parts whose media (a form's `files`) are all at Chert already;
        `started` is when the request began, for its total time."""
        message, send_s = await self._send(chat_id, parts, idempotency_key, parallel_attachments)
        timings = Timings(send_s=send_s, total_s=time.perf_counter() - started)
        return SentMessage(message, timings, files, body_print)

    async def _send(
        self,
        chat_id: str,
        parts: list[dict[str, Any]],
        idempotency_key: str,
        parallel_attachments: bool | None,
    ) -> tuple[dict[str, Any], float]:
        payload: dict[str, Any] = {"message": {"parts": parts}}
        if parallel_attachments is not None:
            payload["parallel_attachments"] = parallel_attachments
        started = time.perf_counter()
        with phase_span("send", **{"chert_gateway.parts": len(parts)}) as span:
            message = await self._chert.send_message(chat_id, payload, idempotency_key)
            tracing.set_attributes(span, **{"chert_gateway.message_id": message.get("id")})
        elapsed = time.perf_counter() - started
        self._metrics.phase_seconds.labels("send").observe(elapsed)
        return message, elapsed


@contextmanager
def phase_span(phase: str, **attributes: Any) -> Iterator[Any]:
    """A span for one phase (its calls to Chert, retries included), marked
    with the gateway's error code and Chert's when the phase fails."""
    if not tracing.enabled():
        yield None
        return
    with tracing.span(f"chert {phase}", **{"chert_gateway.phase": phase, **attributes}) as span:
        try:
            yield span
        except GatewayError as exc:
            tracing.set_attributes(span, **{"chert.code": exc.chert_code})
            tracing.failed(span, exc.code, exc.message)
            raise
