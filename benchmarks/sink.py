"""A lean Chert for the benchmark: the three calls answered by a bare
asyncio protocol, the PUT's body counted and dropped.

The Chert simulator is an aiohttp application; as the benchmark's far end
on a 2-core machine its own CPU slowed the fast paths (direct, nginx) more
than the gateway, and the ratios came out flattering. On the nginx path
this sink keeps 0.40 of a core busy for 100 MB uploads and 0.15 for 64 KB
ones, against the simulator's 0.65 and 0.59 (docs/performance.md).
It checks nothing beyond what framing needs: correctness is the tests' job,
against the simulator. Like the simulator, it lists the calls it took at
`GET /_simulator/requests` (who called, over which TLS cipher, on which
connection), so the benchmark can report what was negotiated.

    python benchmarks/sink.py PORT [--tls-cert PEM --tls-key PEM]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import uuid

import orjson

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024
# The headers that say who called, kept for /_simulator/requests.
KEPT_HEADERS = (b"user-agent", b"x-via")
CALLS: list[dict[str, object]] = []


def answer(status: int, body: object) -> bytes:
    payload = orjson.dumps(body)
    reason = b"OK" if status == 200 else b"Not Found"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (status, reason, len(payload))
        + payload
    )


class Sink(asyncio.Protocol):
    """One keep-alive connection: a request's head, then its body, in turn."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.request: tuple[bytes, bytes] | None = None  # method, path
        self.remaining = 0
        self.body = bytearray()
        self.keep_body = False
        self.peer: object = None
        self.tls: ssl.SSLObject | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.tls = transport.get_extra_info("ssl_object")

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.request is None:
                view = self._take_head(view)
            else:
                taken = min(self.remaining, len(view))
                if self.keep_body:
                    self.body += view[:taken]
                self.remaining -= taken
                view = view[taken:]
            if self.request is not None and self.remaining == 0:
                self._respond()

    def _take_head(self, view: memoryview) -> memoryview:
        self.head += view
        end = self.head.find(HEAD_END)
        if end < 0:
            if len(self.head) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return memoryview(b"")
        lines = bytes(self.head[:end]).split(b"\r\n")
        rest = memoryview(bytes(self.head[end + len(HEAD_END) :]))
        self.head.clear()
        method, path, _ = lines[0].split(b" ", 2)
        self.request = (method, path)
        self.remaining = 0
        kept = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.remaining = int(value)
            elif name in KEPT_HEADERS:
                kept.append([name.decode(), value.strip().decode()])
        self.keep_body = method == b"POST"
        CALLS.append(
            {
                "headers": kept,
                "peer": self.peer,
                "tls_cipher": cipher[0] if (cipher := self.tls and self.tls.cipher()) else None,
                "tls_resumed": self.tls.session_reused if self.tls else False,
            }
        )
        return rest

    def _respond(self) -> None:
        assert self.request is not None
        assert self.transport is not None
        method, path = self.request
        body = orjson.loads(self.body) if self.body else {}
        self.request, self.body = None, bytearray()
        if method == b"POST" and path == b"/api/v1/attachments":
            attachment_id = uuid.uuid4().hex
            reply = {
                "attachment_id": attachment_id,
                "upload_url": f"{self.origin}/api/v1/attachments/{attachment_id}/upload",
                "required_headers": {"content-type": body.get("content_type", "")},
                "expires_at": "2099-01-01T00:00:00Z",
            }
            self.transport.write(answer(200, reply))
        elif method == b"PUT" and path.endswith(b"/upload"):
            attachment_id = path.split(b"/")[-2].decode()
            self.transport.write(answer(200, {"attachment": {"attachment_id": attachment_id}}))
        elif method == b"GET" and path == b"/_simulator/requests":
            self.transport.write(answer(200, CALLS))
        elif method == b"POST" and path.endswith(b"/messages"):
            message = {
                "id": uuid.uuid4().hex,
                "chat_id": path.split(b"/")[-2].decode(),
                "parts": body.get("message", {}).get("parts", []),
                "status": "sent",
            }
            self.transport.write(answer(200, {"message": message}))
        else:
            self.transport.write(answer(404, {"error": {"code": 4040, "message": "not here"}}))


async def serve(port: int, tls: ssl.SSLContext | None) -> None:
    origin = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(origin), "127.0.0.1", port, ssl=tls)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    asyncio.run(serve(args.port, tls))


if __name__ == "__main__":
    main()
