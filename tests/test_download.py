"""Metadata and content downloads through the gateway."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.gateway_calls import png_bytes, send


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
