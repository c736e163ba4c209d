"""The caller's side: `chert-gateway send` as a subprocess, `demo`, and the
Python client, against a gateway and the simulator on loopback."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.client.calls import (
    BlockingGatewayClient,
    GatewayClient,
    GatewayUnreachableError,
    Retry,
)
from gateway.errors import NotFoundError, PayloadTooLargeError, UnsupportedMediaTypeError
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.constants import CHAT_ID
from tests.processes import gateway_cli
from tests.samples import sample


def write(tmp_path: Path, name: str, content_type: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(sample(content_type, size))
    return path


async def test_send_one_file(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, tmp_path: Path
) -> None:
    photo = write(tmp_path, "photo.jpg", "image/jpeg", 300_000)
    code, out, err = await gateway_cli(
        "send", str(photo), "--chat", CHAT_ID, "--text", "Look",
        "--gateway", str(gateway.make_url("")).rstrip("/"),
    )  # fmt: skip
    assert code == 0, err
    assert "sent photo.jpg" in out
    (put,) = simulator.state.requests_to("PUT")
    assert put.header("Content-Length") == "300000"
    assert simulator.state.messages[0]["parts"][0] == {"type": "text", "value": "Look"}


async def test_send_several_files_as_one_message_with_json_output(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, tmp_path: Path
) -> None:
    files = [write(tmp_path, f"{n}.png", "image/png", 50_000) for n in ("a", "b", "c")]
    code, out, err = await gateway_cli(
        "send", *map(str, files), "--chat", CHAT_ID, "--json",
        "--gateway", str(gateway.make_url("")).rstrip("/"),
    )  # fmt: skip
    assert code == 0, err
    answer = orjson.loads(out)
    assert [a["filename"] for a in answer["attachments"]] == ["a.png", "b.png", "c.png"]
    (body,) = simulator.state.send_bodies
    assert body["parallel_attachments"] is True


async def test_send_reports_415_and_413_with_a_failing_status(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path
) -> None:
    client = await make_gateway(GATEWAY_MAX_UPLOAD_BYTES=100_000)
    url = str(client.make_url("")).rstrip("/")
    text = tmp_path / "notes.txt"
    text.write_text("not media")
    code, _, err = await gateway_cli("send", str(text), "--chat", CHAT_ID, "--gateway", url)
    assert code != 0
    assert "unsupported_media_type (HTTP 415)" in err
    big = write(tmp_path, "big.png", "image/png", 200_000)
    code, out, _ = await gateway_cli(
        "send", str(big), "--chat", CHAT_ID, "--gateway", url, "--json"
    )
    assert code != 0
    assert orjson.loads(out)["error"]["code"] == "payload_too_large"
    assert simulator.state.requests == []


async def test_send_retries_a_503_with_one_idempotency_key(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, tmp_path: Path
) -> None:
    # The gateway's own 4 attempts all meet 3002 → it answers 503 with
    # Retry-After; the command waits and sends again, and Chert has recovered.
    simulator.faults.update({"fail_sends": 4, "fail_send_code": 3002, "retry_after_seconds": 0})
    photo = write(tmp_path, "photo.png", "image/png", 20_000)
    code, out, err = await gateway_cli(
        "send", str(photo), "--chat", CHAT_ID, "--json",
        "--gateway", str(gateway.make_url("")).rstrip("/"),
    )  # fmt: skip
    assert code == 0, err
    attempts = simulator.state.requests_to("POST", "/messages")
    assert len(attempts) == 5  # 4 by the gateway for the first request, 1 for the retry
    assert len({a.json["message"]["idempotency_key"] for a in attempts}) == 1
    assert len(simulator.state.messages) == 1
    assert orjson.loads(out)["message"]["id"] == simulator.state.messages[0]["id"]


async def test_send_to_nowhere_fails_cleanly(tmp_path: Path) -> None:
    photo = write(tmp_path, "photo.png", "image/png", 1000)
    code, _, err = await gateway_cli(
        "send", str(photo), "--chat", CHAT_ID, "--gateway", "http://127.0.0.1:9"
    )
    assert code != 0
    assert "gateway_unreachable" in err


async def test_demo_reports_what_happened() -> None:
    code, out, err = await gateway_cli("demo", "--size-mb", "3")
    assert code == 0, err
    for needle in (
        "Chert attachment id",
        "Chert message id",
        "3,145,728 bytes",
        "throughput",
        "peak memory",
        'chert_gateway_requests_total{outcome="sent",route="send_file"} 1.0',
    ):
        assert needle in out


async def test_the_python_client_streams_and_raises_typed_errors(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path
) -> None:
    gateway = await make_gateway(GATEWAY_MAX_UPLOAD_BYTES=500_000)
    url = str(gateway.make_url("")).rstrip("/")
    photo = write(tmp_path, "photo.heic", "image/heic", 100_000)
    sent: list[int] = []
    async with GatewayClient(url) as client:
        answer = await client.send_file(photo, CHAT_ID, text="hi", progress=sent.append)
        assert answer["content_type"] == "image/heic"
        assert sum(sent) == 100_000
        uploaded = await client.upload(photo)
        assert uploaded["expires_at"]
        with pytest.raises(PayloadTooLargeError) as too_big:
            await client.send_file(write(tmp_path, "big.png", "image/png", 600_000), CHAT_ID)
        assert too_big.value.status == 413
        assert too_big.value.request_id
        with pytest.raises(UnsupportedMediaTypeError):
            await client.send_file(tmp_path / "photo.heic", CHAT_ID, content_type="text/plain")
    async with GatewayClient("http://127.0.0.1:9", attempts=2) as nowhere:
        with pytest.raises(GatewayUnreachableError):
            await nowhere.send_file(photo, CHAT_ID)


async def test_the_blocking_client_in_three_lines(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, tmp_path: Path
) -> None:
    photo = write(tmp_path, "photo.png", "image/png", 10_000)
    url = str(gateway.make_url("")).rstrip("/")

    def blocking_caller() -> dict[str, Any]:
        client = BlockingGatewayClient(url)
        return client.send_file(photo, CHAT_ID, text="sync")

    # A thread, as blocking code would run; the test's loop keeps serving meanwhile.
    answer = await asyncio.to_thread(blocking_caller)
    assert answer["message"]["status"] == "sent"


async def test_the_python_client_has_every_call(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, tmp_path: Path
) -> None:
    """send, send several, upload only, Chert's JSON, download, a stream."""
    url = str(gateway.make_url("")).rstrip("/")
    pdf = write(tmp_path, "invoice.pdf", "application/pdf", 80_000)
    retries: list[Retry] = []
    async with GatewayClient(url, on_retry=retries.append) as client:
        uploaded = await client.upload(pdf)
        sent = await client.send_message(
            CHAT_ID,
            [
                {"type": "text", "value": "Your invoice"},
                {"type": "media", "attachment_id": uploaded["attachment_id"]},
            ],
        )
        assert sent["message"]["parts"][1]["attachment_id"] == uploaded["attachment_id"]

        several = await client.send_files([pdf, pdf], CHAT_ID, text="two")
        assert len(several["attachments"]) == 2

        with pdf.open("rb") as stream:
            streamed = await client.send_file(stream, CHAT_ID, filename="streamed.pdf")
        assert streamed["filename"] == "streamed.pdf"
        assert streamed["sha256"] == uploaded["sha256"]

        where = tmp_path / "down"
        where.mkdir()
        saved = await client.download(uploaded["attachment_id"], where)
        assert saved == where / "invoice.pdf"
        assert saved.read_bytes() == pdf.read_bytes()
        into = io.BytesIO()
        assert await client.download(uploaded["attachment_id"], into) is None
        assert into.getvalue() == pdf.read_bytes()
        with pytest.raises(NotFoundError):
            await client.download("nope", tmp_path / "nope.pdf")
        assert not (tmp_path / "nope.pdf").exists()
    assert retries == []
    assert len(simulator.state.messages) == 3


async def test_the_python_client_refuses_a_url_it_cannot_use() -> None:
    with pytest.raises(ValueError, match=re.escape("try http://127.0.0.1:8080")):
        GatewayClient("127.0.0.1:8080")
    for usable in ("http://127.0.0.1:8790", "https://gw.internal/chert/", "unix:/run/gw.sock"):
        GatewayClient(usable)  # a path prefix, behind a proxy, is kept


async def test_the_python_client_tells_of_each_retry_and_keeps_one_key(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, tmp_path: Path
) -> None:
    simulator.faults.update({"fail_sends": 4, "fail_send_code": 3002})
    retries: list[Retry] = []
    url = str(gateway.make_url("")).rstrip("/")
    async with GatewayClient(url, on_retry=retries.append) as client:
        answer = await client.send_file(write(tmp_path, "a.png", "image/png", 1000), CHAT_ID)
    assert answer["message"]["status"] == "sent"
    assert [r.attempt for r in retries] == [2]
    assert retries[0].reason.startswith("upstream_unavailable")
