"""Odd answers from Chert (or from a proxy in front of it): quoted secrets,
unknown 5xx codes, Retry-After in every spelling, broken slot headers.

Each is a canned answer of the simulator's (`Faults.canned`), so what the
gateway does with it is seen on the wire: its answer, its headers, its log.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.api.app import create_app
from gateway.chert import retry
from gateway.ops.config import Settings
from gateway.simulator import ChertSimulator
from tests.conftest import GatewayFactory, ServerAsDeployed, gateway_env
from tests.constants import CHAT_ID, SECRET
from tests.gateway_calls import png_bytes, send

QUOTING = {
    "status": 400,
    "headers": {"X-Debug-Request": "{authorization}", "Content-Disposition": "{authorization}"},
    "body": {
        "error": {"code": 1002, "message": "bad request, you sent: Authorization: {authorization}"},
        "echo": {"authorization": "{authorization}", "{authorization}": ["{authorization}"]},
    },
}


def _everything(answer: Any, response: Any) -> str:
    return repr(answer) + repr(list(response.headers.items()))


@pytest.mark.parametrize("call", ["create", "upload", "send"])
async def test_a_secret_that_chert_quotes_reaches_neither_caller_nor_log(
    gateway: TestClient[Any, Any],
    simulator: ChertSimulator,
    caplog: pytest.LogCaptureFixture,
    call: str,
) -> None:
    simulator.faults.update({"canned": {call: [QUOTING]}})
    status, answer, response = await send(gateway, png_bytes(500))
    assert status in (400, 502), answer
    assert "you sent" in answer["error"]["message"]  # Chert's words do get through...
    assert SECRET not in _everything(answer, response)  # ...without the secret
    assert "[redacted]" in answer["error"]["message"]
    assert SECRET not in caplog.text
    assert simulator.state.messages == []


async def test_a_secret_in_a_successful_answer_is_redacted_too(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    status, answer, _ = await send(gateway, png_bytes(500))
    assert status == 201
    attachment_id = answer["attachment_id"]
    simulator.state.attachments[attachment_id].filename = f"leak {SECRET}.png"
    response = await gateway.get(f"/v1/attachments/{attachment_id}")
    assert response.status == 200
    body = await response.text()
    assert SECRET not in body
    assert "leak [redacted].png" in body


async def test_a_client_token_that_upstream_quotes_is_redacted(
    make_gateway: GatewayFactory, simulator: ChertSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    token = "client-token-5c1e9d"
    client = await make_gateway(GATEWAY_CLIENT_TOKENS=token)
    refusal = {"status": 400, "body": {"error": {"code": 4321, "message": f"saw {token}"}}}
    simulator.faults.update({"canned": {"send": [refusal]}})
    status, answer, response = await send(
        client, png_bytes(500), headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 502, answer
    assert token not in _everything(answer, response)
    assert token not in caplog.text


# -- what is retried ------------------------------------------------------------


async def test_a_5xx_with_any_code_is_retried(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    unknown = {"status": 503, "headers": {"Retry-After": "0"}, "body": {"error": {"code": 5003}}}
    simulator.faults.update({"canned": {"send": [unknown, unknown]}})
    status, answer, _ = await send(gateway, png_bytes(500))
    assert status == 201, answer
    assert len(simulator.state.requests_to("POST", "/messages")) == 3
    assert len(simulator.state.messages) == 1


async def test_a_500_on_every_try_is_503_with_retry_after(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    broken = {"status": 500, "body": "Internal Server Error"}
    simulator.faults.update({"canned": {"create": [broken] * 4}})
    status, answer, response = await send(gateway, png_bytes(500))
    assert (status, answer["error"]["code"]) == (503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert len(simulator.state.requests_to("POST", "/api/v1/attachments")) == 4


async def test_chert_down_is_503_with_retry_after() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    # Nothing listens there now: every connection is refused.
    settings = Settings.from_env(gateway_env(f"http://127.0.0.1:{port}"))
    async with TestClient(ServerAsDeployed(create_app(settings))) as client:
        status, answer, response = await send(client, png_bytes(500))
    assert (status, answer["error"]["code"]) == (503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("value", ["inf", "1e400", "-5", "soon", "99999999999999999999999"])
async def test_any_retry_after_from_chert_ends_in_a_json_answer_with_a_capped_wait(
    gateway: TestClient[Any, Any], simulator: ChertSimulator, value: str
) -> None:
    answer_503 = {"status": 503, "headers": {"Retry-After": value}, "body": {"error": {}}}
    simulator.faults.update({"canned": {"send": [answer_503] * 4}})
    status, answer, response = await send(gateway, png_bytes(500))
    assert (status, answer["error"]["code"]) == (503, "upstream_unavailable")
    assert 1 <= int(response.headers["Retry-After"]) <= retry.MAX_RETRY_AFTER_SECONDS


async def test_a_slot_header_that_would_split_the_put_is_502_and_nothing_is_put(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    simulator.faults.update({"extra_required_headers": {"x-trace": "a\r\nX-Injected: 1"}})
    status, answer, _ = await send(gateway, png_bytes(500))
    assert (status, answer["error"]["code"]) == (502, "upstream_error")
    assert simulator.state.requests_to("PUT") == []
    assert simulator.state.messages == []


async def test_top_level_parts_are_rejected_by_gateway_and_simulator(
    gateway: TestClient[Any, Any], simulator: ChertSimulator
) -> None:
    body = {"message": {"parts": [{"type": "text", "value": "hi"}]}, "parts": []}
    response = await gateway.post(f"/v1/chats/{CHAT_ID}/messages", json=body)
    assert response.status == 400
    assert "top-level parts" in (await response.json())["error"]["message"]
    assert simulator.state.requests_to("POST", "/messages") == []
