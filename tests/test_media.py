"""Chert's media table and content sniffing (pure logic)."""

from __future__ import annotations

import contextlib

import filetype
import puremagic
import pytest

from gateway.chert import media
from tests.samples import MAGIC, sample


@pytest.mark.parametrize("content_type", sorted(media.SUPPORTED_TYPES))
def test_every_supported_type_recognises_its_own_bytes(content_type: str) -> None:
    assert media.content_matches(content_type, sample(content_type, media.SNIFF_BYTES))


@pytest.mark.parametrize("content_type", sorted(media.SUPPORTED_TYPES))
def test_no_type_accepts_plain_text(content_type: str) -> None:
    assert not media.content_matches(content_type, b"hello, this is not a media file at all")


@pytest.mark.parametrize(
    ("declared", "actual"),
    [
        ("image/png", "image/jpeg"),
        ("image/jpeg", "application/pdf"),
        ("video/mp4", "image/heic"),  # both ISO media; a HEIF still is not a video
        ("image/heic", "video/mp4"),
        ("audio/wav", "image/webp"),  # both RIFF
        ("audio/mpeg", "audio/aac"),  # both frame-sync
        ("audio/aac", "audio/mpeg"),
    ],
)
def test_contradicting_content_is_caught(declared: str, actual: str) -> None:
    assert not media.content_matches(declared, MAGIC[actual] + bytes(40))


def test_quicktime_accepts_classic_atoms() -> None:
    assert media.content_matches("video/quicktime", b"\x00\x00\x00\x08wide" + bytes(20))


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Image/JPG; q=1", "image/jpeg"),
        ("audio/x-wav", "audio/wav"),
        ("application/PDF", "application/pdf"),
    ],
)
def test_normalize(given: str, normal: str) -> None:
    assert media.normalize(given) == normal


def test_names_and_guesses() -> None:
    assert media.guess_from_filename("Holiday.HEIC") == "image/heic"
    assert media.guess_from_filename(".png") is None
    assert media.guess_from_filename("noext") is None
    assert media.default_filename("audio/m4a") == "attachment.m4a"


def iso_file(major: bytes, *compatible: bytes) -> bytes:
    """The head of an ISO base media file: its ftyp box, then a free box."""
    box = b"ftyp" + major + bytes(4) + b"".join(compatible)
    return (len(box) + 4).to_bytes(4, "big") + box + b"\x00\x00\x00\x08free" + bytes(40)


# (head, the type its bytes show, or None for a container Chert does not take)
ISO_HEADS = {
    "mp4 (isom)": (iso_file(b"isom", b"isom", b"avc1"), "video/mp4"),
    "mp4 (mp42)": (iso_file(b"mp42", b"mp42", b"isom"), "video/mp4"),
    "mp4 (M4V)": (iso_file(b"M4V ", b"M4A ", b"mp42", b"isom"), "video/mp4"),
    "mp4 (dash)": (iso_file(b"dash", b"iso6", b"mp41"), "video/mp4"),
    "m4a": (iso_file(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/m4a"),
    "m4b": (iso_file(b"M4B ", b"M4B ", b"mp42"), "audio/m4a"),
    "mov": (iso_file(b"qt  ", b"qt  "), "video/quicktime"),
    "heic": (iso_file(b"heic", b"mif1", b"heic"), "image/heic"),
    "heix": (iso_file(b"heix", b"mif1", b"heix"), "image/heic"),
    "heif": (iso_file(b"mif1", b"mif1"), "image/heif"),
    "avif": (iso_file(b"avif", b"avif", b"mif1", b"miaf"), None),
    "avif sequence": (iso_file(b"avis", b"avis", b"msf1"), None),
    "3gp": (iso_file(b"3gp4", b"3gp4", b"isom"), None),
    "unknown major, mp4 compatible": (iso_file(b"crx ", b"isom"), "video/mp4"),
}
HEADS = {
    **{name: (head[: media.SNIFF_BYTES], shown) for name, (head, shown) in ISO_HEADS.items()},
    **{
        t: (sample(t, media.SNIFF_BYTES), t)
        for t in MAGIC
        if not t.startswith(("video", "audio/m4a"))
    },
}
# What the kept libraries name differently from Chert's table.
ORACLE_NAMES = {"audio/x-m4b": "audio/m4a", "audio/wave": "audio/wav"}


def oracle_types(head: bytes) -> set[str | None]:
    """What filetype and puremagic say the bytes are, in Chert's spelling;
    None for a type Chert does not take. Empty when neither can tell."""
    said = [filetype.guess_mime(head)]
    with contextlib.suppress(puremagic.PureError):
        said.append(puremagic.from_string(head, mime=True))
    named = {media.normalize(ORACLE_NAMES.get(t, t)) for t in said if t}
    return {t if media.is_supported(t) else None for t in named}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_the_type_shown_by_the_bytes(name: str) -> None:
    """The table, and a kept library that agrees with each row wherever
    either library can tell the bytes at all."""
    head, shown = HEADS[name]
    assert media.sniff(head) == shown
    said = oracle_types(head)
    assert not said or shown in said, f"{name}: the libraries say {said}"
    if shown is not None:
        assert media.content_matches(shown, head)


@pytest.mark.parametrize(
    ("declared", "name"),
    [
        ("video/mp4", "avif"),
        ("video/mp4", "m4a"),
        ("video/mp4", "heic"),
        ("video/mp4", "3gp"),
        ("audio/m4a", "mov"),
        ("audio/m4a", "avif"),
        ("image/heic", "mp4 (isom)"),
        ("video/quicktime", "m4a"),
    ],
)
def test_the_mp4_family_is_told_apart_by_its_brands(declared: str, name: str) -> None:
    assert not media.content_matches(declared, HEADS[name][0])


def test_what_no_signature_shows_has_no_type() -> None:
    assert media.sniff(b"hello, this is not a media file at all") is None
    assert media.sniff(b"") is None
