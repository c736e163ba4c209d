"""Chert's media table: which MIME types it takes, their file extensions, and
how to name a type that a caller spelt differently.

The table is chert-api/attachments.md's "Supported uploads"; the gateway and
the simulator both read it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class FileMeta:
    """What a file is: its clean name and Chert's spelling of its type."""

    filename: str
    content_type: str


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


# -- content sniffing -----------------------------------------------------------
#
# The first bytes of a file say what it is. A file whose bytes contradict the
# type it was declared with is refused before Chert is called: Chert would
# take it, and the recipient would get a broken bubble.

SNIFF_BYTES = 64

# ISO base media brands that mean HEIF/HEIC stills rather than video or audio.
HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


def _ftyp_brand(head: bytes) -> bytes | None:
    """The major brand of an ISO base media file (MP4, MOV, M4A, HEIF), if it is one."""
    return head[8:12] if head[4:8] == b"ftyp" and len(head) >= 12 else None


def _is_iso_media(head: bytes) -> bool:
    brand = _ftyp_brand(head)
    return brand is not None and brand not in HEIF_BRANDS


def _is_heif(head: bytes) -> bool:
    return _ftyp_brand(head) in HEIF_BRANDS


def _is_mpeg_audio(head: bytes) -> bool:
    if head.startswith(b"ID3"):
        return True
    # Frame sync (11 bits), and a layer that is not 00 (00 is AAC's ADTS).
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06 != 0


def _is_aac(head: bytes) -> bool:
    adts = len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0
    return adts or head.startswith(b"ADIF")


def _is_riff(head: bytes, kind: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == kind


_SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "image/jpeg": lambda h: h.startswith(b"\xff\xd8\xff"),
    "image/png": lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/gif": lambda h: h.startswith((b"GIF87a", b"GIF89a")),
    "image/webp": lambda h: _is_riff(h, b"WEBP"),
    "image/heic": _is_heif,
    "image/heif": _is_heif,
    "video/mp4": _is_iso_media,
    "video/quicktime": lambda h: _is_iso_media(h) or h[4:8] in QUICKTIME_ATOMS,
    "audio/mpeg": _is_mpeg_audio,
    "audio/m4a": _is_iso_media,
    "audio/wav": lambda h: _is_riff(h, b"WAVE"),
    "audio/aac": _is_aac,
    # PDF readers accept junk before the header; so does this.
    "application/pdf": lambda h: b"%PDF-" in h,
}


def content_matches(content_type: str, head: bytes) -> bool:
    """Do the file's first bytes fit its declared (supported) type?"""
    return bool(_SIGNATURES[content_type](head))
