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
    """What a file is: its clean name and Chert's spelling of its type.

    Before its first bytes are read, a file that came with neither a type
    nor a telling name has `content_type` FROM_CONTENT (and, if it came
    without a name, an empty `filename`); `body.settle_type` fills both in.
    """

    filename: str
    content_type: str

    @property
    def from_content(self) -> bool:
        return self.content_type == FROM_CONTENT


FROM_CONTENT = ""


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


def extension(filename: str) -> str | None:
    """`.pdf` for `Invoice.PDF`; None for `README` or `.profile`."""
    dot = filename.rfind(".")
    return filename[dot:].lower() if dot > 0 else None


def guess_from_filename(filename: str) -> str | None:
    ext = extension(filename)
    return None if ext is None else _BY_EXTENSION.get(ext)


def default_filename(content_type: str) -> str:
    return "attachment" + SUPPORTED_TYPES[content_type][0]


def is_supported(content_type: str) -> bool:
    return content_type in SUPPORTED_TYPES


# -- content sniffing -----------------------------------------------------------
#
# The first bytes of a file say what it is. A file whose bytes contradict the
# type it was declared with is refused before Chert is called: Chert would
# take it, and the recipient would get a broken bubble. A file sent with no
# type (or a generic one) and no telling name gets the type its bytes show.

SNIFF_BYTES = 64

# ISO base media files (MP4, MOV, M4A, HEIF, AVIF) share one container: the
# brands in their `ftyp` box say which it is. The major brand first, then the
# compatible ones, as players read them.
MP4_VIDEO_BRANDS = (
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso8", b"mp41", b"mp42",
    b"avc1", b"M4V ", b"M4VH", b"M4VP", b"dash", b"mmp4", b"MSNV", b"XAVC", b"f4v ",
)  # fmt: skip
ISO_BRANDS: dict[bytes, str | None] = {
    **dict.fromkeys(
        (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"), "image/heic"
    ),
    **dict.fromkeys((b"mif1", b"msf1"), "image/heif"),
    **dict.fromkeys((b"M4A ", b"M4B ", b"M4P ", b"F4A "), "audio/m4a"),
    b"qt  ": "video/quicktime",
    **dict.fromkeys(MP4_VIDEO_BRANDS, "video/mp4"),
    # Containers Chert does not take: AVIF stills and 3GPP video.
    **dict.fromkeys((b"avif", b"avis", b"3gp4", b"3gp5", b"3gp6", b"3g2a"), None),
}
# What each declared ISO type may hold: a QuickTime player opens MP4, and
# many M4A encoders write a generic MP4 brand.
ISO_ACCEPTS: dict[str, frozenset[str]] = {
    "image/heic": frozenset({"image/heic", "image/heif"}),
    "image/heif": frozenset({"image/heic", "image/heif"}),
    "video/mp4": frozenset({"video/mp4"}),
    "video/quicktime": frozenset({"video/quicktime", "video/mp4"}),
    "audio/m4a": frozenset({"audio/m4a", "video/mp4"}),
}
# Classic QuickTime files may start with an atom other than ftyp.
QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


def iso_media_type(head: bytes) -> str | None:
    """What an ISO base media file's brands say it is (None: not one, or
    one Chert does not take)."""
    if head[4:8] != b"ftyp" or len(head) < 12:
        return "video/quicktime" if head[4:8] in QUICKTIME_ATOMS else None
    box_end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, box_end - 3, 4)]
    for brand in brands:
        if brand in ISO_BRANDS:
            return ISO_BRANDS[brand]
    return None


def _is_iso(content_type: str) -> Callable[[bytes], bool]:
    accepted = ISO_ACCEPTS[content_type]
    return lambda head: iso_media_type(head) in accepted


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


# In the order sniff() tries them: the ISO family is told apart by brand, and
# PDF, which may start after junk, comes last.
_SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "image/jpeg": lambda h: h.startswith(b"\xff\xd8\xff"),
    "image/png": lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/gif": lambda h: h.startswith((b"GIF87a", b"GIF89a")),
    "image/webp": lambda h: _is_riff(h, b"WEBP"),
    "audio/wav": lambda h: _is_riff(h, b"WAVE"),
    "audio/mpeg": _is_mpeg_audio,
    "audio/aac": _is_aac,
    **{content_type: _is_iso(content_type) for content_type in ISO_ACCEPTS},
    # PDF readers accept junk before the header; so does this.
    "application/pdf": lambda h: b"%PDF-" in h,
}


def content_matches(content_type: str, head: bytes) -> bool:
    """Do the file's first bytes fit its declared (supported) type?"""
    return bool(_SIGNATURES[content_type](head))


def sniff(head: bytes) -> str | None:
    """The type Chert takes that a file's first bytes show, if any."""
    if head[4:8] == b"ftyp" or head[4:8] in QUICKTIME_ATOMS:
        return iso_media_type(head)
    for content_type, matches in _SIGNATURES.items():
        if content_type not in ISO_ACCEPTS and matches(head):
            return content_type
    return None
