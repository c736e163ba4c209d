"""The gateway process's life: drain on SIGTERM, the Unix socket listener,
and a log that never holds the secret."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
from aiohttp.test_utils import BaseTestServer

from gateway.simulator import ChertSimulator
from tests.conftest import gateway_env
from tests.constants import CHAT_ID, SECRET
from tests.processes import GatewayProcess, curl
from tests.raw_http import read_json_answer, read_status
from tests.samples import PNG_MAGIC, make_file


async def test_sigterm_drains_in_flight_uploads_then_exits_0(
    chert_server: BaseTestServer, simulator: ChertSimulator, tmp_path: Path
) -> None:
    file = tmp_path / "slow.png"
    make_file(file, 3 * 1024 * 1024)
    env = gateway_env(str(chert_server.make_url("")), GATEWAY_DRAIN_SECONDS="20")
    async with GatewayProcess(env) as gateway:
        url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments"
        # ~3 s at 1 MB/s: long enough to be in flight when SIGTERM lands.
        slow = asyncio.create_task(
            curl("-T", str(file), "-H", "Content-Type: image/png", "--limit-rate", "1M", url)
        )
        async with asyncio.timeout(10):
            while not simulator.state.requests_to("PUT"):
                await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gateway.ops}/readyz") as response:
                assert response.status == 200
            gateway.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with http.get(f"{gateway.ops}/readyz") as response:
                assert response.status == 503
            async with http.post(
                url, data=PNG_MAGIC, headers={"Content-Type": "image/png"}
            ) as response:
                assert response.status == 503
                assert (await response.json())["error"]["code"] == "overloaded"
                assert response.headers["Retry-After"]
        status, body = await slow
        exit_code = await gateway.wait()
    assert status == 201, body
    assert len(simulator.state.messages) == 1
    assert exit_code == 0
    assert SECRET not in gateway.output


async def test_api_on_a_unix_socket(
    chert_server: BaseTestServer, simulator: ChertSimulator, tmp_path: Path
) -> None:
    socket_path = tmp_path / "api.sock"
    env = gateway_env(str(chert_server.make_url("")), GATEWAY_LISTEN=f"unix:{socket_path}")
    file = tmp_path / "a.png"
    make_file(file, 10_000)
    async with GatewayProcess(env) as gateway:
        assert gateway.api == f"unix:{socket_path}"
        status, body = await curl(
            "--unix-socket",
            str(socket_path),
            "-T",
            str(file),
            "-H",
            "Content-Type: image/png",
            f"http://localhost/v1/chats/{CHAT_ID}/attachments",
        )
    assert status == 201, body
    assert len(simulator.state.messages) == 1


async def test_an_upload_cut_by_the_drain_is_told_the_gateway_shut_down(
    chert_server: BaseTestServer, simulator: ChertSimulator
) -> None:
    env = gateway_env(str(chert_server.make_url("")), GATEWAY_DRAIN_SECONDS="0.5")
    async with GatewayProcess(env) as gateway:
        host, port = gateway.api.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        # 10 MB declared, 1 MB sent: in flight, and still far from done when SIGTERM lands.
        writer.write(
            f"POST /v1/chats/{CHAT_ID}/attachments HTTP/1.1\r\nHost: g\r\n"
            "Content-Type: image/png\r\nContent-Length: 10000000\r\n\r\n".encode()
        )
        writer.write(PNG_MAGIC + b"\0" * 1_000_000)
        await writer.drain()
        async with asyncio.timeout(10):
            while not simulator.state.requests_to("PUT"):
                await asyncio.sleep(0.05)
        gateway.signal(signal.SIGTERM)
        assert await read_status(reader) == 503
        answer = await read_json_answer(reader)
        writer.close()
        exit_code = await gateway.wait()
    assert answer["error"]["code"] == "overloaded"
    assert "shut down" in answer["error"]["message"]
    assert simulator.state.messages == []
    assert exit_code == 0
