"""Calling the gateway's single-file route from a test."""

from __future__ import annotations

import io
from typing import Any

from aiohttp.test_utils import TestClient

from tests.constants import CHAT_ID
from tests.samples import sample


def png_bytes(size: int) -> bytes:
    return sample("image/png", size)


async def send(
    client: TestClient[Any, Any],
    body: bytes,
    *,
    content_type: str | None = "image/png",
    chat_id: str = CHAT_ID,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any], Any]:
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    response = await client.request(
        method,
        f"/v1/chats/{chat_id}/attachments",
        data=io.BytesIO(body),
        params=params,
        headers=all_headers,
        skip_auto_headers=["Content-Type"] if content_type is None else (),
    )
    return response.status, await response.json(), response
