"""Every dimension of a form is bounded, refused the moment it is crossed,
and a refused form sends no message. Chert's rules for the message are
checked before the files they would doom are uploaded."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import BaseTestServer, TestClient

from gateway.api import form
from gateway.ops.config import CHERT_MAX_UPLOAD_BYTES
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory, gateway_env
from tests.constants import CHAT_ID
from tests.processes import GatewayProcess
from tests.raw_http import read_json_answer, read_status
from tests.samples import MIB, sample

PATH = f"/v1/chats/{CHAT_ID}/messages"


def a_form(*fields: tuple[str, str], files: int = 0, kind: str = "image/png") -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        data.add_field(name, value)
    extension = {"image/png": "png", "application/pdf": "pdf"}[kind]
    for n in range(files):
        data.add_field(
            f"f{n}", io.BytesIO(sample(kind, 2000)), filename=f"{n}.{extension}", content_type=kind
        )
    return data


OVER_THE_LIMITS = {
    "one field too many": (
        a_form(*[("text", "x")] * (form.MAX_FIELDS + 1)),
        400,
    ),
    "one field too large": (a_form(("text", "x" * (form.MAX_FIELD_BYTES + 1))), 413),
    "fields too large in all": (
        a_form(*[("text", "y" * (form.MAX_FIELD_BYTES - 10))] * 5),
        413,
    ),
    "one file too many": (a_form(files=form.MAX_FILES + 1), 400),
}


@pytest.mark.parametrize(("data", "status"), OVER_THE_LIMITS.values(), ids=OVER_THE_LIMITS.keys())
async def test_a_form_over_a_limit_is_refused_and_sends_nothing(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, data: aiohttp.FormData, status: int
) -> None:
    response = await gateway.post(PATH, data=data)
    assert response.status == status, await response.text()
    assert (await response.json())["error"]["code"] in ("invalid_request", "payload_too_large")
    assert simulator.state.requests_to("POST", "/messages") == []


async def test_a_form_at_every_limit_is_sent(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    per_field = form.MAX_FIELDS_TOTAL_BYTES // form.MAX_FIELDS
    data = a_form(*[("text", "z" * per_field)] * form.MAX_FIELDS, files=form.MAX_FILES)
    response = await gateway.post(PATH, data=data)
    assert response.status == 201, await response.text()
    (sent,) = simulator.state.send_bodies
    assert len(sent["message"]["parts"]) == form.MAX_FIELDS + form.MAX_FILES


async def test_parallel_attachments_with_a_non_image_is_refused_before_its_upload(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    data = a_form(("parallel_attachments", "true"), files=2, kind="application/pdf")
    response = await gateway.post(PATH, data=data)
    assert response.status == 400
    assert "images only" in (await response.json())["error"]["message"]
    assert simulator.state.requests_to("PUT") == []
    assert simulator.state.requests_to("POST", "/messages") == []


async def test_parallel_attachments_with_one_image_is_400_not_chert_s_502(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    response = await gateway.post(PATH, data=a_form(("parallel_attachments", "true"), files=1))
    answer = await response.json()
    assert (response.status, answer["error"]["code"]) == (400, "invalid_request")
    assert "2 or more" in answer["error"]["message"]
    assert simulator.state.requests_to("POST", "/messages") == []


@pytest.mark.slow
async def test_the_largest_form_allowed_keeps_memory_flat(
    chert_server: BaseTestServer, simulator: ChertSimulator
) -> None:
    """The worst shape within the limits, 20 times at once: the fields' total
    held, ten files spooled, the send body and the answer. Peak RSS must grow
    by a few of them, not by what a caller could send past the limits."""
    per_field = form.MAX_FIELDS_TOTAL_BYTES // form.MAX_FIELDS
    fields = [("text", "w" * per_field)] * form.MAX_FIELDS
    env = gateway_env(str(chert_server.make_url("")))
    async with GatewayProcess(env) as gateway, aiohttp.ClientSession() as session:
        url = f"{gateway.api}{PATH}"
        async with session.post(url, data=a_form(*fields, files=form.MAX_FILES)) as warm:
            assert warm.status == 201
        baseline = gateway.peak_rss_bytes()

        async def one() -> int:
            async with session.post(url, data=a_form(*fields, files=form.MAX_FILES)) as response:
                return response.status

        statuses = await asyncio.gather(*(one() for _ in range(20)))
        growth = gateway.peak_rss_bytes() - baseline
    assert statuses == [201] * 20
    print(f"\npeak RSS growth for 20 largest forms at once: {growth / MIB:.1f} MiB")
    # 20 forms of 256 KiB of fields: about 5 MiB of text, each held a few
    # times over (parts, send body, Chert's echo, the answer).
    assert growth < 48 * MIB


async def test_a_form_that_declares_more_than_any_form_can_hold_is_413_before_its_body(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    declared = form.MESSAGE_FORM.ceiling(CHERT_MAX_UPLOAD_BYTES) + 1
    assert gateway.server.host is not None
    assert gateway.server.port is not None
    reader, writer = await asyncio.open_connection(gateway.server.host, gateway.server.port)
    try:
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nHost: g\r\nContent-Length: {declared}\r\n"
            "Content-Type: multipart/form-data; boundary=b0\r\n\r\n".encode()
        )
        await writer.drain()
        # Headers only: the answer must come without a byte of the body.
        status = await read_status(reader)
        answer = await read_json_answer(reader)
    finally:
        writer.close()
    assert (status, answer["error"]["code"]) == (413, "payload_too_large"), answer
    assert simulator.state.requests == []


async def test_a_chunked_form_is_counted_whole_even_where_its_framing_hides_bytes(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    """An endless preamble before the first boundary has no part to bound it:
    the whole body is counted as it arrives, against the form's ceiling."""
    client = await make_gateway(GATEWAY_MAX_UPLOAD_BYTES="10000")
    ceiling = form.MESSAGE_FORM.ceiling(10_000)
    assert client.server.host is not None
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(
            f"POST {PATH} HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: multipart/form-data; boundary=b0\r\n\r\n".encode()
        )
        junk = b"no boundary here\r\n" * 4000
        with contextlib.suppress(ConnectionError):
            for _ in range(ceiling // len(junk) + 2):
                writer.write(b"%x\r\n%s\r\n" % (len(junk), junk))
                await writer.drain()
        assert await read_status(reader) == 413
        answer = await read_json_answer(reader)
    finally:
        writer.close()
    assert answer["error"]["code"] == "payload_too_large"
    assert simulator.state.requests == []
