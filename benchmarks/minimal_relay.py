"""The least an aiohttp relay can do: Chert's three calls per request, the
body streamed through and hashed with SHA-256, and nothing else (no checks,
limits, retries, metrics, logs or idempotency). The benchmark runs it
beside the gateway as a floor: what aiohttp itself costs per upload.

    python benchmarks/minimal_relay.py CHERT_URL SECRET PORT
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

PIECE = 256 * 1024


def main(chert: str, secret: str, port: int) -> None:
    auth = {"Authorization": f"Bearer {secret}"}
    json_headers = {**auth, "Content-Type": "application/json"}
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
            app[session_key] = client
            yield

    async def relay(request: web.Request) -> web.Response:
        client = request.app[session_key]
        size = request.content_length or 0
        slot_body = {"filename": "a.png", "content_type": "image/png", "size_bytes": size}
        async with client.post(
            f"{chert}/api/v1/attachments", data=orjson.dumps(slot_body), headers=json_headers
        ) as response:
            slot = orjson.loads(await response.read())
        digest = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            while piece := await request.content.read(PIECE):
                digest.update(piece)
                yield piece

        put_headers = {**auth, "Content-Type": "image/png", "Content-Length": str(size)}
        async with client.put(slot["upload_url"], data=body(), headers=put_headers) as response:
            await response.read()
        part = {"type": "media", "attachment_id": slot["attachment_id"]}
        message = {"message": {"parts": [part]}}
        async with client.post(
            f"{chert}/api/v1/chats/{request.match_info['chat_id']}/messages",
            data=orjson.dumps(message),
            headers=json_headers,
        ) as response:
            sent = orjson.loads(await response.read())
        answer = {"attachment_id": slot["attachment_id"], "sha256": digest.hexdigest(), **sent}
        return web.Response(body=orjson.dumps(answer), status=201, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/v1/chats/{chat_id}/attachments", relay)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
