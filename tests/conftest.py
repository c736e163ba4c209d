"""Shared fixtures: a real Chert simulator and a real gateway, each on its own
loopback port, talking HTTP to each other."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer

from gateway.app import create_app
from gateway.config import Settings
from gateway.server import RUNNER_OPTIONS, api_runner
from gateway.simulator import ChertSimulator
from gateway.state import METRICS

SECRET = "sim-secret-7f3c2a9e41b8d5"
CHAT_ID = "0f2d3c1a-8b4e-4f6a-90d2-1a3b4c5d6e7f"

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


@pytest.fixture(autouse=True)
def secret_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test doubles as a check that the Chert secret reaches no log line."""
    caplog.set_level(logging.DEBUG)
    yield
    assert SECRET not in caplog.text
