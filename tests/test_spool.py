"""Bodies without Content-Length: spooled to disk, then uploaded with it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.api.keys import SPOOL
from gateway.api.spool import FILE_PREFIX, Spool
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.constants import CHAT_ID
from tests.processes import curl
from tests.raw_http import until
from tests.samples import PNG_MAGIC, make_file

PATH = f"/v1/chats/{CHAT_ID}/attachments"


async def chunked(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def send_chunked(client: TestClient[Any, Any], data: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post(PATH, data=chunked(data), headers={"Content-Type": "image/png"})
    return response.status, await response.json()


async def test_chunked_100_mb_is_spooled_and_put_with_content_length(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    client = await make_gateway(GATEWAY_SPOOL_DIR=spool_dir)
    big = tmp_path / "big.png"
    size = 100 * 1024 * 1024
    expected = make_file(big, size)
    url = str(client.make_url(PATH))
    status, answer = await curl(
        "-T", str(big), "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: image/png", url
    )
    assert status == 201, answer

    (put,) = simulator.state.requests_to("PUT")
    assert put.header("Content-Length") == str(size)
    assert put.header("Transfer-Encoding") is None
    assert put.body_complete
    assert simulator.state.attachments[put.path.split("/")[-2]].sha256 == expected
    assert list(spool_dir.iterdir()) == []
    assert client.server.app[SPOOL].used == 0  # type: ignore[union-attr]


async def test_a_chunked_body_over_the_limit_is_413_as_it_passes(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path
) -> None:
    client = await make_gateway(GATEWAY_MAX_UPLOAD_BYTES=1_000_000, GATEWAY_SPOOL_DIR=tmp_path)
    status, answer = await send_chunked(client, os.urandom(3_000_000))
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    assert simulator.state.requests == []
    assert list(tmp_path.iterdir()) == []


async def test_a_full_spool_is_503(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path
) -> None:
    client = await make_gateway(GATEWAY_SPOOL_MAX_BYTES=500_000, GATEWAY_SPOOL_DIR=tmp_path)
    response = await client.post(
        PATH, data=chunked(os.urandom(800_000)), headers={"Content-Type": "image/png"}
    )
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "overloaded"
    assert response.headers["Retry-After"]
    assert simulator.state.requests == []
    assert list(tmp_path.iterdir()) == []


async def test_a_spooled_put_is_retried_after_a_reset(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path
) -> None:
    client = await make_gateway(GATEWAY_SPOOL_DIR=tmp_path)
    simulator.faults.update({"reset_put_after_bytes": 300_000})
    data = PNG_MAGIC + os.urandom(2_000_000)
    status, answer = await send_chunked(client, data)
    assert status == 201, answer
    puts = simulator.state.requests_to("PUT")
    assert [p.body_complete for p in puts] == [False, True]
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(simulator.state.messages) == 1
    assert list(tmp_path.iterdir()) == []


async def test_a_chunked_caller_that_leaves_leaves_no_spool_file(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path
) -> None:
    client = await make_gateway(GATEWAY_SPOOL_DIR=tmp_path)
    assert client.server.host
    assert client.server.port
    _reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    piece = os.urandom(100_000)
    writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    await writer.drain()
    spool = client.server.app[SPOOL]  # type: ignore[union-attr]
    await until(lambda: spool.used > 0)
    writer.close()
    await until(lambda: spool.used == 0)
    await until(lambda: list(tmp_path.iterdir()) == [])
    assert simulator.state.requests == []


async def test_an_empty_chunked_body_is_400(make_gateway: GatewayFactory, tmp_path: Path) -> None:
    client = await make_gateway(GATEWAY_SPOOL_DIR=tmp_path)
    status, answer = await send_chunked(client, b"")
    assert (status, answer["error"]["code"]) == (400, "invalid_request")


def test_sweep_removes_files_of_dead_processes_only(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"{FILE_PREFIX}{dead.stdout.strip()}-abc"
    live = tmp_path / f"{FILE_PREFIX}{os.getpid()}-def"
    other = tmp_path / "unrelated.txt"
    for path in (stale, live, other):
        path.write_bytes(b"x")
    assert Spool(tmp_path, 10).sweep() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
