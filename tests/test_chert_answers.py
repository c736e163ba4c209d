"""How each of Chert's non-success answers maps to the gateway's error: the
pure table of chert/client.py, case by case, without a server round trip
(the wire behaviour is in test_send_file.py and test_upstream_answers.py)."""

from __future__ import annotations

import orjson
import pytest

from gateway.chert.client import error_from_answer
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
    UpstreamUnavailableError,
)


def chert(code: int | None = None, message: str = "") -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


CASES = [
    # (operation, status, Retry-After, body) → (class, chert_code, retryable)
    ("send_message", 503, "3", chert(3002), UpstreamUnavailableError, 3002, True),
    ("send_message", 503, None, chert(5003), UpstreamUnavailableError, 5003, True),
    (
        "create_attachment",
        500,
        None,
        b"Internal Server Error",
        UpstreamUnavailableError,
        None,
        True,
    ),
    ("send_message", 429, "1", b"", UpstreamUnavailableError, None, True),
    ("send_message", 502, None, chert(4001), UpstreamError, 4001, False),
    ("send_message", 400, None, chert(1002), InvalidRequestError, 1002, False),
    ("create_attachment", 400, None, chert(1003), InvalidRequestError, 1003, False),
    ("upload", 400, None, chert(1002), UpstreamError, 1002, False),
    ("send_message", 401, None, chert(1001), UpstreamError, 1001, False),
    ("get_attachment", 404, None, chert(1004, "gone"), NotFoundError, 1004, False),
    ("send_message", 307, None, b"", UpstreamError, None, False),
    (
        "send_message",
        400,
        None,
        orjson.dumps({"error": {"code": True}}),
        UpstreamError,
        None,
        False,
    ),
    ("send_message", 400, None, orjson.dumps({"error": "text"}), UpstreamError, None, False),
    ("send_message", 400, None, orjson.dumps([1, 2]), UpstreamError, None, False),
    ("send_message", 400, None, chert(10**12), UpstreamError, None, False),
]


@pytest.mark.parametrize(
    ("operation", "status", "retry_after", "raw", "kind", "code", "retryable"), CASES
)
def test_each_answer_maps_to_its_error(
    operation: str,
    status: int,
    retry_after: str | None,
    raw: bytes,
    kind: type[GatewayError],
    code: int | None,
    retryable: bool,
) -> None:
    error = error_from_answer(operation, status, retry_after, raw)
    assert (type(error), error.chert_code, error.retryable) == (kind, code, retryable)


def test_retry_after_is_kept_and_chert_s_words_are_quoted_on_one_short_line() -> None:
    error = error_from_answer("send_message", 503, "7", chert(3002, "no line\n" + "x" * 1000))
    assert error.retry_after == 7
    assert "\n" not in error.message
    assert len(error.message) < 400
