"""Chert's documented shape of a send body (send-follow-up-message.md,
attachments.md), in one place.

    {"message": {"parts": [...], "idempotency_key": "..."},
     "parallel_attachments": true}

The gateway checks a caller's JSON against it before calling Chert (400);
the simulator checks what reaches it (1003 for a missing field, 1002 for a
bad shape). What only Chert can know (is that attachment uploaded? is it an
image?) is the simulator's own business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PART_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    # type: (required fields, optional fields)
    "text": ({"value"}, set()),
    "media": ({"attachment_id"}, set()),
    "rich_link": ({"url"}, {"title", "summary", "image_url", "icon_url"}),
}
URL_RE = re.compile(r"^https?://[^\s/]+\S*$")
MAX_PARTS = 50


class ShapeError(ValueError):
    """`missing` tells a missing field (Chert's 1003) from a bad one (1002)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class SendBody:
    parts: list[dict[str, Any]]
    parallel_attachments: bool | None
    idempotency_key: str | None

    @property
    def media_ids(self) -> list[str]:
        return [p["attachment_id"] for p in self.parts if p["type"] == "media"]


def check_send_body(body: Any) -> SendBody:
    if not isinstance(body, dict):
        raise ShapeError("the body must be a JSON object")
    if "parts" in body:
        # send-follow-up-message.md: "Top-level parts will be rejected."
        raise ShapeError("the body is wrapped in message; top-level parts are rejected")
    message = body.get("message")
    if message is None:
        raise ShapeError("missing required field: message", missing=True)
    if not isinstance(message, dict):
        raise ShapeError("message must be an object")
    key = message.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ShapeError("message.idempotency_key must be a non-empty string")
    parts = check_parts(message.get("parts"))
    parallel = body.get("parallel_attachments")
    if parallel is not None and not isinstance(parallel, bool):
        raise ShapeError("parallel_attachments must be true or false")
    if parallel and sum(p["type"] == "media" for p in parts) < 2:
        raise ShapeError("parallel_attachments needs 2 or more media parts")
    return SendBody(parts, parallel, key)


def check_parts(parts: Any) -> list[dict[str, Any]]:
    if parts is None:
        raise ShapeError("missing required field: message.parts", missing=True)
    if not isinstance(parts, list) or not parts:
        raise ShapeError("message.parts must be a non-empty array")
    if len(parts) > MAX_PARTS:
        raise ShapeError(f"message.parts holds more than {MAX_PARTS} parts; split the send")
    for index, part in enumerate(parts):
        _check_part(part, f"message.parts[{index}]")
    return parts


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise ShapeError(f"{where} must be an object")
    kind = part.get("type")
    if kind is None:
        raise ShapeError(f"missing required field: {where}.type", missing=True)
    if kind not in PART_FIELDS:
        raise ShapeError(f"{where}.type must be one of {', '.join(PART_FIELDS)}")
    required, optional = PART_FIELDS[kind]
    for name in sorted(required):
        value = part.get(name)
        if value is None or value == "":
            raise ShapeError(f"missing required field: {where}.{name}", missing=True)
    unknown = set(part) - required - optional - {"type"}
    if unknown:
        raise ShapeError(f"{where} has fields a {kind} part does not take: {sorted(unknown)}")
    for name in required | (optional & set(part)):
        if not isinstance(part[name], str):
            raise ShapeError(f"{where}.{name} must be a string")
    if kind == "rich_link" and not URL_RE.match(part["url"]):
        raise ShapeError(f"{where}.url must be an http(s) URL")
