"""Requests no client library would send: malformed HTTP, slow headers,
encoded bodies, undecodable names, broken forms. Every one gets a 4xx in
the gateway's JSON error shape with an X-Request-ID, one log line at most
WARNING, and Chert hears nothing of it.

These are written byte by byte on a socket, because a client library tidies
exactly what is tested here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.api import http_protocol
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.constants import CHAT_ID
from tests.raw_http import PATH, read_json_answer, read_status
from tests.samples import PNG_MAGIC

MESSAGES = f"/v1/chats/{CHAT_ID}/messages"


def address(client: TestClient[Any, Any]) -> tuple[str, int]:
    host, port = client.server.host, client.server.port
    assert host is not None
    assert port is not None
    return host, port


async def exchange(
    client: TestClient[Any, Any], data: bytes, *, then: bytes = b"", pause: float = 0.0
) -> tuple[int, dict[str, str], bytes]:
    """Write `data` (and `then`, after `pause`), read one answer: (status,
    headers, body)."""
    reader, writer = await asyncio.open_connection(*address(client))
    try:
        writer.write(data)
        await writer.drain()
        if then:
            await asyncio.sleep(pause)
            writer.write(then)
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    finally:
        writer.close()
    return int(lines[0].split()[1]), headers, body


def assert_json_refusal(status: int, headers: dict[str, str], body: bytes, code: str) -> None:
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(body)["error"]
    assert error["code"] == code
    assert error["request_id"] == headers["x-request-id"]
    assert set(error) == {"code", "message", "request_id", "retryable", "chert_code"}


def assert_quiet_log(caplog: pytest.LogCaptureFixture) -> None:
    """A refused request is one WARNING line at most: no ERROR, no traceback."""
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []


def request_head(path: str = PATH, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- the parser's own refusals -------------------------------------------------------

PARSER_REFUSALS = {
    "9 KB header": b"GET /openapi.json HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "1,000 headers": b"GET /openapi.json HTTP/1.1\r\nHost: g\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    + b"\r\n",
    "Content-Length and Transfer-Encoding": request_head(
        Content_Type="image/png", Content_Length="5", Transfer_Encoding="chunked"
    )
    + b"0\r\n\r\n",
    "bad chunk size": request_head(Content_Type="image/png", Transfer_Encoding="chunked")
    + b"zz\r\nxx\r\n",
    "bad request line": b"POST /v1 HTTP/9\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    "header without a colon": b"GET /openapi.json HTTP/1.1\r\nHost: g\r\nNoColon\r\n\r\n",
}


@pytest.mark.parametrize("raw", PARSER_REFUSALS.values(), ids=PARSER_REFUSALS.keys())
async def test_the_parsers_refusals_are_json_with_a_request_id(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
) -> None:
    status, headers, body = await exchange(gateway, raw)
    assert_json_refusal(status, headers, body, "invalid_request")
    assert b"aaaa" not in body  # the offending bytes are not echoed
    assert_quiet_log(caplog)
    assert simulator.state.requests == []


async def test_a_chunk_that_breaks_mid_body_is_400_at_once_not_408_later(
    make_gateway: GatewayFactory, simulator: ChertSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    # A client timeout longer than `exchange` waits: a 408 could not arrive in time.
    client = await make_gateway(GATEWAY_CLIENT_TIMEOUT="60")
    good = PNG_MAGIC + b"x" * 100
    first = request_head(Content_Type="image/png", Transfer_Encoding="chunked")
    first += b"%x\r\n" % len(good) + good + b"\r\n"
    status, headers, body = await exchange(client, first, then=b"zz\r\nxx\r\n", pause=0.3)
    assert_json_refusal(status, headers, body, "invalid_request")
    assert "malformed" in orjson.loads(body)["error"]["message"]
    assert_quiet_log(caplog)
    assert simulator.state.requests_to("POST", "/messages") == []


# -- the time to send the headers ---------------------------------------------------


@pytest.fixture
def short_header_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(http_protocol, "HEADER_TIMEOUT_SECONDS", 0.3)
    return 0.3


async def test_headers_that_never_finish_get_408_and_the_connection_closes(
    gateway: TestClient[Any, Any], short_header_timeout: float, caplog: pytest.LogCaptureFixture
) -> None:
    status, headers, body = await exchange(gateway, b"POST /v1/attachments HTTP/1.1\r\nHost: g\r\n")
    assert status == 408
    assert_json_refusal(status, headers, body, "client_timeout")
    assert_quiet_log(caplog)


async def test_two_hundred_slow_header_connections_are_all_closed(
    gateway: TestClient[Any, Any], short_header_timeout: float
) -> None:
    opened = [await asyncio.open_connection(*address(gateway)) for _ in range(200)]
    for index, (_, writer) in enumerate(opened):
        if index % 2:  # half say nothing at all, half stop inside their headers
            writer.write(b"GET /openapi.json HTTP/1.1\r\nX-Slow: ")
    answers = await asyncio.gather(*(asyncio.wait_for(reader.read(), 10) for reader, _ in opened))
    for index, answer in enumerate(answers):
        assert answer.startswith(b"HTTP/1.1 408") if index % 2 else answer == b""
    for _, writer in opened:
        writer.close()
    runner = gateway.server.runner
    assert runner is not None
    assert runner.server is not None
    assert runner.server.connections == []


async def test_a_slow_upload_body_is_not_cut_by_the_header_deadline(
    gateway: TestClient[Any, Any], short_header_timeout: float, simulator: ChertSimulator
) -> None:
    body = PNG_MAGIC + b"y" * 100
    head = request_head(Content_Type="image/png", Content_Length=str(len(body)), Connection="close")
    status, _, answer = await exchange(gateway, head + body[:4], then=body[4:], pause=0.8)
    assert status == 201, answer
    assert len(simulator.state.messages) == 1


async def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_deadline(
    gateway: TestClient[Any, Any], short_header_timeout: float
) -> None:
    reader, writer = await asyncio.open_connection(*address(gateway))
    ask = b"GET /openapi.json HTTP/1.1\r\nHost: g\r\n\r\n"
    try:
        for _ in range(2):
            writer.write(ask)
            assert await read_status(reader) == 200
            assert "paths" in await read_json_answer(reader)
            await asyncio.sleep(0.8)  # idle: keep-alive's time, not the header deadline
    finally:
        writer.close()


# -- bodies whose bytes would not be the file ---------------------------------------


@pytest.mark.parametrize("path", [PATH, "/v1/attachments", MESSAGES])
@pytest.mark.parametrize(
    "header", ["Content-Encoding: gzip", "Content-Encoding: br", "Transfer-Encoding: gzip, chunked"]
)
async def test_an_encoded_body_is_415_before_it_is_read(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, path: str, header: str
) -> None:
    head = f"POST {path} HTTP/1.1\r\nHost: g\r\nContent-Type: application/pdf\r\n{header}\r\n"
    if "Transfer" not in header:
        head += "Content-Length: 3151\r\n"
    # Headers only: the answer must come without a byte of the body.
    status, headers, body = await exchange(gateway, (head + "\r\n").encode())
    assert_json_refusal(status, headers, body, "unsupported_media_type")
    assert status == 415
    assert simulator.state.requests == []


# -- names that are not text --------------------------------------------------------

UNDECODABLE = {
    "X-Filename": b"X-Filename: \xff\xfe.png\r\n",
    "Content-Disposition": b'Content-Disposition: attachment; filename="\xff\xfe.png"\r\n',
    "filename*": b"Content-Disposition: attachment; filename*=UTF-8''%FF%FE.png\r\n",
}


@pytest.mark.parametrize("header", UNDECODABLE.values(), ids=UNDECODABLE.keys())
async def test_a_filename_that_is_not_utf8_is_400(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, header: bytes
) -> None:
    body = PNG_MAGIC + b"z" * 10
    head = f"POST {PATH} HTTP/1.1\r\nHost: g\r\nContent-Type: image/png\r\n".encode()
    head += header + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    status, headers, answer = await exchange(gateway, head + body)
    assert_json_refusal(status, headers, answer, "invalid_request")
    assert simulator.state.requests == []


# -- forms that are not forms -------------------------------------------------------

PART = (
    b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n" + PNG_MAGIC + b"data\r\n"
)
BROKEN_FORMS = {
    "no boundary parameter": ("multipart/form-data", PART + b"--b0--\r\n"),
    "no boundary in the body": ("multipart/form-data; boundary=b0", b"just some bytes\r\n"),
    "a truncated part": ("multipart/form-data; boundary=b0", PART[:-20]),
    "no closing boundary": ("multipart/form-data; boundary=b0", PART),
    "a boundary of 80 characters": ("multipart/form-data; boundary=" + "b" * 80, PART),
    "a part filename that is not UTF-8": (
        "multipart/form-data; boundary=b0",
        PART.replace(b"a.png", b"\xff\xfe.png") + b"--b0--\r\n",
    ),
    "a part header line of 9 KB": (
        "multipart/form-data; boundary=b0",
        PART.replace(b"Content-Type", b"X-Pad: " + b"p" * 9000 + b"\r\nContent-Type")
        + b"--b0--\r\n",
    ),
    "a gzip-encoded part": (
        "multipart/form-data; boundary=b0",
        PART.replace(b"Content-Type", b"Content-Encoding: gzip\r\nContent-Type") + b"--b0--\r\n",
    ),
}


@pytest.mark.parametrize("form", BROKEN_FORMS.values(), ids=BROKEN_FORMS.keys())
async def test_a_broken_form_is_4xx_and_nothing_is_sent(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    caplog: pytest.LogCaptureFixture,
    form: tuple[str, bytes],
) -> None:
    content_type, body = form
    head = request_head(
        MESSAGES, Content_Type=content_type, Content_Length=str(len(body)), Connection="close"
    )
    status, headers, answer = await exchange(gateway, head + body)
    assert status in (400, 413, 415), answer
    assert_json_refusal(status, headers, answer, orjson.loads(answer)["error"]["code"])
    assert_quiet_log(caplog)
    assert simulator.state.requests_to("POST", "/messages") == []
