"""intake's parsers called directly, on requests built by aiohttp's own test
helper: what each header and query turns into, without a server round trip
(the wire behaviour is in test_send_file.py and test_http_edges.py)."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.api import intake
from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

LIMIT = 1000


def request(path: str = "/v1/attachments", **headers: str) -> web.Request:
    return make_mocked_request(
        "POST", path, headers=CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Content_Length": "10"}, 10),
        ({"Content_Length": str(LIMIT)}, LIMIT),
        ({"Transfer_Encoding": "chunked"}, None),
        ({"Transfer_Encoding": "Chunked"}, None),
    ],
)
def test_declared_size(headers: dict[str, str], expected: int | None) -> None:
    assert intake.declared_size(request(**headers), LIMIT) == expected


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, InvalidRequestError),
        ({"Content_Length": "0"}, InvalidRequestError),
        ({"Content_Length": str(LIMIT + 1)}, PayloadTooLargeError),
    ],
)
def test_declared_size_refusals(headers: dict[str, str], error: type[GatewayError]) -> None:
    with pytest.raises(error):
        intake.declared_size(request(**headers), LIMIT)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("invoice.pdf", "invoice.pdf"),
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("  spaced.png  ", "spaced.png"),
        ("été.png", "été.png"),
    ],
)
def test_clean_filename_keeps_the_base_name(raw: str, expected: str) -> None:
    assert intake.clean_filename(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["a\x00.png", "a\nb.png", "..", "dir/", chr(0xDCFF) + ".png", "\ufffd.png", "x" * 256 + ".png"],
)
def test_clean_filename_refusals(raw: str) -> None:
    with pytest.raises(InvalidRequestError):
        intake.clean_filename(raw)


@pytest.mark.parametrize(
    ("headers", "filename"),
    [
        ({"Content_Disposition": 'attachment; filename="a.pdf"', "X_Filename": "b.pdf"}, "a.pdf"),
        ({"Content_Disposition": "attachment; filename*=UTF-8''%E2%82%AC.pdf"}, "€.pdf"),
        ({"X_Filename": "b.pdf"}, "b.pdf"),
    ],
)
def test_the_filename_comes_from_the_first_source_that_gives_one(
    headers: dict[str, str], filename: str
) -> None:
    meta = intake.file_meta(request(Content_Type="application/pdf", **headers))
    assert meta.filename == filename


@pytest.mark.parametrize(
    "headers", [{"Content_Encoding": "gzip"}, {"Transfer_Encoding": "gzip, chunked"}]
)
def test_an_encoded_body_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        intake.check_encoding(request(**headers))
