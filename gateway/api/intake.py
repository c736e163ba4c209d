"""From a caller's request to what its route needs, checked before a byte of
the body is read: one call per route (`upload_request`, `message_request`,
`attachment_id`), each a value or a 4xx.

Filename order (SPEC): Content-Disposition (RFC 6266, `filename*` too), then
X-Filename, then the `filename` query parameter, then a name made from the
MIME type. Only the base name is kept; control characters are refused.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.multipart import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    content_disposition_filename,
    parse_content_disposition,
)

from gateway.chert import media
from gateway.chert.media import FileMeta
from gateway.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

# Chert's ids (chats, attachments) are UUIDs, hex or prefixed hex (in_536f…): allow any plain
# token, refuse anything that could change the path it is put into.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
MAX_FILENAME_BYTES = 255

MAX_CAPTION_CHARS = 10_000


@dataclass(frozen=True)
class UploadRequest:
    """An upload as its headers and query describe it, before its body."""

    chat_id: str | None  # None on the upload-only route
    key: str | None  # the caller's Idempotency-Key
    caption: str | None
    meta: FileMeta
    size: int | None  # None for a chunked body


@dataclass(frozen=True)
class MessageRequest:
    chat_id: str
    key: str | None
    kind: str  # "json" or "form"


def upload_request(request: web.Request, max_bytes: int) -> UploadRequest:
    """Everything an upload route needs to know before the body, or a 4xx."""
    to_chat = "chat_id" in request.match_info
    chat = chat_id(request) if to_chat else None
    check_encoding(request)
    return UploadRequest(
        chat_id=chat,
        key=idempotency_key(request),
        caption=caption(request) if to_chat else None,
        meta=file_meta(request),
        size=declared_size(request, max_bytes),
    )


def message_request(request: web.Request) -> MessageRequest:
    """The send-message route's chat, key and kind of body, or a 4xx."""
    chat = chat_id(request)
    check_encoding(request)
    key = idempotency_key(request)
    # Not request.content_type: aiohttp parses it with the email package,
    # which builds new classes, in reference cycles, on every call.
    declared = media.normalize(request.headers.get(hdrs.CONTENT_TYPE, ""))
    kinds = {"application/json": "json", "multipart/form-data": "form"}
    if declared not in kinds:
        raise UnsupportedMediaTypeError(
            "send application/json (Chert's message shape) or multipart/form-data (files)"
        )
    return MessageRequest(chat, key, kinds[declared])


def is_form(request: web.Request) -> bool:
    """A multipart/form-data body (what `requests.post(files=…)` and `curl -F` send)."""
    return media.normalize(request.headers.get(hdrs.CONTENT_TYPE, "")) == "multipart/form-data"


def chat_id(request: web.Request) -> str:
    value = request.match_info["chat_id"]
    if not ID_RE.match(value):
        raise InvalidRequestError(
            "chat_id must be 1-128 letters, digits, '-' or '_' (the chat.id Chert returned)"
        )
    return value


def attachment_id(request: web.Request) -> str:
    value = request.match_info["attachment_id"]
    if not ID_RE.match(value):
        raise InvalidRequestError("attachment_id must be 1-128 letters, digits, '-' or '_'")
    return value


def idempotency_key(request: web.Request) -> str | None:
    """The caller's key (header, then query); None when it gave none."""
    key = request.headers.get("Idempotency-Key") or request.query.get("idempotency_key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise InvalidRequestError("Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def caption(request: web.Request) -> str | None:
    text = request.query.get("text")
    if text is None or text == "":
        return None
    if len(text) > MAX_CAPTION_CHARS:
        raise InvalidRequestError(f"text is over {MAX_CAPTION_CHARS} characters")
    return text


def clean_filename(raw: str) -> str:
    """The base name of `raw`, refused if it holds control characters or is
    not text (aiohttp hands on undecodable header bytes as lone surrogates)."""
    categories = {unicodedata.category(ch) for ch in raw}
    if "Cc" in categories:
        raise InvalidRequestError("filename contains control characters")
    if "Cs" in categories or "\ufffd" in raw:
        raise InvalidRequestError("filename is not valid UTF-8")
    name = re.split(r"[/\\]", raw)[-1].strip()
    if name in ("", ".", ".."):
        raise InvalidRequestError(f"filename {raw!r} has no base name")
    if len(name.encode()) > MAX_FILENAME_BYTES:
        raise InvalidRequestError(f"filename is over {MAX_FILENAME_BYTES} bytes")
    return name


def disposition_param(value: str | None, name: str) -> str | None:
    """A Content-Disposition parameter (`filename`, `name`) as RFC 6266 reads
    it, `filename*` first; 400 for a header aiohttp's parser finds malformed
    (it warns and drops the parameter, which would hide the caller's name)."""
    if not value:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadContentDispositionParam)
        warnings.simplefilter("error", BadContentDispositionHeader)
        try:
            _, params = parse_content_disposition(value)
        except (BadContentDispositionParam, BadContentDispositionHeader):
            raise InvalidRequestError(
                "Content-Disposition is malformed (RFC 6266); filename*=UTF-8''… "
                "must be percent-encoded UTF-8"
            ) from None
    return content_disposition_filename(params, name)


def _given_filename(request: web.Request) -> str | None:
    name = disposition_param(request.headers.get(hdrs.CONTENT_DISPOSITION), "filename")
    if name:
        return name
    return request.headers.get("X-Filename") or request.query.get("filename") or None


def file_meta(request: web.Request) -> FileMeta:
    """Name and MIME type from the request's headers; 415 when Chert would not
    take it. With neither a type nor a telling name, the type is left to the
    file's first bytes (FileMeta.from_content)."""
    return resolve_file_meta(
        _given_filename(request), request.headers.get(hdrs.CONTENT_TYPE, ""), from_content=True
    )


def resolve_file_meta(
    given_filename: str | None, declared_type: str, *, from_content: bool = False
) -> FileMeta:
    """A clean name and Chert's spelling of the type, guessed from the name if
    generic; if there is no name, or it has no extension, left to the
    content when `from_content`, else 415."""
    filename = clean_filename(given_filename) if given_filename is not None else None
    content_type = media.normalize(declared_type)
    if content_type in media.GENERIC_TYPES:
        guessed = media.guess_from_filename(filename) if filename else None
        # A name with an extension Chert does not take (x.exe) says what the
        # file is, and that is refused; a name without one says nothing.
        says_nothing = not filename or media.extension(filename) is None
        if guessed is None and from_content and says_nothing:
            return FileMeta(filename or "", media.FROM_CONTENT)
        if guessed is None:
            raise UnsupportedMediaTypeError(
                "cannot tell the file's type: send its Content-Type, or a filename "
                "with an extension Chert takes"
            )
        content_type = guessed
    if not media.is_supported(content_type):
        raise UnsupportedMediaTypeError(
            f"Chert does not take {content_type}; it takes {', '.join(media.SUPPORTED_TYPES)}"
        )
    return FileMeta(filename or media.default_filename(content_type), content_type)


def check_encoding(request: web.Request) -> None:
    """415 for a body that is encoded (gzip, br…): the gateway neither decodes
    it nor passes on bytes whose size and hash would not describe the file."""
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if coding not in ("", "identity"):
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {coding!r} is not taken: send the file's own bytes, unencoded"
        )
    transfer = request.headers.get(hdrs.TRANSFER_ENCODING)
    if transfer is not None and transfer.strip().lower() != "chunked":
        raise UnsupportedMediaTypeError(
            f"Transfer-Encoding {transfer!r} is not taken: send chunked, or Content-Length"
        )


def declared_size(request: web.Request, limit: int) -> int | None:
    """The body's Content-Length, checked against the limit before it is read.

    None for a chunked body, whose length is known only once it has arrived.
    """
    if request.content_length is None:
        if "chunked" in request.headers.get(hdrs.TRANSFER_ENCODING, "").lower():
            return None
        raise InvalidRequestError("the body is empty; send the file's bytes")
    if request.content_length > limit:
        raise PayloadTooLargeError(
            f"the body is {request.content_length} bytes; the limit is {limit}"
        )
    if request.content_length == 0:
        raise InvalidRequestError("the body is empty; send the file's bytes")
    return request.content_length
