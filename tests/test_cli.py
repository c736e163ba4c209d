"""The command line: help, start-up errors, and `serve --simulate`'s banner,
whose curl line must work exactly as printed."""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from gateway.ops.config import OPTIONS
from tests.conftest import require_tool
from tests.processes import GatewayProcess, gateway_cli, shell


async def test_serve_help_documents_every_option() -> None:
    result = await gateway_cli("serve", "--help")
    assert result.code == 0
    for option in OPTIONS:
        assert option.flag in result.out
        assert option.env in result.out
    assert "--simulate" in result.out


async def test_a_bad_configuration_stops_start_up_with_one_line() -> None:
    result = await gateway_cli(
        "serve", env={"CHERT_SIGNING_SECRET": "x", "GATEWAY_MAX_IN_FLIGHT": "many"}
    )
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert "GATEWAY_MAX_IN_FLIGHT" in lines[0]


async def test_a_flag_overrides_its_environment_variable() -> None:
    result = await gateway_cli(
        "serve",
        "--max-in-flight",
        "zero",
        env={"CHERT_SIGNING_SECRET": "x", "GATEWAY_MAX_IN_FLIGHT": "5"},
    )
    assert result.code == 2
    assert "'zero'" in result.err


@pytest.mark.parametrize(
    ("env", "expected"),
    # uvloop is installed with the test extra: the default must still be asyncio's.
    [({}, "asyncio"), ({"GATEWAY_EVENT_LOOP": "uvloop"}, "uvloop")],
)
async def test_the_event_loop_is_the_one_chosen(env: dict[str, str], expected: str) -> None:
    async with GatewayProcess(env, "--simulate") as gateway:
        (listening,) = [e for e in gateway.log_entries() if e["msg"] == "listening"]
    assert listening["event_loop"] == expected


async def test_the_simulate_banner_prints_a_curl_line_that_works() -> None:
    require_tool("curl")
    async with GatewayProcess({}, "--simulate") as gateway:
        await asyncio.sleep(0.1)  # the banner follows the "listening" line
        (line,) = [line for line in gateway.lines if line.strip().startswith("curl ")]
        # Exactly as printed, through a shell, as a person would paste it.
        _, out, _ = await shell(line.strip() + " -w '\\n%{http_code}'")
        exit_code = await gateway.stop()
    body, _, status = out.rpartition("\n")
    assert status == "201", body
    answer = orjson.loads(body)
    assert answer["filename"] == "hello.png"
    assert answer["message"]["status"] == "sent"
    assert exit_code == 0
    secret = re.search(r"its secret: (\S+)\)", gateway.output)
    assert secret is not None
    # The generated secret is shown once, in the banner, and in no log line.
    assert sum(secret.group(1) in line for line in gateway.lines) == 1
