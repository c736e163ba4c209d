"""Who may start an upload: client tokens, and the in-flight limit."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from gateway.api.keys import ADMISSION
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory
from tests.constants import CHAT_ID
from tests.gateway_calls import png_bytes, send
from tests.raw_http import RawCaller, read_status, until


async def test_client_tokens_are_required_when_configured(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_CLIENT_TOKENS="tok-a,tok-b")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic tok-a"}):
        status, answer, _ = await send(client, png_bytes(100), headers=headers)
        assert (status, answer["error"]["code"]) == (401, "unauthorized")
    assert simulator.state.requests == []
    status, _, _ = await send(client, png_bytes(100), headers={"Authorization": "Bearer tok-b"})
    assert status == 201


async def test_client_tokens_file_is_reread_without_restart(
    make_gateway: GatewayFactory, tmp_path: Any
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    client = await make_gateway(GATEWAY_CLIENT_TOKENS_FILE=str(tokens))
    status, _, _ = await send(client, png_bytes(100), headers={"Authorization": "Bearer old-token"})
    assert status == 201
    tokens.write_text("new-token\n")
    os.utime(tokens, ns=(2, 2))
    await asyncio.sleep(1.1)  # credentials.RECHECK_SECONDS
    status, _, _ = await send(client, png_bytes(100), headers={"Authorization": "Bearer old-token"})
    assert status == 401
    status, _, _ = await send(client, png_bytes(100), headers={"Authorization": "Bearer new-token"})
    assert status == 201


async def test_at_the_in_flight_limit_the_next_upload_gets_503_before_its_body(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_MAX_IN_FLIGHT=1)
    size = 5_000_000
    _, first = await RawCaller(client).open(size)
    first.write(png_bytes(100_000))
    await first.drain()
    admission = client.server.app[ADMISSION]  # type: ignore[union-attr]
    await until(lambda: admission.in_flight == 1)

    reader, second = await RawCaller(client).open(size, expect=True)
    assert await read_status(reader) == 503
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().lower()
    assert "retry-after: 1" in head
    second.close()
    # The refused caller sent no body bytes at all; only the first reached Chert.
    assert len(simulator.state.requests_to("POST", "/api/v1/attachments")) == 1

    first.write(os.urandom(size - 100_000))
    await first.drain()
    await until(lambda: len(simulator.state.messages) == 1)
    first.close()
    await until(lambda: admission.in_flight == 0)
    status, _, _ = await send(client, png_bytes(100), chat_id=CHAT_ID)
    assert status == 201


async def test_a_rotated_signing_secret_file_is_used_without_restart(
    make_gateway: GatewayFactory, simulator: ChertSimulator, tmp_path: Any
) -> None:
    secret_file = tmp_path / "signing-secret"
    secret_file.write_text(simulator.secret + "\n")
    client = await make_gateway(CHERT_SIGNING_SECRET="", CHERT_SIGNING_SECRET_FILE=secret_file)
    status, _, _ = await send(client, png_bytes(100))
    assert status == 201
    # Chert rotates; the Secret's file follows (a new inode, as the kubelet swaps it).
    simulator.secret = "rotated-secret-9d2f"
    replacement = tmp_path / "signing-secret.new"
    replacement.write_text("rotated-secret-9d2f\n")
    replacement.replace(secret_file)
    await asyncio.sleep(1.1)  # credentials.RECHECK_SECONDS
    status, answer, _ = await send(client, png_bytes(100))
    assert status == 201, answer
    (last_put,) = simulator.state.requests_to("PUT")[-1:]
    assert last_put.header("Authorization") == "Bearer rotated-secret-9d2f"


async def test_a_missing_client_token_is_refused_before_the_body(
    make_gateway: GatewayFactory, simulator: ChertSimulator
) -> None:
    client = await make_gateway(GATEWAY_CLIENT_TOKENS="tok-a")
    reader, writer = await RawCaller(client).open(5_000_000, expect=True)
    assert await read_status(reader) == 401  # no body byte was written
    writer.close()
    assert simulator.state.requests == []
