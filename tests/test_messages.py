"""POST /v1/chats/{chat_id}/messages: Chert's JSON, or a form with files."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import requests
from aiohttp.test_utils import TestClient

from gateway.simulator import ChertSimulator
from tests.constants import CHAT_ID
from tests.processes import curl
from tests.raw_http import until
from tests.samples import sample

PATH = f"/v1/chats/{CHAT_ID}/messages"


def filenames_in_order(simulator: ChertSimulator, parts: list[dict[str, Any]]) -> list[str]:
    return [
        simulator.state.attachments[p["attachment_id"]].filename
        for p in parts
        if p["type"] == "media"
    ]


async def test_curl_form_with_a_caption_and_three_images_is_one_grouped_send(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, tmp_path: Path
) -> None:
    for name, kind in (
        ("one.png", "image/png"),
        ("two.jpg", "image/jpeg"),
        ("three.gif", "image/gif"),
    ):
        (tmp_path / name).write_bytes(sample(kind, 200_000))
    status, out = await curl(
        "-F",
        "text=Our trip",
        "-F",
        "photo=@one.png",
        "-F",
        "photo=@two.jpg",
        "-F",
        "photo=@three.gif",
        str(gateway.make_url(PATH)),
        cwd=tmp_path,
    )
    assert status == 201, out
    answer = orjson.loads(out)

    assert [a["filename"] for a in answer["attachments"]] == ["one.png", "two.jpg", "three.gif"]
    (body,) = simulator.state.send_bodies
    assert body["parallel_attachments"] is True
    parts = body["message"]["parts"]
    assert parts[0] == {"type": "text", "value": "Our trip"}
    assert filenames_in_order(simulator, parts) == ["one.png", "two.jpg", "three.gif"]
    assert answer["message"]["id"] == simulator.state.messages[0]["id"]
    assert len(simulator.state.requests_to("POST", "/messages")) == 1


async def test_requests_files_are_sent_in_form_order_without_grouping(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    url = str(gateway.make_url(PATH))
    files = [
        ("doc", ("report.pdf", sample("application/pdf", 50_000), "application/pdf")),
        ("img", ("chart.png", sample("image/png", 50_000), "image/png")),
    ]
    data = {"text": "Figures", "rich_link": "https://example.com/demo"}
    response = await asyncio.to_thread(
        requests.post, url, files=files, data=data, headers={"Idempotency-Key": "req-1"}, timeout=30
    )
    assert response.status_code == 201, response.text
    (body,) = simulator.state.send_bodies
    assert "parallel_attachments" not in body  # a PDF is not an image
    kinds = [p["type"] for p in body["message"]["parts"]]
    # requests writes fields before files.
    assert kinds == ["text", "rich_link", "media", "media"]
    assert filenames_in_order(simulator, body["message"]["parts"]) == ["report.pdf", "chart.png"]
    assert body["message"]["idempotency_key"] == "req-1"


async def test_each_file_uploads_while_the_next_part_is_still_arriving(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    boundary = "gw-test-boundary"
    first = sample("image/png", 300_000)
    second = sample("image/png", 300_000)

    def file_part(name: str, data: bytes) -> bytes:
        return (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="{name}"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )

    async def body() -> AsyncIterator[bytes]:
        yield file_part("first.png", first)
        # The next part's opening tells the parser the first one is complete.
        yield f"--{boundary}\r\n".encode()
        # Hold the second part back until Chert holds the whole first file.
        await until(lambda: any(r.body_complete for r in simulator.state.requests_to("PUT")))
        yield file_part("second.png", second)[len(f"--{boundary}\r\n") :]
        yield f"--{boundary}--\r\n".encode()

    response = await gateway.post(
        PATH, data=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status == 201, await response.text()
    (body_sent,) = simulator.state.send_bodies
    assert filenames_in_order(simulator, body_sent["message"]["parts"]) == [
        "first.png",
        "second.png",
    ]


async def test_a_bad_file_in_a_form_means_no_message(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    form = aiohttp.FormData()
    form.add_field("text", "hello")
    form.add_field(
        "a", io.BytesIO(sample("image/png", 1000)), filename="ok.png", content_type="image/png"
    )
    form.add_field(
        "b", io.BytesIO(b"#!/bin/sh\necho hi"), filename="run.sh", content_type="text/x-sh"
    )
    response = await gateway.post(PATH, data=form)
    assert response.status == 415
    assert simulator.state.requests_to("POST", "/messages") == []


async def test_a_failed_send_after_uploads_is_502_and_nothing_is_sent(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"fail_sends": 1, "fail_send_code": 4001})
    form = aiohttp.FormData()
    form.add_field(
        "a", io.BytesIO(sample("image/png", 1000)), filename="a.png", content_type="image/png"
    )
    response = await gateway.post(PATH, data=form)
    assert response.status == 502
    assert simulator.state.messages == []


async def test_form_field_errors_are_400(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    cases = [{"mystery": "x"}, {"rich_link": "not a url"}, {"parallel_attachments": "maybe"}, {}]
    for fields in cases:
        form = aiohttp.FormData(default_to_multipart=True)
        for name, value in fields.items():
            form.add_field(name, value)
        if not fields:
            form.add_field("text", "")
        response = await gateway.post(PATH, data=form)
        assert response.status == 400, fields
        assert (await response.json())["error"]["code"] == "invalid_request"
    assert simulator.state.requests == []


async def test_json_send_is_forwarded_with_its_key(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    body = {
        "message": {
            "parts": [{"type": "text", "value": "How about 3pm PT?"}],
            "idempotency_key": "followup-2026-05-01-002",
        }
    }
    response = await gateway.post(PATH, json=body)
    assert response.status == 201
    answer = await response.json()
    assert answer["message"]["parts"] == body["message"]["parts"]
    assert list(simulator.state.messages_by_key) == ["followup-2026-05-01-002"]


async def test_json_send_is_retried_on_3002_with_one_key(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"fail_sends": 2, "fail_send_code": 3002, "retry_after_seconds": 0})
    body = {"message": {"parts": [{"type": "text", "value": "hi"}]}}
    response = await gateway.post(PATH, json=body, headers={"Idempotency-Key": "j-1"})
    assert response.status == 201
    assert len(simulator.state.requests_to("POST", "/messages")) == 3
    assert list(simulator.state.messages_by_key) == ["j-1"]


async def test_bad_json_sends_are_400_before_chert(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    bad = [
        b"{not json",
        b'{"parts": [{"type": "text", "value": "x"}]}',
        b'{"message": {"parts": []}}',
        b'{"message": {"parts": [{"type": "video", "url": "x"}]}}',
        b'{"message": {"parts": [{"type": "rich_link", "url": "ftp://x"}]}}',
        b'{"message": {"parts": [{"type": "text", "value": "x", "extra": 1}]}}',
        b'{"parallel_attachments": true,'
        b' "message": {"parts": [{"type": "media", "attachment_id": "a"}]}}',
    ]
    for raw in bad:
        response = await gateway.post(PATH, data=raw, headers={"Content-Type": "application/json"})
        assert response.status == 400, raw
    response = await gateway.post(PATH, data=b"hi", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    assert simulator.state.requests == []


async def test_forms_and_json_sends_honour_idempotency(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    body = {"message": {"parts": [{"type": "text", "value": "once"}]}}
    headers = {"Idempotency-Key": "same"}
    first = await (await gateway.post(PATH, json=body, headers=headers)).json()
    second = await gateway.post(PATH, json=body, headers=headers)
    assert await second.json() == first
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(simulator.state.messages) == 1


async def test_an_explicit_parallel_attachments_false_wins_over_the_default(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    form = aiohttp.FormData()
    form.add_field("parallel_attachments", "false")
    for name in ("a.png", "b.png"):
        form.add_field(
            "f", io.BytesIO(sample("image/png", 1000)), filename=name, content_type="image/png"
        )
    response = await gateway.post(PATH, data=form)
    assert response.status == 201, await response.text()
    (body,) = simulator.state.send_bodies
    assert body["parallel_attachments"] is False
