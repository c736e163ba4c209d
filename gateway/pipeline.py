"""The upload itself: slot → streaming PUT → send, with timings and metrics.

It knows the order of Chert's calls and the promise that ties them: a message
is sent only after every byte of its files reached Chert. It knows nothing of
the caller's HTTP (that is `handlers.py`) nor of Chert's URLs (`chert.py`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.chert import ChertClient, UploadBody
from gateway.intake import FileMeta
from gateway.metrics import Metrics


class HashedBody(UploadBody, Protocol):
    @property
    def received(self) -> int: ...

    # time.perf_counter() of the first byte from the caller, and to Chert.
    @property
    def first_byte_received_at(self) -> float | None: ...

    @property
    def first_byte_sent_at(self) -> float | None: ...

    @property
    def sha256(self) -> str | None: ...


@dataclass
class Timings:
    create_slot_s: float = 0.0
    upload_s: float = 0.0
    send_s: float = 0.0
    total_s: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {name: round(value, 6) for name, value in vars(self).items()}


@dataclass
class UploadedFile:
    attachment_id: str
    meta: FileMeta
    size_bytes: int
    sha256: str | None  # None when GATEWAY_SHA256 is off
    expires_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "attachment_id": self.attachment_id,
            "filename": self.meta.filename,
            "content_type": self.meta.content_type,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }


class UploadPipeline:
    def __init__(self, chert: ChertClient, metrics: Metrics) -> None:
        self._chert = chert
        self._metrics = metrics

    async def upload(self, meta: FileMeta, body: HashedBody, timings: Timings) -> UploadedFile:
        """Create the slot and stream the body into it; nothing is sent."""
        started = time.perf_counter()
        slot = await self._chert.create_attachment(meta.filename, meta.content_type, body.size)
        slot_done = time.perf_counter()
        timings.create_slot_s += slot_done - started
        self._metrics.phase_seconds.labels("create_slot").observe(slot_done - started)
        try:
            await self._chert.upload(slot, body, meta.content_type)
        finally:
            upload_done = time.perf_counter()
            timings.upload_s += upload_done - slot_done
            self._metrics.received_bytes.inc(body.received)
        self._observe_upload(body, upload_done - slot_done)
        return UploadedFile(slot.attachment_id, meta, body.size, body.sha256, slot.expires_at)

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

    async def send(
        self,
        chat_id: str,
        parts: list[dict[str, Any]],
        idempotency_key: str,
        timings: Timings,
        parallel_attachments: bool | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"message": {"parts": parts}}
        if parallel_attachments is not None:
            payload["parallel_attachments"] = parallel_attachments
        started = time.perf_counter()
        message = await self._chert.send_message(chat_id, payload, idempotency_key)
        elapsed = time.perf_counter() - started
        timings.send_s += elapsed
        self._metrics.phase_seconds.labels("send").observe(elapsed)
        return message

    async def send_file(
        self,
        chat_id: str,
        meta: FileMeta,
        body: HashedBody,
        *,
        caption: str | None,
        idempotency_key: str,
    ) -> dict[str, Any]:
        """One file, one message: the single-file route's whole job."""
        started = time.perf_counter()
        timings = Timings()
        uploaded = await self.upload(meta, body, timings)
        # Only now, with every byte at Chert, may the message go.
        parts: list[dict[str, Any]] = []
        if caption:
            parts.append({"type": "text", "value": caption})
        parts.append({"type": "media", "attachment_id": uploaded.attachment_id})
        message = await self.send(chat_id, parts, idempotency_key, timings)
        timings.total_s = time.perf_counter() - started
        return {**uploaded.to_json(), "message": message, "timings": timings.to_json()}
