"""The streaming promise, measured on the gateway as users run it: its own
process, 100 MB through it, and what Chert saw on the wire."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import BaseTestServer

from gateway.simulator import ChertSimulator
from tests.conftest import CHAT_ID, SECRET, gateway_env, require_tool
from tests.processes import GatewayProcess

SIZE = 100 * 1024 * 1024
MIB = 1024 * 1024
MAX_GROWTH = 32 * MIB


def make_file(path: Path, size: int) -> str:
    """Random bytes (a PNG header first), written in pieces; returns the SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        piece = b"\x89PNG\r\n\x1a\n" + os.urandom(MIB - 8)
        written = 0
        while written < size:
            chunk = piece[: size - written]
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            piece = os.urandom(MIB)
    return digest.hexdigest()


async def curl_upload(url: str, path: Path, *extra: str) -> tuple[int, dict[str, object]]:
    curl = require_tool("curl")
    proc = await asyncio.create_subprocess_exec(
        curl,
        "-sS",
        "-T",
        str(path),
        "-H",
        "Content-Type: image/png",
        "-w",
        "\n%{http_code}",
        *extra,
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    return int(code), orjson.loads(body)


@pytest.mark.slow
async def test_100_mb_streams_with_content_length_in_bounded_memory(
    chert_server: BaseTestServer, simulator: ChertSimulator, tmp_path: Path
) -> None:
    big = tmp_path / "big.png"
    expected_sha = make_file(big, SIZE)
    small = tmp_path / "small.png"
    make_file(small, 300_000)

    env = gateway_env(str(chert_server.make_url("")), CHERT_TIMEOUT="60")
    async with GatewayProcess(env) as gateway:
        url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments?filename=big.png"
        # Warm up (imports, first connection, first buffers), then take the baseline.
        status, _ = await curl_upload(url, small)
        assert status == 201
        baseline = gateway.peak_rss_bytes()

        status, answer = await curl_upload(url, big)
        growth = gateway.peak_rss_bytes() - baseline

    assert status == 201, answer
    assert answer["size_bytes"] == SIZE
    assert answer["sha256"] == expected_sha
    print(f"\npeak RSS growth for 100 MB: {growth / MIB:.1f} MiB (baseline {baseline / MIB:.1f})")
    assert growth < MAX_GROWTH

    put = simulator.state.requests_to("PUT")[-1]
    assert put.header("Content-Length") == str(SIZE)
    assert put.header("Transfer-Encoding") is None
    assert put.header("Authorization") == f"Bearer {SECRET}"
    assert put.body_complete
    assert put.body_bytes == SIZE
    stored = simulator.state.attachments[str(answer["attachment_id"])]
    assert stored.sha256 == expected_sha
    assert len(simulator.state.messages) == 2


@pytest.mark.slow
async def test_an_upstream_that_stops_reading_for_10_s_does_not_grow_memory(
    chert_server: BaseTestServer, simulator: ChertSimulator, tmp_path: Path
) -> None:
    big = tmp_path / "big.png"
    expected_sha = make_file(big, SIZE)
    small = tmp_path / "small.png"
    make_file(small, 300_000)
    env = gateway_env(str(chert_server.make_url("")), CHERT_TIMEOUT="30")
    async with GatewayProcess(env) as gateway:
        url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments"
        assert (await curl_upload(url, small))[0] == 201
        baseline = gateway.peak_rss_bytes()
        simulator.faults.update({"stall_put_seconds": 10.0, "stall_put_after_bytes": 10 * MIB})
        status, answer = await curl_upload(url, big)
        growth = gateway.peak_rss_bytes() - baseline
        async with aiohttp.ClientSession() as http, http.get(f"{gateway.ops}/metrics") as r:
            metrics_text = await r.text()
    assert status == 201, answer
    assert answer["sha256"] == expected_sha
    assert answer["timings"]["upload_s"] >= 10  # type: ignore[operator]
    print(f"\npeak RSS growth with a 10 s upstream stall: {growth / MIB:.1f} MiB")
    assert growth < MAX_GROWTH
    assert SECRET not in metrics_text
    assert SECRET not in gateway.output
