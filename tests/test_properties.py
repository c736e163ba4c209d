"""Property tests (hypothesis) for what parses a caller's or Chert's words:
Retry-After, filenames and Content-Disposition, MIME types, idempotency
keys, and the form's limits. Each parser either answers within its contract
or raises a GatewayError with a 4xx status; nothing else escapes it."""

from __future__ import annotations

import email.utils
import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api import form, intake
from gateway.chert import media, retry
from gateway.chert.redact import REDACTED, Redactor
from gateway.errors import GatewayError
from gateway.ops.credentials import Credential
from tests.constants import CHAT_ID
from tests.samples import sample

FAST = settings(max_examples=300, deadline=None)


def refused_with_4xx(error: GatewayError) -> None:
    assert 400 <= error.status < 500, error


# -- Retry-After -------------------------------------------------------------


@FAST
@given(st.text())
def test_any_retry_after_is_none_or_a_capped_wait(value: str) -> None:
    wait = retry.parse_retry_after(value)
    assert wait is None or 0 <= wait <= retry.MAX_RETRY_AFTER_SECONDS


@FAST
@given(st.integers(min_value=0, max_value=10**30))
def test_delay_seconds_are_taken_and_capped(seconds: int) -> None:
    assert retry.parse_retry_after(str(seconds)) == min(seconds, retry.MAX_RETRY_AFTER_SECONDS)


@FAST
@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_an_http_date_is_the_wait_until_it(offset: int) -> None:
    now = time.time()
    when = datetime.fromtimestamp(now, UTC) + timedelta(seconds=offset)
    wait = retry.parse_retry_after(email.utils.format_datetime(when, usegmt=True), now)
    assert wait is not None
    assert wait == pytest.approx(min(max(0, offset), retry.MAX_RETRY_AFTER_SECONDS), abs=1)


# -- names, dispositions, types, keys ---------------------------------------


@FAST
@given(st.text())
def test_a_clean_filename_is_a_base_name_in_utf8_or_a_400(raw: str) -> None:
    try:
        name = intake.clean_filename(raw)
    except GatewayError as error:
        refused_with_4xx(error)
        return
    assert "/" not in name
    assert "\\" not in name
    assert name not in ("", ".", "..")
    assert len(name.encode()) <= intake.MAX_FILENAME_BYTES


# Header values as aiohttp hands them on: latin-1 text, or UTF-8 with the
# undecodable bytes as lone surrogates.
HEADER_TEXT = st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape"))
DISPOSITIONS = st.one_of(
    HEADER_TEXT,
    st.builds(
        lambda kind, name, star: f"{kind}; filename{'*' if star else ''}={name}",
        st.sampled_from(["attachment", "inline", "form-data", ""]),
        st.one_of(HEADER_TEXT, st.text().map(lambda t: f'"{t}"'), st.text()),
        st.booleans(),
    ),
)


@FAST
@given(DISPOSITIONS)
def test_any_content_disposition_gives_a_name_none_or_a_400(value: str) -> None:
    try:
        name = intake.disposition_param(value, "filename")
    except GatewayError as error:
        refused_with_4xx(error)
        return
    assert name is None or isinstance(name, str)


@FAST
@given(st.one_of(st.none(), HEADER_TEXT), HEADER_TEXT)
def test_any_name_and_type_resolve_to_a_type_chert_takes_or_a_4xx(
    filename: str | None, content_type: str
) -> None:
    try:
        meta = intake.resolve_file_meta(filename, content_type)
    except GatewayError as error:
        refused_with_4xx(error)
        return
    assert media.is_supported(meta.content_type)
    meta.filename.encode()  # always valid UTF-8 for Chert's JSON


@FAST
@given(st.binary(max_size=80), st.sampled_from(sorted(media.SUPPORTED_TYPES)))
def test_sniffing_any_head_answers_yes_or_no(head: bytes, content_type: str) -> None:
    assert media.content_matches(content_type, head) in (True, False)


SECRETS = st.text(min_size=1, max_size=40).map(str.strip).filter(bool)


@FAST
@given(st.text(max_size=300), SECRETS)
def test_a_redacted_text_never_holds_the_secret(text: str, secret: str) -> None:
    redactor = Redactor([Credential(inline=secret)])
    redacted = redactor.text(text + secret + text)
    # What is left of the caller's text, between the marks, holds no secret.
    assert all(secret not in piece for piece in redacted.split(REDACTED))


# -- the form's limits, over a live gateway ---------------------------------------

FIELD_SIZES = st.lists(
    st.integers(min_value=1, max_value=form.MAX_FIELD_BYTES + 100), max_size=form.MAX_FIELDS + 2
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(sizes=FIELD_SIZES, files=st.integers(min_value=0, max_value=form.MAX_FILES + 1))
def test_a_form_is_sent_exactly_when_it_is_within_every_limit(
    live_gateway_url: str, sizes: list[int], files: int
) -> None:
    within = (
        len(sizes) <= form.MAX_FIELDS
        and all(size <= form.MAX_FIELD_BYTES for size in sizes)
        and sum(sizes) <= form.MAX_FIELDS_TOTAL_BYTES
        and files <= form.MAX_FILES
        and (sizes or files)
    )
    # (None, value): a field without a filename, so requests sends multipart.
    parts: list[tuple[str, tuple[str | None, Any]]] = [
        ("text", (None, "t" * size)) for size in sizes
    ]
    parts += [(f"f{n}", (f"{n}.png", io.BytesIO(sample("image/png", 100)))) for n in range(files)]
    response = requests.post(
        f"{live_gateway_url}/v1/chats/{CHAT_ID}/messages",
        files=parts or [("text", (None, ""))],  # an empty form: nothing to send
        timeout=30,
    )
    if within:
        assert response.status_code == 201, response.text
    else:
        assert response.status_code in (400, 413), response.text
        assert response.json()["error"]["code"] in ("invalid_request", "payload_too_large")


@given(st.binary(max_size=80))
def test_the_type_bytes_show_is_one_chert_takes_and_fits_them(head: bytes) -> None:
    shown = media.sniff(head)
    assert shown is None or media.content_matches(shown, head)
