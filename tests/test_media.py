"""Chert's media table and content sniffing (pure logic)."""

from __future__ import annotations

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
