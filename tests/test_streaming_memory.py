"""The streaming promise, measured on the gateway as users run it: its own
process, 100 MB through it, and what Chert saw on the wire."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import BaseTestServer

from gateway.api import hashing
from gateway.simulator import ChertSimulator
from tests.conftest import gateway_env
from tests.constants import CHAT_ID, SECRET
from tests.processes import GatewayProcess, curl
from tests.samples import MIB, make_file

SIZE = 100 * 1024 * 1024
MAX_GROWTH = 32 * MIB


async def curl_upload(url: str, path: Path) -> tuple[int, dict[str, object]]:
    status, body = await curl("-T", str(path), "-H", "Content-Type: image/png", url)
    return status, orjson.loads(body)


@dataclass
class Files:
    big: Path
    big_sha256: str
    small: Path


@pytest.fixture
def files(tmp_path: Path) -> Files:
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    sha = make_file(big, SIZE)
    make_file(small, 300_000)
    return Files(big, sha, small)


async def warm_up(gateway: GatewayProcess, url: str, files: Files) -> int:
    """One small upload (imports, first connection, first buffers); then the baseline."""
    status, _ = await curl_upload(url, files.small)
    assert status == 201
    return gateway.peak_rss_bytes()


@pytest.mark.slow
async def test_100_mb_streams_with_content_length_in_bounded_memory(
    chert_server: BaseTestServer, simulator: ChertSimulator, files: Files
) -> None:
    expected_sha = files.big_sha256
    env = gateway_env(str(chert_server.make_url("")), CHERT_TIMEOUT="60")
    async with GatewayProcess(env) as gateway:
        url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments?filename=big.png"
        baseline = await warm_up(gateway, url, files)
        status, answer = await curl_upload(url, files.big)
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
    chert_server: BaseTestServer, simulator: ChertSimulator, files: Files
) -> None:
    env = gateway_env(str(chert_server.make_url("")), CHERT_TIMEOUT="30")
    async with GatewayProcess(env) as gateway:
        url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments"
        baseline = await warm_up(gateway, url, files)
        simulator.faults.update({"stall_put_seconds": 10.0, "stall_put_after_bytes": 10 * MIB})
        status, answer = await curl_upload(url, files.big)
        growth = gateway.peak_rss_bytes() - baseline
        async with aiohttp.ClientSession() as http, http.get(f"{gateway.ops}/metrics") as r:
            metrics_text = await r.text()
    assert status == 201, answer
    assert answer["sha256"] == files.big_sha256
    assert answer["timings"]["upload_s"] >= 10  # type: ignore[operator]
    print(f"\npeak RSS growth with a 10 s upstream stall: {growth / MIB:.1f} MiB")
    assert growth < MAX_GROWTH
    assert SECRET not in metrics_text
    assert SECRET not in gateway.output


@pytest.mark.slow
async def test_a_100_mb_download_streams_through_in_bounded_memory(
    chert_server: BaseTestServer, simulator: ChertSimulator, files: Files, tmp_path: Path
) -> None:
    env = gateway_env(str(chert_server.make_url("")), CHERT_TIMEOUT="60")
    async with GatewayProcess(env) as gateway:
        status, body = await curl(
            "-T", str(files.big), "-H", "Content-Type: image/png", f"{gateway.api}/v1/attachments"
        )
        assert status == 201, body
        attachment_id = orjson.loads(body)["attachment_id"]
        baseline = gateway.peak_rss_bytes()
        copy = tmp_path / "copy.png"
        status, _ = await curl(
            "-o", str(copy), f"{gateway.api}/v1/attachments/{attachment_id}/content"
        )
        growth = gateway.peak_rss_bytes() - baseline
    assert status == 200
    assert copy.stat().st_size == SIZE
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == files.big_sha256
    print(f"\npeak RSS growth for a 100 MB download: {growth / MIB:.1f} MiB")
    assert growth < MAX_GROWTH


@pytest.mark.slow
@pytest.mark.parametrize("threads", [0, 1])
async def test_many_concurrent_uploads_stay_in_bounded_memory(
    chert_server: BaseTestServer,
    simulator: ChertSimulator,
    files: Files,
    tmp_path: Path,
    threads: int,
) -> None:
    """docs/deploy.md budgets about 1 MiB per upload allowed in flight: the
    first quarter read 1 MiB pieces (about 2 MiB each), the rest 256 KiB.
    A hashing thread may hold its own backlog on top, plus one piece per
    upload (tests/test_hashing.py); how much of it fills depends on how the
    machine schedules the thread, so it is allowed for in full."""
    concurrent = 16
    upload = tmp_path / "eight.png"
    make_file(upload, 8 * MIB)
    env = gateway_env(
        str(chert_server.make_url("")),
        CHERT_TIMEOUT="60",
        GATEWAY_MAX_IN_FLIGHT=concurrent,
        GATEWAY_SHA256_THREADS=threads,
    )
    async with GatewayProcess(env) as gateway:
        url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments"
        baseline = await warm_up(gateway, url, files)
        results = await asyncio.gather(*(curl_upload(url, upload) for _ in range(concurrent)))
        growth = gateway.peak_rss_bytes() - baseline
    assert [status for status, _ in results] == [201] * concurrent
    print(
        f"\npeak RSS growth for {concurrent} x 8 MB at once, {threads} thr.: {growth / MIB:.1f} MiB"
    )
    # 128 MB moved at once: a few pieces per upload, not files, and not
    # large pieces for every upload (that measured about 2.6 MiB each).
    pieces = concurrent * 1.5 * MIB
    hashing_backlog = threads * (hashing.THREAD_BACKLOG_BYTES + concurrent * MIB)
    assert growth < pieces + hashing_backlog
