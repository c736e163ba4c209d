"""The single-file routes take a form with one file, as the most common
Python upload sends it: `requests.post(url, files={"file": f})`."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient

from gateway.simulator import ChertSimulator
from tests.constants import CHAT_ID
from tests.samples import sample

PDF = sample("application/pdf", 300_000)


async def post(
    client: TestClient[Any, Any], path: str, **kwargs: Any
) -> tuple[int, dict[str, Any], requests.structures.CaseInsensitiveDict[str]]:
    """requests, the real client, in a thread beside the loop serving the gateway."""
    url = str(client.make_url(path))
    response = await asyncio.to_thread(requests.post, url, timeout=30, **kwargs)
    return response.status_code, response.json(), response.headers


async def test_requests_files_sends_one_file_as_the_single_file_route_answers(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    status, answer, _ = await post(
        gateway,
        f"/v1/chats/{CHAT_ID}/attachments",
        files={"file": ("invoice.pdf", PDF)},
        data={"text": "See attached."},
    )
    assert status == 201, answer
    assert answer["filename"] == "invoice.pdf"
    assert answer["content_type"] == "application/pdf"
    assert answer["size_bytes"] == len(PDF)
    assert answer["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert set(answer["timings"]) == {"create_slot_s", "upload_s", "send_s", "total_s"}
    assert answer["timings"]["upload_s"] > 0
    (message,) = simulator.state.messages
    assert message["parts"] == [
        {"type": "text", "value": "See attached."},
        {"type": "media", "attachment_id": answer["attachment_id"]},
    ]
    assert simulator.state.attachments[answer["attachment_id"]].sha256 == answer["sha256"]


async def test_a_file_part_without_a_type_is_named_by_its_extension(
    gateway: TestClient[Any, Any],
) -> None:
    with_no_type = {"file": ("photo.png", sample("image/png", 1000), None)}
    status, answer, _ = await post(gateway, f"/v1/chats/{CHAT_ID}/attachments", files=with_no_type)
    assert status == 201, answer
    assert answer["content_type"] == "image/png"


@pytest.mark.parametrize(
    ("form", "says"),
    [
        (
            {"files": [("a", ("a.pdf", PDF)), ("b", ("b.pdf", PDF))]},
            "/v1/chats/{chat_id}/messages",
        ),
        ({"files": {"file": ("a.pdf", PDF)}, "data": {"rich_link": "https://a.b/"}}, "rich_link"),
        ({"files": {"text": (None, "only a caption")}}, "no file part"),
    ],
)
async def test_what_the_single_file_route_does_not_take_is_a_400_that_says_where_to_go(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, form: dict[str, Any], says: str
) -> None:
    status, answer, _ = await post(gateway, f"/v1/chats/{CHAT_ID}/attachments", **form)
    assert status == 400, answer
    assert says in answer["error"]["message"]
    assert simulator.state.messages == []


async def test_upload_only_takes_a_form_with_one_file(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    status, answer, _ = await post(gateway, "/v1/attachments", files={"file": ("a.pdf", PDF)})
    assert status == 201, answer
    assert answer["expires_at"]
    assert "message" not in answer
    assert simulator.state.messages == []
    status, answer, _ = await post(
        gateway, "/v1/attachments", files={"file": ("a.pdf", PDF)}, data={"text": "no"}
    )
    assert status == 400, answer


async def test_a_repeated_form_replays_and_a_different_one_is_422(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    path = f"/v1/chats/{CHAT_ID}/attachments"
    headers = {"Idempotency-Key": "form-once"}
    first = await post(gateway, path, files={"file": ("a.pdf", PDF)}, headers=headers)
    again = await post(gateway, path, files={"file": ("a.pdf", PDF)}, headers=headers)
    assert first[0] == again[0] == 201
    assert again[1] == first[1]
    assert again[2]["Idempotent-Replayed"] == "true"
    other = sample("application/pdf", 1000)
    status, answer, _ = await post(gateway, path, files={"file": ("a.pdf", other)}, headers=headers)
    assert status == 422, answer
    assert len(simulator.state.messages) == 1
