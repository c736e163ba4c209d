"""Chert's media table: which MIME types it takes, their file extensions, and
how to name a type that a caller spelt differently.

The table is chert-api/attachments.md's "Supported uploads"; the gateway and
the simulator both read it from here.
"""

from __future__ import annotations

# Chert's supported upload types, each with its usual extensions (first = the
# one used to name a file that came without a name).
SUPPORTED_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": (".jpg", ".jpeg", ".jpe"),
    "image/png": (".png",),
    "image/gif": (".gif",),
    "image/heic": (".heic",),
    "image/heif": (".heif",),
    "image/webp": (".webp",),
    "video/mp4": (".mp4",),
    "video/quicktime": (".mov", ".qt"),
    "audio/mpeg": (".mp3",),
    "audio/m4a": (".m4a",),
    "audio/wav": (".wav",),
    "audio/aac": (".aac",),
    "application/pdf": (".pdf",),
}

# Types Chert groups into one bubble with `parallel_attachments`.
IMAGE_TYPES = frozenset(t for t in SUPPORTED_TYPES if t.startswith("image/"))

# Spellings that tools commonly send for the same thing (Python's mimetypes
# says audio/x-wav, browsers say image/jpg or audio/x-m4a).
ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "audio/mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-m4a": "audio/m4a",
    "audio/mp4": "audio/m4a",
    "audio/x-aac": "audio/aac",
}

# Types that say nothing about the content: curl's --data-binary default and
# the generic binary type. A name's extension says more.
GENERIC_TYPES = frozenset(
    {"", "application/octet-stream", "application/x-www-form-urlencoded", "binary/octet-stream"}
)

_BY_EXTENSION = {ext: mime for mime, exts in SUPPORTED_TYPES.items() for ext in exts}


def normalize(content_type: str) -> str:
    """`Image/JPG; q=1` → `image/jpeg`: lower case, parameters dropped, aliases mapped."""
    base = content_type.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def guess_from_filename(filename: str) -> str | None:
    dot = filename.rfind(".")
    if dot <= 0:
        return None
    return _BY_EXTENSION.get(filename[dot:].lower())


def default_filename(content_type: str) -> str:
    return "attachment" + SUPPORTED_TYPES[content_type][0]


def is_supported(content_type: str) -> bool:
    return content_type in SUPPORTED_TYPES
