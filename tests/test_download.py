"""Metadata and content downloads through the gateway."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.gateway_calls import png_bytes, send
from tests.processes import curl
from tests.samples import sample


async def upload(client: TestClient[Any, Any], body: bytes) -> str:
    response = await client.post(
        "/v1/attachments",
        data=io.BytesIO(body),
        headers={"Content-Type": "image/png", "X-Filename": "a.png"},
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["attachment_id"])


async def test_upload_only_then_metadata_and_content(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    simulator.tenant = "acme"
    client = await make_gateway(CHERT_TENANT="acme")
    body = png_bytes(3_000_000)
    attachment_id = await upload(client, body)
    assert simulator.state.messages == []

    response = await client.get(f"/v1/attachments/{attachment_id}")
    meta = (await response.json())["attachment"]
    assert (meta["filename"], meta["size_bytes"]) == ("a.png", len(body))

    response = await client.get(f"/v1/attachments/{attachment_id}/content")
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Length"] == str(len(body))
    assert hashlib.sha256(await response.read()).digest() == hashlib.sha256(body).digest()
    (get,) = simulator.state.requests_to("GET", "/content")
    assert get.header("x-chert-tenant") == "acme"


async def test_an_unknown_attachment_is_404(gateway: TestClient[Any, Any]) -> None:
    for path in ("/v1/attachments/nope", "/v1/attachments/nope/content"):
        response = await gateway.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"]["code"] == "not_found"


async def test_a_bad_attachment_id_is_400(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.get("/v1/attachments/a.b")
    assert response.status == 400


async def test_sent_file_can_be_read_back(gateway: TestClient[Any, Any]) -> None:
    body = png_bytes(10_000)
    status, answer, _ = await send(gateway, body)
    assert status == 201
    response = await gateway.get(f"/v1/attachments/{answer['attachment_id']}/content")
    assert await response.read() == body


async def test_upload_only_takes_put_like_curl_t(gateway: TestClient[Any, Any]) -> None:
    response = await gateway.put(
        "/v1/attachments", data=io.BytesIO(png_bytes(1000)), headers={"Content-Type": "image/png"}
    )
    assert response.status == 201


async def test_a_download_carries_the_request_id_though_its_headers_go_first(
    gateway: TestClient[Any, Any],
) -> None:
    attachment_id = await upload(gateway, png_bytes(300_000))
    path = f"/v1/attachments/{attachment_id}/content"
    response = await gateway.get(path, headers={"X-Request-ID": "caller-chose-this"})
    assert response.status == 200
    assert response.headers["X-Request-ID"] == "caller-chose-this"
    await response.read()
    response = await gateway.get(path)
    assert len(response.headers["X-Request-ID"]) == 32  # one of the gateway's own
    await response.read()


async def upload_named(client: TestClient[Any, Any], body: bytes, filename: str) -> str:
    response = await client.post(
        "/v1/attachments", data=io.BytesIO(body), params={"filename": filename}
    )
    assert response.status == 201, await response.text()
    return str((await response.json())["attachment_id"])


@pytest.mark.parametrize(
    ("filename", "disposition"),
    [
        ("invoice.pdf", 'attachment; filename="invoice.pdf"'),
        (
            "Rechnung März.pdf",
            "attachment; filename=\"Rechnung M_rz.pdf\"; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf",
        ),
        (
            'say "hi".pdf',
            "attachment; filename=\"say _hi_.pdf\"; filename*=UTF-8''say%20%22hi%22.pdf",
        ),
    ],
)
async def test_a_download_is_named_as_registered(
    gateway: TestClient[Any, Any], filename: str, disposition: str
) -> None:
    attachment_id = await upload_named(gateway, sample("application/pdf", 2000), filename)
    response = await gateway.get(f"/v1/attachments/{attachment_id}/content")
    assert response.status == 200
    assert response.headers["Content-Disposition"] == disposition
    assert response.content_disposition is not None
    assert response.content_disposition.filename == filename


async def test_head_answers_the_downloads_headers_without_its_body(
    gateway: TestClient[Any, Any],
) -> None:
    body = sample("application/pdf", 200_000)
    attachment_id = await upload_named(gateway, body, "invoice.pdf")
    response = await gateway.head(f"/v1/attachments/{attachment_id}/content")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == 'attachment; filename="invoice.pdf"'
    assert response.headers["X-Request-ID"]
    assert await response.read() == b""
    missing = await gateway.head("/v1/attachments/nope/content")
    assert missing.status == 404


async def test_without_metadata_the_name_is_the_id_and_the_types_extension(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    """Inbound media ids have content but no registered upload."""
    attachment_id = await upload_named(gateway, sample("image/jpeg", 2000), "photo.jpg")
    simulator.faults.update(
        {"canned": {"metadata": [{"status": 404, "body": {"error": {"code": 1004}}}]}}
    )
    response = await gateway.get(f"/v1/attachments/{attachment_id}/content")
    assert response.status == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="{attachment_id}.jpg"'


async def test_curl_oj_saves_the_registered_name(
    gateway: TestClient[Any, Any], tmp_path: Path
) -> None:
    body = sample("application/pdf", 50_000)
    attachment_id = await upload_named(gateway, body, "invoice.pdf")
    url = str(gateway.make_url(f"/v1/attachments/{attachment_id}/content"))
    status, _ = await curl("-OJ", "--output-dir", str(tmp_path), url)
    assert status == 200
    assert (tmp_path / "invoice.pdf").read_bytes() == body


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({"attachment": ["not", "an", "object"]}, None),
        ({"attachment": {"filename": 42}}, None),
        ({"attachment": {"filename": "x" * 5000 + ".pdf"}}, "x" * 255),
    ],
)
async def test_metadata_of_any_shape_still_names_the_download(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    metadata: dict[str, Any],
    named: str | None,
) -> None:
    attachment_id = await upload_named(gateway, sample("application/pdf", 2000), "a.pdf")
    simulator.faults.update({"canned": {"metadata": [{"status": 200, "body": metadata}]}})
    response = await gateway.get(f"/v1/attachments/{attachment_id}/content")
    assert response.status == 200
    expected = named or f"{attachment_id}.pdf"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{expected}"'
