"""Shared fixtures: a real Chert simulator and a real gateway, each on its own
loopback port, talking HTTP to each other."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer

from gateway.api.app import create_app
from gateway.api.keys import METRICS
from gateway.ops.config import Settings
from gateway.server import RUNNER_OPTIONS, api_runner
from gateway.simulator import ChertSimulator
from tests.constants import SECRET

GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


class ServerAsDeployed(TestServer):
    """aiohttp's TestServer, but run with the runner and options `serve` uses.

    The stock one cancels a handler when its caller disconnects; the gateway
    runs without that, and with its own HTTP protocol (http_protocol.py),
    and must be tested as it runs. The simulator gets the same options.
    """

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        if METRICS in self.app:
            return api_runner(self.app, **kwargs)
        return web.AppRunner(self.app, **{**kwargs, **RUNNER_OPTIONS})


@pytest.fixture
def simulator() -> ChertSimulator:
    return ChertSimulator(SECRET)


@pytest.fixture
async def chert_server(simulator: ChertSimulator) -> AsyncIterator[BaseTestServer]:
    async with ServerAsDeployed(simulator.app()) as server:
        yield server


def gateway_env(chert_url: str, **overrides: Any) -> dict[str, str]:
    env = {
        "CHERT_API_URL": chert_url,
        "CHERT_SIGNING_SECRET": SECRET,
        "GATEWAY_CLIENT_TIMEOUT": "5",
        "CHERT_TIMEOUT": "10",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@pytest.fixture
def make_gateway(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    chert_server: BaseTestServer,
) -> GatewayFactory:
    """Start a gateway app on loopback in front of the simulator; env overrides as kwargs."""

    async def start(**overrides: Any) -> TestClient[web.Request, web.Application]:
        settings = Settings.from_env(gateway_env(str(chert_server.make_url("")), **overrides))
        return await aiohttp_client(ServerAsDeployed(create_app(settings)))

    return start


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> TestClient[web.Request, web.Application]:
    return await make_gateway()


def require_tool(name: str) -> str:
    """The path of an external tool; in CI its absence fails the test, never skips it."""
    # Tools installed with the test extras live beside this Python, which
    # need not be on PATH (`make test` runs .venv/bin/pytest directly).
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI but is not installed")
        pytest.skip(f"{name} is not installed")
    return path


def require_root(why: str) -> None:
    """Fail in CI, skip elsewhere, unless the tests run as root (network
    namespaces, TCP repair mode)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run as root: {why}")
        pytest.skip(f"needs root: {why}")


@pytest.fixture(autouse=True)
def secret_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test doubles as a check that the Chert secret reaches no log line."""
    caplog.set_level(logging.DEBUG)
    yield
    assert SECRET not in caplog.text


@pytest.fixture(scope="module")
def live_gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway process with the embedded simulator, for blocking clients
    (schemathesis, requests under hypothesis) that cannot share the test's loop."""
    env = {
        **os.environ,
        "GATEWAY_LISTEN": "127.0.0.1:0",
        "GATEWAY_OPS_LISTEN": "127.0.0.1:0",
        "CHERT_SIGNING_SECRET": SECRET,
        "GATEWAY_CLIENT_TIMEOUT": "2",
    }
    command = [sys.executable, "-m", "gateway", "serve", "--simulate", "--log-format", "json"]
    # The log goes to a file: a pipe nobody reads would fill and stall the gateway.
    log_path = tmp_path_factory.mktemp("live") / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for line in log_path.read_bytes().splitlines():
                entry = orjson.loads(line) if line.startswith(b"{") else {}
                if entry.get("msg") == "listening":
                    yield str(entry["api"])
                    return
            time.sleep(0.05)
        pytest.fail(f"the gateway did not start:\n{log_path.read_text()}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # Whatever the module sent, the gateway logged no error and no secret.
    log_text = log_path.read_text()
    assert SECRET not in log_text
    assert '"level":"error"' not in log_text, log_text[-2000:]
