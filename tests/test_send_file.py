"""The single-file send, end to end: gateway → simulator on loopback, and
what crossed the wire as the simulator recorded it."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.constants import CHAT_ID, SECRET
from tests.gateway_calls import png_bytes, send
from tests.samples import sample


async def test_send_streams_with_content_length_then_sends(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    body = png_bytes(300_000)
    status, answer, response = await send(
        gateway, body, params={"filename": "cat.png", "text": "See attached."}
    )

    assert status == 201, answer
    assert answer["filename"] == "cat.png"
    assert answer["content_type"] == "image/png"
    assert answer["size_bytes"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    assert set(answer["timings"]) == {"create_slot_s", "upload_s", "send_s", "total_s"}
    assert response.headers["X-Request-ID"]

    (put,) = simulator.state.requests_to("PUT")
    assert put.header("Content-Length") == str(len(body))
    assert put.header("Transfer-Encoding") is None
    assert put.header("Authorization") == f"Bearer {SECRET}"
    assert put.header("Content-Type") == "image/png"
    assert put.body_complete
    assert put.body_bytes == len(body)
    stored = simulator.state.attachments[answer["attachment_id"]]
    assert stored.sha256 == hashlib.sha256(body).hexdigest()

    (sent,) = simulator.state.messages
    assert sent["id"] == answer["message"]["id"]
    assert sent["parts"] == [
        {"type": "text", "value": "See attached."},
        {"type": "media", "attachment_id": answer["attachment_id"]},
    ]


async def test_put_is_accepted_like_post_and_caption_is_optional(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    status, answer, _ = await send(gateway, png_bytes(1000), method="PUT")
    assert status == 201, answer
    assert answer["filename"] == "attachment.png"  # named from the MIME type
    assert simulator.state.messages[0]["parts"] == [
        {"type": "media", "attachment_id": answer["attachment_id"]}
    ]


async def test_idempotency_key_reaches_chert(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    status, _, _ = await send(gateway, png_bytes(500), headers={"Idempotency-Key": "order-42"})
    assert status == 201
    assert "order-42" in simulator.state.messages_by_key


async def test_a_key_is_generated_when_the_caller_gives_none(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    await send(gateway, png_bytes(500))
    await send(gateway, png_bytes(500))
    keys = list(simulator.state.messages_by_key)
    assert len(keys) == 2  # a fresh key each time: two messages, not one replay
    assert all(len(key) >= 16 for key in keys)


async def test_request_id_is_echoed_or_made(gateway: TestClient[Any, Any]) -> None:
    *_, response = await send(gateway, png_bytes(500), headers={"X-Request-ID": "trace-abc.1"})
    assert response.headers["X-Request-ID"] == "trace-abc.1"
    *_, response = await send(gateway, png_bytes(500), headers={"X-Request-ID": "bad id\t!"})
    assert response.headers["X-Request-ID"] != "bad id\t!"
    assert len(response.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("headers", "params", "expected"),
    [
        ({"Content-Disposition": 'attachment; filename="report.pdf"'}, {}, "report.pdf"),
        (
            {"Content-Disposition": "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"},
            {},
            "résumé.pdf",
        ),
        ({"X-Filename": "../../etc/scan.pdf"}, {}, "scan.pdf"),
        ({}, {"filename": "C:\\Users\\me\\invoice.pdf"}, "invoice.pdf"),
        ({"X-Filename": "header.pdf"}, {"filename": "query.pdf"}, "header.pdf"),
    ],
)
async def test_filename_sources_and_base_name(
    gateway: TestClient[Any, Any],
    headers: dict[str, str],
    params: dict[str, str],
    expected: str,
) -> None:
    body = b"%PDF-1.7\n" + os.urandom(100)
    status, answer, _ = await send(
        gateway, body, content_type="application/pdf", headers=headers, params=params
    )
    assert status == 201, answer
    assert answer["filename"] == expected


@pytest.mark.parametrize(
    ("content_type", "filename", "expected"),
    [
        (None, "clip.mov", "video/quicktime"),
        ("application/octet-stream", "song.mp3", "audio/mpeg"),
        ("application/x-www-form-urlencoded", "photo.JPG", "image/jpeg"),
        ("audio/x-wav; charset=binary", "a.wav", "audio/wav"),
    ],
)
async def test_generic_or_aliased_types_are_resolved(
    gateway: TestClient[Any, Any], content_type: str | None, filename: str, expected: str
) -> None:
    status, answer, _ = await send(
        gateway, sample(expected, 64), content_type=content_type, params={"filename": filename}
    )
    assert status == 201, answer
    assert answer["content_type"] == expected


# -- bad input: a clear error, and Chert is never called ------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"content_type": "text/plain", "params": {"filename": "a.txt"}},
            415,
            "unsupported_media_type",
        ),
        (
            {"content_type": "application/octet-stream", "params": {"filename": "x.exe"}},
            415,
            "unsupported_media_type",
        ),
        ({"chat_id": "bad.chat"}, 400, "invalid_request"),
        ({"chat_id": "x" * 129}, 400, "invalid_request"),
        ({"params": {"filename": "evil\nname.png"}}, 400, "invalid_request"),
        ({"params": {"filename": "bell\x07.png"}}, 400, "invalid_request"),
        (
            {"headers": {"Content-Disposition": "attachment; filename*=UTF-8''a%0Db.png"}},
            400,
            "invalid_request",
        ),
        ({"params": {"filename": ".."}}, 400, "invalid_request"),
        ({"headers": {"Idempotency-Key": "has space"}}, 400, "invalid_request"),
    ],
)
async def test_bad_input_is_refused_before_chert(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    got_status, answer, response = await send(gateway, png_bytes(100), **kwargs)
    assert got_status == status, answer
    assert answer["error"]["code"] == code
    assert answer["error"]["request_id"] == response.headers["X-Request-ID"]
    assert answer["error"]["message"]
    assert simulator.state.requests == []


async def test_empty_body_is_refused(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    status, answer, _ = await send(gateway, b"")
    assert (status, answer["error"]["code"]) == (400, "invalid_request")
    assert simulator.state.requests == []


async def test_body_over_the_limit_is_refused_by_its_declared_size(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_MAX_UPLOAD_BYTES=1000)
    status, answer, _ = await send(client, png_bytes(1001))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    assert simulator.state.requests == []


async def test_unknown_route_and_method_answer_json(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.get("/v1/nothing-here")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await gateway.get(f"/v1/chats/{CHAT_ID}/attachments")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


# -- Chert's errors, mapped ----------------------------------------------------


async def test_4001_is_not_retried_and_maps_to_502(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"fail_sends": 5, "fail_send_code": 4001})
    status, answer, _ = await send(gateway, png_bytes(500))
    assert status == 502
    assert answer["error"] | {"message": ""} == answer["error"] | {
        "code": "upstream_error",
        "chert_code": 4001,
        "retryable": False,
        "message": "",
    }
    assert len(simulator.state.requests_to("POST", "/messages")) == 1


@pytest.mark.parametrize("code", [1002, 1003])
async def test_1002_and_1003_are_the_callers_400_with_their_code(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, code: int
) -> None:
    simulator.faults.update({"fail_sends": 1, "fail_send_code": code})
    status, answer, _ = await send(gateway, png_bytes(500))
    assert (status, answer["error"]["code"], answer["error"]["chert_code"]) == (
        400,
        "invalid_request",
        code,
    )
    assert len(simulator.state.requests_to("POST", "/messages")) == 1


async def test_3002_is_retried_with_one_key_then_succeeds(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"fail_sends": 2, "fail_send_code": 3002, "retry_after_seconds": 0})
    status, answer, _ = await send(gateway, png_bytes(500), headers={"Idempotency-Key": "k-3002"})
    assert status == 201, answer
    sends = simulator.state.requests_to("POST", "/messages")
    assert len(sends) == 3
    assert [s.json["message"]["idempotency_key"] for s in sends] == ["k-3002"] * 3
    assert len(simulator.state.messages) == 1


async def test_3002_that_persists_becomes_503_upstream_unavailable(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"fail_sends": 100, "fail_send_code": 3002, "retry_after_seconds": 0})
    status, answer, response = await send(gateway, png_bytes(500))
    assert status == 503
    assert answer["error"]["code"] == "upstream_unavailable"
    assert answer["error"]["chert_code"] == 3002
    assert answer["error"]["retryable"] is True
    assert response.headers["Retry-After"]
    assert len(simulator.state.requests_to("POST", "/messages")) == 4  # RetryPolicy.attempts


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"drop_creates": 2}, id="connection dropped"),
        pytest.param({"fail_creates": 2, "retry_after_seconds": 0}, id="bare 503"),
    ],
)
async def test_slot_creation_is_retried(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, faults: dict[str, int]
) -> None:
    simulator.faults.update(faults)
    status, answer, _ = await send(gateway, png_bytes(500))
    assert status == 201, answer
    assert len(simulator.state.requests_to("POST", "/api/v1/attachments")) == 3
    assert len(simulator.state.messages) == 1


# -- nothing half-sent ---------------------------------------------------------


async def test_broken_upload_sends_no_message(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"reset_put_after_bytes": 200_000})
    status, answer, _ = await send(gateway, png_bytes(2_000_000))
    assert status == 502, answer
    assert answer["error"]["code"] == "upstream_error"
    assert answer["error"]["retryable"] is True
    puts = simulator.state.requests_to("PUT")
    # One PUT, cut short; the HTTP client did not silently replay it.
    assert len(puts) == 1
    assert not puts[0].body_complete
    assert simulator.state.requests_to("POST", "/messages") == []
    assert simulator.state.messages == []


async def test_upload_url_on_a_foreign_origin_is_refused_without_the_secret(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    aiohttp_server: Any,
) -> None:
    foreign = ChertSimulator("other-secret")
    foreign_server = await aiohttp_server(foreign.app())
    simulator.faults.update({"upload_origin": str(foreign_server.make_url("")).rstrip("/")})
    status, answer, _ = await send(gateway, png_bytes(500))
    assert status == 502
    assert "origin" in answer["error"]["message"]
    assert foreign.state.requests == []
    assert simulator.state.requests_to("PUT") == []
    assert simulator.state.messages == []


async def test_a_slow_chert_becomes_504(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(CHERT_TIMEOUT="0.3")
    simulator.faults.update({"send_delay_seconds": 1.0})
    status, answer, _ = await send(client, png_bytes(500))
    assert (status, answer["error"]["code"]) == (504, "upstream_timeout")


async def test_an_upstream_that_pauses_reading_only_slows_the_upload(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(CHERT_TIMEOUT="3")
    simulator.faults.update({"stall_put_seconds": 1.0, "stall_put_after_bytes": 100_000})
    status, answer, _ = await send(client, png_bytes(8_000_000))
    assert status == 201, answer
    assert answer["timings"]["upload_s"] >= 1.0
    assert len(simulator.state.messages) == 1


async def test_an_upstream_that_stops_reading_becomes_504_and_nothing_is_sent(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(CHERT_TIMEOUT="0.5")
    simulator.faults.update({"stall_put_seconds": 2.0, "stall_put_after_bytes": 100_000})
    status, answer, _ = await send(client, png_bytes(20_000_000))
    assert (status, answer["error"]["code"]) == (504, "upstream_timeout")
    assert simulator.state.requests_to("POST", "/messages") == []


async def test_slow_slot_creation_is_retried_then_504(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(CHERT_TIMEOUT="0.2")
    simulator.faults.update({"create_delay_seconds": 1.0})
    status, answer, _ = await send(client, png_bytes(500))
    assert (status, answer["error"]["code"]) == (504, "upstream_timeout")
    assert len(simulator.state.requests_to("POST", "/api/v1/attachments")) == 4
    assert simulator.state.requests_to("PUT") == []


@pytest.mark.parametrize("chunked_body", [False, True])
async def test_content_that_contradicts_its_type_is_415_before_chert(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, chunked_body: bool
) -> None:
    pdf = sample("application/pdf", 5000)

    async def pieces() -> Any:
        yield pdf

    response = await gateway.post(
        f"/v1/chats/{CHAT_ID}/attachments",
        data=pieces() if chunked_body else io.BytesIO(pdf),
        headers={"Content-Type": "image/png"},
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    assert simulator.state.requests == []


@pytest.mark.parametrize(
    "make_origin",
    [
        lambda foreign, own: foreign,  # another port
        lambda foreign, own: own.replace("http://", "http://user:pw@"),  # userinfo
        lambda foreign, own: own.replace("http://", "https://"),  # another scheme
        lambda foreign, own: own.replace("127.0.0.1", "localhost"),  # another host
    ],
)
async def test_upload_url_off_chert_origin_is_refused(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    chert_server: Any,
    aiohttp_server: Any,
    make_origin: Any,
) -> None:
    foreign = ChertSimulator("other-secret")
    foreign_url = str((await aiohttp_server(foreign.app())).make_url("")).rstrip("/")
    own_url = str(chert_server.make_url("")).rstrip("/")
    simulator.faults.update({"upload_origin": make_origin(foreign_url, own_url)})
    status, answer, _ = await send(gateway, png_bytes(500))
    assert (status, answer["error"]["code"]) == (502, "upstream_error")
    assert foreign.state.requests == []
    assert simulator.state.requests_to("PUT") == []
    assert simulator.state.messages == []


async def test_a_redirect_from_chert_is_refused_without_following_it(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, aiohttp_server: Any
) -> None:
    foreign = ChertSimulator("other-secret")
    foreign_server = await aiohttp_server(foreign.app())
    simulator.faults.update(
        {"redirect_creates_to": str(foreign_server.make_url("/api/v1/attachments"))}
    )
    status, answer, _ = await send(gateway, png_bytes(500))
    assert status == 502
    assert "redirect" in answer["error"]["message"]
    assert foreign.state.requests == []


async def test_429_is_retried_and_retry_after_is_honoured(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update(
        {"fail_sends": 1, "fail_send_code": 0, "fail_send_status": 429, "retry_after_seconds": 1}
    )
    status, answer, _ = await send(gateway, png_bytes(500))
    assert status == 201
    assert len(simulator.state.requests_to("POST", "/messages")) == 2
    # The retry waited for Retry-After (1 s), not just the sub-second backoff.
    assert answer["timings"]["send_s"] >= 1.0


async def test_sha256_can_be_turned_off(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_SHA256="false")
    status, answer, _ = await send(client, png_bytes(5000))
    assert status == 201
    assert answer["sha256"] is None
    assert len(simulator.state.messages) == 1


async def test_a_chat_chert_does_not_know_is_the_callers_404(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    status, answer, _ = await send(gateway, png_bytes(1000), chat_id="wrong-chat-id")
    assert status == 404, answer
    assert answer["error"]["code"] == "not_found"
    assert answer["error"]["chert_code"] == 1004
    assert "POST /api/v1/chats" in answer["error"]["message"]
    assert simulator.state.messages == []
    assert len(simulator.state.requests_to("POST", "/messages")) == 1  # not retried


@pytest.mark.parametrize("content_type", [None, "application/octet-stream"])
@pytest.mark.parametrize("chunked", [False, True])
async def test_with_no_type_and_no_name_the_bytes_tell_the_type(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    content_type: str | None,
    chunked: bool,
) -> None:
    """`curl -T invoice.pdf URL` sends neither a type nor a name."""
    pdf = sample("application/pdf", 5000)
    body: Any = io.BytesIO(pdf)
    if chunked:

        async def pieces() -> Any:
            yield pdf

        body = pieces()
    headers = {"Content-Type": content_type} if content_type else {}
    response = await gateway.post(
        f"/v1/chats/{CHAT_ID}/attachments",
        data=body,
        headers=headers,
        skip_auto_headers=["Content-Type"],
    )
    answer = await response.json()
    assert response.status == 201, answer
    assert answer["content_type"] == "application/pdf"
    assert answer["filename"] == "attachment.pdf"
    (create,) = simulator.state.requests_to("POST", "/api/v1/attachments")
    assert create.json["content_type"] == "application/pdf"


async def test_a_name_without_extension_keeps_its_name_and_gets_the_bytes_type(
    gateway: TestClient[Any, Any],
) -> None:
    status, answer, _ = await send(
        gateway, sample("audio/m4a", 5000), content_type=None, params={"filename": "memo"}
    )
    assert status == 201, answer
    assert (answer["filename"], answer["content_type"]) == ("memo", "audio/m4a")


async def test_bytes_that_show_no_type_chert_takes_are_refused_before_chert(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(5000)
    for body in (b"just some text, not a file Chert takes", avif):
        status, answer, _ = await send(gateway, body, content_type=None)
        assert status == 415, answer
        assert "cannot tell the file's type" in answer["error"]["message"]
    assert simulator.state.requests == []
