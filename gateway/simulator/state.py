"""What the simulator remembers: attachments, sent messages, every request
it saw, and the faults a test has asked for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.simulator.idle import DROP_WAYS, DropHow

# The chat id Chert's pages use in their examples.
DOCS_CHAT_ID = "0f2d3c1a-8b4e-4f6a-90d2-1a3b4c5d6e7f"


@dataclass
class Attachment:
    attachment_id: str
    filename: str
    content_type: str
    size_bytes: int
    created_at: float
    expires_at: float
    uploaded_at: float | None = None
    sha256: str | None = None
    path: Path | None = None  # None when bodies are discarded


@dataclass
class RecordedRequest:
    """One request as it crossed the wire, for tests to assert on."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body_bytes: int = 0
    body_complete: bool = False
    status: int | None = None
    json: Any = None  # the parsed body of JSON calls
    # The caller's (host, port): one per connection, so tests can count them.
    peer: tuple[str, int] | None = None
    tls: bool = False
    # True when the connection's TLS handshake resumed an earlier session.
    tls_resumed: bool = False
    # The connection's TLS version and cipher, as "TLSv1.3 TLS_AES_256_GCM_SHA384".
    tls_cipher: str | None = None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Faults:
    """Misbehaviour on demand. One-shot faults are consumed by the request they hit."""

    # The next N sends fail with this documented code, at its documented status:
    # 3002 → 503 with Retry-After, 4001 → 502, 1002/1003 → 400.
    fail_sends: int = 0
    fail_send_code: int = 3002
    # Answer the failed sends with this HTTP status instead (429, say).
    fail_send_status: int | None = None
    retry_after_seconds: int = 0
    # The next N slot creations get a bare 503 (a load balancer's answer, no JSON).
    fail_creates: int = 0
    # The next N slot creations lose their connection without an answer.
    drop_creates: int = 0
    # Seconds to wait before answering a slot creation / a send.
    create_delay_seconds: float = 0.0
    send_delay_seconds: float = 0.0
    # One-shot: the next PUT's connection is reset after this many body bytes.
    reset_put_after_bytes: int | None = None
    # One-shot: the next PUT stops reading for this long after this many bytes.
    stall_put_seconds: float = 0.0
    stall_put_after_bytes: int = 0
    # Answer slot creations with a 307 to this URL.
    redirect_creates_to: str | None = None
    # Hand out upload_urls on this origin instead of the simulator's own.
    upload_origin: str | None = None
    # Slot lifetime; Chert's is 15 minutes.
    slot_ttl_seconds: float = 15 * 60
    # One-shot answers given instead of the real ones, by call ("create",
    # "upload", "send", "metadata"): each {"status": int, "body": JSON, "headers": {...}}.
    # "{authorization}" in any of their strings becomes the request's
    # Authorization header: an upstream (or a proxy) that quotes the request.
    canned: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Merged into the slot answer's required_headers.
    extra_required_headers: dict[str, str] = field(default_factory=dict)
    # Keep-alive connections idle this long are dropped, "close" (a FIN) or
    # "forget" (nothing sent; the next request on one is reset): idle.py.
    drop_idle_after_seconds: float | None = None
    drop_idle_how: DropHow = "close"

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {sorted(known)}")
            if name == "drop_idle_how" and value not in DROP_WAYS:
                raise ValueError(f"drop_idle_how is one of {DROP_WAYS}, not {value!r}")
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _documented_chats() -> dict[str, dict[str, Any]]:
    """The chat Chert's own pages use in their examples: it always exists."""
    return {DOCS_CHAT_ID: {"id": DOCS_CHAT_ID, "handles": [], "created_at": None}}


@dataclass
class SimulatorState:
    attachments: dict[str, Attachment] = field(default_factory=dict)
    # chat id → the chat: the documented example, and those made by POST /api/v1/chats
    chats: dict[str, dict[str, Any]] = field(default_factory=_documented_chats)
    # idempotency_key → the message answered the first time
    messages_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    # The JSON bodies of the sends that were accepted, as they came.
    send_bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)

    def requests_to(self, method: str, path_fragment: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_fragment in r.path]
