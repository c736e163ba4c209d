"""The SHA-256 in every answer is exactly the digest of the bytes Chert
received, whether it is taken on the event loop or on a hashing thread, and
stays so when uploads beside it fail mid-stream."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api import hashing
from gateway.api.hashing import Hashing, usable_cpus
from gateway.api.keys import HASHING
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.gateway_calls import send
from tests.raw_http import disconnect_mid_body, until
from tests.samples import PNG_MAGIC
from tests.test_spool import send_chunked

MODES = ["0", "1"]  # inline on the loop; one hashing thread


def stored_digest(simulator: ChertSimulator, answer: dict[str, Any]) -> str:
    stored = simulator.state.attachments[answer["attachment_id"]]
    assert stored.sha256 is not None
    return stored.sha256


@pytest.mark.parametrize("threads", MODES)
async def test_every_answer_has_the_digest_of_what_chert_stored(
    make_gateway: GatewayFactory, simulator: ChertSimulator, threads: str
) -> None:
    client = await make_gateway(GATEWAY_SHA256_THREADS=threads)
    assert client.server.app[HASHING].threads == int(threads)  # type: ignore[union-attr]
    # Below and above the size that goes to the thread, several at once so
    # one thread hashes pieces of several bodies in turn.
    bodies = [PNG_MAGIC + os.urandom(size) for size in (1, 70_000, 3_000_000, 5_500_000)]
    answers = await asyncio.gather(*(send(client, body) for body in bodies))
    for body, (status, answer, _) in zip(bodies, answers, strict=True):
        assert status == 201, answer
        assert answer["sha256"] == hashlib.sha256(body).hexdigest()
        assert answer["sha256"] == stored_digest(simulator, answer)


@pytest.mark.parametrize("threads", MODES)
async def test_digests_stay_exact_when_uploads_beside_them_fail_mid_stream(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Path, threads: str
) -> None:
    client = await make_gateway(GATEWAY_SHA256_THREADS=threads, GATEWAY_SPOOL_DIR=tmp_path)
    # Chert resets a streamed PUT part-way: the upload fails, its digest is dropped.
    simulator.faults.update({"reset_put_after_bytes": 1_500_000})
    status, answer, _ = await send(client, PNG_MAGIC + os.urandom(4_000_000))
    assert status == 502, answer
    # A caller leaves in the middle of its body.
    await disconnect_mid_body(client, simulator)
    await until(lambda: len(simulator.state.requests_to("PUT")) == 2)
    # Chert resets a spooled PUT part-way: it goes again, whole, and the
    # digest is of the bytes once, not of both attempts.
    simulator.faults.update({"reset_put_after_bytes": 1_000_000})
    spooled = PNG_MAGIC + os.urandom(3_000_000)
    status, answer = await send_chunked(client, spooled)
    assert status == 201, answer
    assert (
        answer["sha256"] == hashlib.sha256(spooled).hexdigest() == stored_digest(simulator, answer)
    )
    # And the next uploads, on the same thread, are exact.
    for size in (2_000_000, 60_000):
        body = PNG_MAGIC + os.urandom(size)
        status, answer, _ = await send(client, body)
        assert status == 201, answer
        assert (
            answer["sha256"] == hashlib.sha256(body).hexdigest() == stored_digest(simulator, answer)
        )


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=0, max_size=40_000), max_size=30),
    backlog=st.integers(min_value=1, max_value=100_000),
    thread_backlog=st.integers(min_value=1, max_value=200_000),
)
def test_a_threaded_digest_is_hashlibs_whatever_the_chunks_and_backlog(
    chunks: list[bytes], backlog: int, thread_backlog: int
) -> None:
    async def digest() -> str | None:
        threaded = Hashing(1)
        try:
            body = threaded.digest(size=None)
            for chunk in chunks:
                body.update(chunk)
                if body.behind():
                    await body.caught_up()
            return await body.hexdigest()
        finally:
            threaded.stop()

    previous = hashing.BACKLOG_BYTES, hashing.THREAD_BACKLOG_BYTES
    hashing.BACKLOG_BYTES, hashing.THREAD_BACKLOG_BYTES = backlog, thread_backlog
    try:
        assert asyncio.run(digest()) == hashlib.sha256(b"".join(chunks)).hexdigest()
    finally:
        hashing.BACKLOG_BYTES, hashing.THREAD_BACKLOG_BYTES = previous


async def test_small_bodies_and_disabled_hashing_stay_on_the_loop() -> None:
    threaded = Hashing(1)
    try:
        assert type(threaded.digest(size=1000)).__name__ == "_InlineDigest"
        assert await threaded.digest(enabled=False).hexdigest() is None
        assert type(threaded.digest(size=hashing.THREAD_MIN_BYTES)).__name__ == "_ThreadedDigest"
    finally:
        threaded.stop()


def test_the_choice_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chert_gateway")
    assert Hashing.start(0).threads == 0
    assert Hashing.start(2).threads == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("SHA-256 inline on the event loop") for m in messages)
    assert any(m.startswith("SHA-256 on 2 thread(s)") for m in messages)


def test_auto_uses_one_thread_less_than_the_usable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, threads in ((1.0, 0), (1.5, 0), (2.0, 1), (3.0, 2), (64.0, hashing.MAX_THREADS)):
        monkeypatch.setattr(hashing, "usable_cpus", lambda cpus=cpus: cpus)
        assert Hashing.start(None).threads == threads


def cgroup_tree(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_line)
    return root, proc


def test_a_v2_quota_anywhere_up_the_tree_caps_the_cpus(tmp_path: Path) -> None:
    root, proc = cgroup_tree(
        tmp_path,
        "0::/kubepods/pod1/gateway\n",
        {
            "cpu.max": "max 100000\n",
            "kubepods/pod1/cpu.max": "150000 100000\n",
            "kubepods/pod1/gateway/cpu.max": "max 100000\n",
        },
    )
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(root, proc) == min(affinity, 1.5)


def test_a_v1_quota_caps_the_cpus_and_no_quota_leaves_the_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    root, proc = cgroup_tree(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/pod\n",
        {
            "cpu,cpuacct/pod/cpu.cfs_quota_us": "50000\n",
            "cpu,cpuacct/pod/cpu.cfs_period_us": "100000\n",
        },
    )
    assert usable_cpus(root, proc) == 0.5
    root, proc = cgroup_tree(
        tmp_path / "none",
        "3:cpu,cpuacct:/pod\n",
        {
            "cpu,cpuacct/pod/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/pod/cpu.cfs_period_us": "100000\n",
        },
    )
    assert usable_cpus(root, proc) == affinity
    assert usable_cpus(tmp_path / "nowhere", tmp_path / "missing") == affinity


def test_what_waits_for_a_hashing_thread_is_bounded_whatever_the_uploads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each upload stops handing over chunks while the thread is behind, so
    the chunks held for it stay within its bound plus one per upload."""
    chunk, uploads = 64 * 1024, 6
    monkeypatch.setattr(hashing, "BACKLOG_BYTES", 4 * chunk)
    monkeypatch.setattr(hashing, "THREAD_BACKLOG_BYTES", 8 * chunk)
    seen: list[int] = []

    async def run() -> list[str | None]:
        threaded = Hashing(1)
        try:
            bodies = [threaded.digest(size=None) for _ in range(uploads)]
            worker = threaded._workers[0]

            async def feed(body: hashing.BodyDigest) -> str | None:
                for _ in range(200):
                    body.update(bytes(chunk))
                    seen.append(worker.queued)
                    if body.behind():
                        await body.caught_up()
                    await asyncio.sleep(0)
                return await body.hexdigest()

            return await asyncio.gather(*(feed(body) for body in bodies))
        finally:
            threaded.stop()

    digests = asyncio.run(run())
    assert digests == [hashlib.sha256(bytes(chunk * 200)).hexdigest()] * uploads
    assert max(seen) <= hashing.THREAD_BACKLOG_BYTES + uploads * chunk
    assert max(seen) > hashing.THREAD_BACKLOG_BYTES // 2  # the bound was approached
