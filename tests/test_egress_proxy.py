"""Chert through an egress proxy, a real one (Debian's tinyproxy, started
here on a free port): HTTPS_PROXY is honoured with a CONNECT tunnel, so the
proxy sees only where the tunnel goes, never a request or the secret;
NO_PROXY is honoured; credentials come from the proxy's URL; a proxy that is
down is an outage (retried, then 503), one that refuses us is a 502.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp.test_utils import BaseTestServer, TestClient

from gateway.api.app import create_app
from gateway.ops.config import Settings
from gateway.simulator import ChertSimulator
from tests.conftest import ServerAsDeployed, gateway_env, require_tool
from tests.constants import SECRET
from tests.gateway_calls import png_bytes, send
from tests.processes import free_port, until_listening

PROXY_USER, PROXY_PASSWORD = "gateway", "proxy-pass-4e1b"


@dataclass
class Proxy:
    port: int
    log_file: Path

    def url(self, *, credentials: bool = True) -> str:
        auth = f"{PROXY_USER}:{PROXY_PASSWORD}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    @property
    def requests(self) -> list[str]:
        """The request lines the proxy was sent (a CONNECT's, or a plain request's)."""
        return [line for line in self.log.splitlines() if "Request (file descriptor" in line]


@pytest.fixture
async def tinyproxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    proxy = Proxy(free_port(), tmp_path / "tinyproxy.log")
    config = tmp_path / "tinyproxy.conf"
    config.write_text(
        f"Port {proxy.port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\n"
        f'LogFile "{proxy.log_file}"\nAllow 127.0.0.1\nMaxClients 50\n'
        f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n"
    )
    process = await asyncio.create_subprocess_exec(
        require_tool("tinyproxy"), "-d", "-c", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until_listening(proxy.port)
        yield proxy
    finally:
        process.terminate()
        await process.wait()


@pytest.fixture
async def https_chert(simulator: ChertSimulator, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The simulator on HTTPS; its URL and the CA file that trusts it."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server: BaseTestServer = ServerAsDeployed(simulator.app())
    await server.start_server(ssl=context)
    try:
        yield str(server.make_url("")), ca_file
    finally:
        await server.close()


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


async def upload_through(
    chert: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, **proxy_env: str
) -> tuple[int, dict[str, Any], Any]:
    clear_proxy_env(monkeypatch)
    for name, value in proxy_env.items():
        monkeypatch.setenv(name, value)
    url, ca_file = chert
    settings = Settings.from_env(gateway_env(url, CHERT_CA_FILE=ca_file))
    async with TestClient(ServerAsDeployed(create_app(settings))) as gateway:
        return await send(gateway, png_bytes(200_000))


async def test_uploads_go_through_the_proxy_in_a_tunnel(
    tinyproxy: Proxy,
    https_chert: tuple[str, Path],
    simulator: ChertSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, answer, _ = await upload_through(https_chert, monkeypatch, HTTPS_PROXY=tinyproxy.url())
    assert status == 201, answer
    assert len(simulator.state.messages) == 1
    chert_host = https_chert[0].removeprefix("https://").rstrip("/")
    requests = tinyproxy.requests
    assert requests, tinyproxy.log
    # Only tunnels to Chert's host: no request line, no path, no secret in clear.
    assert all(f"CONNECT {chert_host} HTTP/1.1" in line for line in requests), tinyproxy.log
    assert "/api/v1/" not in tinyproxy.log
    assert SECRET not in tinyproxy.log


async def test_no_proxy_is_honoured(
    tinyproxy: Proxy, https_chert: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, answer, _ = await upload_through(
        https_chert, monkeypatch, HTTPS_PROXY=tinyproxy.url(), NO_PROXY="127.0.0.1"
    )
    assert status == 201, answer
    assert tinyproxy.requests == []


async def test_a_proxy_that_refuses_our_credentials_is_502(
    tinyproxy: Proxy, https_chert: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, answer, _ = await upload_through(
        https_chert, monkeypatch, HTTPS_PROXY=tinyproxy.url(credentials=False)
    )
    assert (status, answer["error"]["code"], answer["error"]["retryable"]) == (
        502,
        "upstream_error",
        False,
    )
    assert "HTTPS_PROXY" in answer["error"]["message"]
    assert PROXY_PASSWORD not in str(answer)


async def test_a_proxy_that_is_down_is_an_outage_503_with_retry_after(
    https_chert: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    status, answer, response = await upload_through(https_chert, monkeypatch, HTTPS_PROXY=down)
    assert (status, answer["error"]["code"]) == (503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1


async def test_the_proxy_settings_are_read_once_at_start(
    https_chert: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not on every call (aiohttp's trust_env reads them, and ~/.netrc, per
    request, in a thread): a proxy set after start changes nothing."""
    clear_proxy_env(monkeypatch)
    url, ca_file = https_chert
    settings = Settings.from_env(gateway_env(url, CHERT_CA_FILE=ca_file))
    async with TestClient(ServerAsDeployed(create_app(settings))) as gateway:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing there
        status, answer, _ = await send(gateway, png_bytes(20_000))
    assert status == 201, answer
