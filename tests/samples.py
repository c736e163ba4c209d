"""Files of each type Chert takes: real leading bytes, random rest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MIB = 1024 * 1024

MAGIC: dict[str, bytes] = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/gif": b"GIF89a",
    "image/webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    "image/heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00",
    "image/heif": b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00",
    "video/mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
    "video/quicktime": b"\x00\x00\x00\x14ftypqt  \x20\x05\x03\x00",
    "audio/mpeg": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "audio/m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00",
    "audio/wav": b"RIFF\x00\x00\x00\x00WAVEfmt ",
    "audio/aac": b"\xff\xf1\x50\x80\x00\x1f\xfc",
    "application/pdf": b"%PDF-1.7\n",
}


PNG_MAGIC = MAGIC["image/png"]


def sample(content_type: str, size: int) -> bytes:
    magic = MAGIC[content_type]
    return magic + os.urandom(max(0, size - len(magic)))


def make_file(path: Path, size: int) -> str:
    """Random bytes (a PNG header first), written in pieces; returns the SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        piece = b"\x89PNG\r\n\x1a\n" + os.urandom(MIB - 8)
        written = 0
        while written < size:
            chunk = piece[: size - written]
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            piece = os.urandom(MIB)
    return digest.hexdigest()
