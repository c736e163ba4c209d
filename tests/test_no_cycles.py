"""The upload paths leave no reference cycles behind, and a broken upload
leaves none that hold its body.

The gateway raises the garbage collector's threshold (`tuning.tune_gc`)
because its hot path frees everything by reference counting; a dependency
or a change that builds cycles per request (a retry library did: about 40
objects per call to Chert) would bring the collector back as a fifth of the
CPU, and would hold memory until the next, now rarer, collection.
"""

from __future__ import annotations

import gc
import io
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.simulator import ChertSimulator
from gateway.state import ADMISSION
from tests.conftest import CHAT_ID
from tests.gateway_calls import png_bytes, send
from tests.raw_http import disconnect_mid_body, wait_for

UPLOADS = 30


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """What the collector finds unreachable, kept for inspection instead of freed."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def kinds(garbage: list[Any]) -> list[tuple[str, int]]:
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage).most_common(8)


async def uploads_leave_no_garbage(
    upload: Callable[[], Awaitable[int]], garbage: list[Any], expected_status: int = 201
) -> None:
    for _ in range(UPLOADS):
        assert await upload() == expected_status
    gc.collect()
    assert garbage == [], f"{len(garbage)} objects in reference cycles: {kinds(garbage)}"


async def test_single_file_uploads_make_no_cycles(
    gateway: TestClient[Any, Any], saved_garbage: list[Any]
) -> None:
    async def upload() -> int:
        status, _, _ = await send(gateway, png_bytes(300_000))
        return status

    await uploads_leave_no_garbage(upload, saved_garbage)


async def test_form_uploads_make_no_cycles(
    gateway: TestClient[Any, Any], saved_garbage: list[Any]
) -> None:
    async def upload() -> int:
        form = aiohttp.FormData()
        form.add_field("text", "hello")
        for name in ("a", "b"):
            form.add_field(
                name,
                io.BytesIO(png_bytes(50_000)),
                filename=f"{name}.png",
                content_type="image/png",
            )
        response = await gateway.post(f"/v1/chats/{CHAT_ID}/messages", data=form)
        await response.read()
        return response.status

    await uploads_leave_no_garbage(upload, saved_garbage)


async def test_chunked_uploads_through_the_spool_make_no_cycles(
    gateway: TestClient[Any, Any], saved_garbage: list[Any]
) -> None:
    async def chunks() -> Any:
        yield png_bytes(100_000)

    async def upload() -> int:
        response = await gateway.post(
            f"/v1/chats/{CHAT_ID}/attachments",
            data=chunks(),
            headers={"Content-Type": "image/png"},
        )
        await response.read()
        return response.status

    await uploads_leave_no_garbage(upload, saved_garbage)


def bytes_held_by_frames(garbage: list[Any], *, skip: str) -> int:
    """Bytes that frames in `garbage` keep in their locals, except frames of
    code whose path contains `skip`."""
    held = 0
    for frame in (o for o in garbage if type(o).__name__ == "frame"):
        if skip in frame.f_code.co_filename:
            continue
        for value in frame.f_locals.values():
            if isinstance(value, bytes | bytearray | memoryview):
                held += len(value)
    return held


async def test_a_broken_upload_holds_none_of_its_body_in_cycles(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, saved_garbage: list[Any]
) -> None:
    # An error's traceback keeps the frames that held the pieces in flight;
    # with the collector tuned to run rarely, those must be let go of at once.
    admission = gateway.server.app[ADMISSION]  # type: ignore[union-attr]
    for _ in range(5):
        await disconnect_mid_body(gateway, simulator)
        await wait_for(lambda: admission.in_flight == 0)
    gc.collect()
    # The in-process simulator's own frames are not the gateway's concern.
    held = bytes_held_by_frames(saved_garbage, skip="/simulator/")
    assert held < 64 * 1024, f"{held} bytes of broken uploads wait for the collector"
