"""The upload paths leave no reference cycles behind, and a broken upload
leaves none that hold its body.

The gateway raises the garbage collector's threshold (`tuning.tune_gc`)
because its hot path frees everything by reference counting; a dependency
or a change that builds cycles per request (a retry library did: about 40
objects per call to Chert) would bring the collector back as a fifth of the
CPU, and would hold memory until the next, now rarer, collection.
"""

from __future__ import annotations

import asyncio
import gc
import io
import socket
import types
from asyncio.trsock import TransportSocket
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.api.keys import ADMISSION
from gateway.simulator import ChertSimulator
from tests.constants import CHAT_ID
from tests.gateway_calls import png_bytes, send
from tests.raw_http import disconnect_mid_body, until

UPLOADS = 30
# What a closed asyncio transport's own cycle is made of (see without_closed_transports).
TRANSPORT_PARTS = (
    asyncio.Transport,
    dict,
    tuple,
    types.MethodType,
    socket.socket,
    TransportSocket,
)


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


def without_closed_transports(garbage: list[Any]) -> list[Any]:
    """`garbage` less the cycle CPython leaves for each closed connection.

    asyncio's selector transports keep `_read_ready_cb`, a bound method of
    their own, so every transport ends in a small cycle (the transport, its
    __dict__, that method, its socket and TransportSocket). That is one per
    connection, not per upload; a loaded machine may replace a keep-alive
    connection while a test runs and leave one.
    """
    in_garbage = {id(o) for o in garbage}
    pending = [o for o in garbage if isinstance(o, asyncio.Transport)]
    owned: set[int] = set()
    while pending:
        obj = pending.pop()
        if id(obj) in owned:
            continue
        owned.add(id(obj))
        pending += [
            ref
            for ref in gc.get_referents(obj)
            if id(ref) in in_garbage and isinstance(ref, TRANSPORT_PARTS)
        ]
    return [o for o in garbage if id(o) not in owned]


async def uploads_leave_no_garbage(
    upload: Callable[[], Awaitable[int]], garbage: list[Any], expected_status: int = 201
) -> None:
    for _ in range(UPLOADS):
        assert await upload() == expected_status
    gc.collect()
    left = without_closed_transports(garbage)
    assert left == [], f"{len(left)} objects in reference cycles: {kinds(left)}"


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
        await until(lambda: admission.in_flight == 0)
    gc.collect()
    # The in-process simulator's own frames are not the gateway's concern.
    held = bytes_held_by_frames(saved_garbage, skip="/simulator/")
    assert held < 64 * 1024, f"{held} bytes of broken uploads wait for the collector"
