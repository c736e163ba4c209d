"""Chert over TLS, verified: the simulator serves HTTPS with a throwaway CA
(trustme), the gateway trusts it through CHERT_CA_FILE, and every kind of
certificate or handshake failure is a 502 the caller is not told to retry.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import BaseTestServer, TestClient

from gateway.api.app import create_app
from gateway.api.keys import METRICS
from gateway.ops.config import ConfigError, Settings
from gateway.simulator import ChertSimulator
from tests.conftest import ServerAsDeployed, gateway_env, require_tool
from tests.constants import CHAT_ID
from tests.gateway_calls import png_bytes, send
from tests.processes import GatewayProcess, curl, free_port, gateway_cli, until_listening
from tests.samples import make_file

Gateway = TestClient[Any, Any]


def retries(gateway: Gateway) -> float:
    """Every retry the gateway made of a call to Chert, whatever its labels."""
    app = gateway.app
    assert app is not None
    registry = app[METRICS].registry
    return sum(
        float(sample.value)
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "chert_gateway_upstream_retries_total"
    )


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(authority: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return path


def server_context(authority: trustme.CA, *names: str, **issue: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*(names or ("127.0.0.1", "localhost")), **issue).configure_cert(context)
    return context


ChertFactory = Callable[..., Awaitable[BaseTestServer]]


@pytest.fixture
async def https_chert(simulator: ChertSimulator) -> AsyncIterator[ChertFactory]:
    """Start the simulator on HTTPS with a given server context."""
    servers: list[BaseTestServer] = []

    async def start(context: ssl.SSLContext) -> BaseTestServer:
        server = ServerAsDeployed(simulator.app())
        await server.start_server(ssl=context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def gateway_for(chert: BaseTestServer, **env: Any) -> Gateway:
    settings = Settings.from_env(gateway_env(str(chert.make_url("")), **env))
    client: Gateway = TestClient(ServerAsDeployed(create_app(settings)))
    await client.start_server()
    return client


async def test_the_main_flows_run_over_verified_tls(
    https_chert: ChertFactory,
    authority: trustme.CA,
    ca_file: Path,
    simulator: ChertSimulator,
) -> None:
    chert = await https_chert(server_context(authority))
    assert str(chert.make_url("")).startswith("https://")
    gateway = await gateway_for(chert, CHERT_CA_FILE=ca_file)
    try:
        status, answer, _ = await send(gateway, png_bytes(300_000))
        assert status == 201, answer

        async def chunked() -> AsyncIterator[bytes]:
            yield png_bytes(200_000)

        spooled = await gateway.post(
            f"/v1/chats/{CHAT_ID}/attachments",
            data=chunked(),
            headers={"Content-Type": "image/png"},
        )
        assert spooled.status == 201, await spooled.text()

        form = aiohttp.FormData()
        form.add_field("text", "over TLS")
        for name in ("a", "b"):
            form.add_field(
                name, io.BytesIO(png_bytes(5000)), filename=f"{name}.png", content_type="image/png"
            )
        response = await gateway.post(f"/v1/chats/{CHAT_ID}/messages", data=form)
        assert response.status == 201, await response.text()

        download = await gateway.get(f"/v1/attachments/{answer['attachment_id']}/content")
        assert download.status == 200
        assert len(await download.read()) == 300_000
    finally:
        await gateway.close()
    assert len(simulator.state.messages) == 3
    assert all(put.body_complete for put in simulator.state.requests_to("PUT"))


async def send_in_turn(gateway: Gateway, count: int, pause: float = 0.0) -> None:
    """`count` small uploads one after another, each answered 201."""
    for _ in range(count):
        status, answer, _ = await send(gateway, png_bytes(20_000))
        assert status == 201, answer
        await asyncio.sleep(pause)


async def test_connections_to_chert_are_reused_one_handshake_each(
    https_chert: ChertFactory, authority: trustme.CA, ca_file: Path, simulator: ChertSimulator
) -> None:
    chert = await https_chert(server_context(authority))
    gateway = await gateway_for(chert, CHERT_CA_FILE=ca_file)
    try:
        await send_in_turn(gateway, 20)
    finally:
        await gateway.close()
    calls = simulator.state.requests
    assert len(calls) == 60
    assert all(call.tls for call in calls)
    # Sixty calls, one after another: the pool keeps reusing a connection,
    # so there are only a handful of TLS handshakes, not one per call.
    assert len({call.peer for call in calls}) <= 3


async def test_a_new_connection_resumes_the_tls_session_of_an_earlier_one(
    https_chert: ChertFactory, authority: trustme.CA, ca_file: Path, simulator: ChertSimulator
) -> None:
    """A load balancer closes the idle connection; the next one's handshake
    resumes the session instead of a full one."""
    simulator.faults.update({"drop_idle_after_seconds": 0.2, "drop_idle_how": "close"})
    chert = await https_chert(server_context(authority))
    gateway = await gateway_for(chert, CHERT_CA_FILE=ca_file)
    try:
        await send_in_turn(gateway, 3, pause=0.5)
    finally:
        await gateway.close()
    assert simulator.idle.dropped == 3
    by_connection = {call.peer: call.tls_resumed for call in simulator.state.requests}
    assert list(by_connection.values()) == [False, True, True]


async def test_many_connections_opened_at_once_all_carry_their_uploads(
    https_chert: ChertFactory, authority: trustme.CA, ca_file: Path, simulator: ChertSimulator
) -> None:
    """New connections made while others are still shaking hands: a session
    is taken only from a finished handshake."""
    chert = await https_chert(server_context(authority))
    gateway = await gateway_for(chert, CHERT_CA_FILE=ca_file)
    try:
        answers = await asyncio.gather(*(send(gateway, png_bytes(20_000)) for _ in range(30)))
    finally:
        await gateway.close()
    assert [status for status, _, _ in answers] == [201] * 30
    assert len({call.peer for call in simulator.state.requests}) > 1


REFUSED = {
    "unknown CA": ({}, False),
    "name mismatch": ({"names": ("chert.example",)}, True),
    "expired": (
        {"not_after": datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)},
        True,
    ),
}


@pytest.mark.parametrize(("issue", "trusted"), REFUSED.values(), ids=REFUSED.keys())
async def test_a_refused_certificate_is_502_once_and_names_the_setting(
    https_chert: ChertFactory,
    authority: trustme.CA,
    ca_file: Path,
    simulator: ChertSimulator,
    issue: dict[str, Any],
    trusted: bool,
) -> None:
    names = issue.pop("names", ())
    chert = await https_chert(server_context(authority, *names, **issue))
    gateway = await gateway_for(chert, **({"CHERT_CA_FILE": ca_file} if trusted else {}))
    try:
        status, answer, _ = await send(gateway, png_bytes(500))
        retried = retries(gateway)
    finally:
        await gateway.close()
    error = answer["error"]
    assert (status, error["code"], error["retryable"]) == (502, "upstream_error", False)
    assert "certificate" in error["message"]
    assert "CHERT_CA_FILE" in error["message"]
    # A configuration error is not an outage: no retry.
    assert retried == 0
    assert simulator.state.requests == []


async def test_a_refused_tls_version_is_502_not_retried(
    authority: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    """A real TLS server (openssl s_server) that speaks only TLS 1.1, below
    the client's floor of 1.2: it answers with a protocol_version alert."""
    leaf = authority.issue_cert("127.0.0.1")
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        require_tool("openssl"), "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_1",
        "-cipher", "ALL:@SECLEVEL=0", "-cert", str(cert), "-key", str(key), "-www", "-quiet",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await until_listening(port)
        settings = Settings.from_env(
            gateway_env(f"https://127.0.0.1:{port}", CHERT_CA_FILE=ca_file)
        )
        async with TestClient(ServerAsDeployed(create_app(settings))) as gateway:
            status, answer, _ = await send(gateway, png_bytes(500))
            retried = retries(gateway)
    finally:
        server.terminate()
        await server.wait()
    assert (status, answer["error"]["code"], answer["error"]["retryable"]) == (
        502,
        "upstream_error",
        False,
    )
    assert "TLS handshake" in answer["error"]["message"]
    assert retried == 0


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "https://127.0.0.1:1"])
async def test_the_origin_pin_holds_under_tls(
    https_chert: ChertFactory,
    authority: trustme.CA,
    ca_file: Path,
    simulator: ChertSimulator,
    origin: str,
) -> None:
    chert = await https_chert(server_context(authority))
    simulator.faults.update({"upload_origin": origin.format(port=chert.port)})
    gateway = await gateway_for(chert, CHERT_CA_FILE=ca_file)
    try:
        status, answer, _ = await send(gateway, png_bytes(500))
    finally:
        await gateway.close()
    assert (status, answer["error"]["code"]) == (502, "upstream_error")
    assert "origin" in answer["error"]["message"]
    assert simulator.state.requests_to("PUT") == []


@pytest.mark.parametrize("content", [None, b"not a certificate\n"], ids=["missing", "not PEM"])
async def test_an_unusable_ca_file_stops_start_up_with_one_line(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match="CHERT_CA_FILE"):
        Settings.from_env(gateway_env("https://127.0.0.1:1", CHERT_CA_FILE=path))
    code, _, err = await gateway_cli(
        "serve", env={"CHERT_SIGNING_SECRET": "x", "CHERT_CA_FILE": str(path)}
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "CHERT_CA_FILE" in line
    assert str(path) in line


async def test_simulate_tls_prints_a_line_that_points_a_gateway_at_it(tmp_path: Path) -> None:
    simulate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "--tls", "--port", "0",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert simulate.stderr is not None
    try:
        line = ""
        async with asyncio.timeout(20):
            while "chert-gateway serve" not in line:
                line = (await simulate.stderr.readline()).decode()
                assert line, "simulate --tls ended before printing its gateway line"
        env = dict(word.split("=", 1) for word in line.split() if "=" in word)
        assert env["CHERT_API_URL"].startswith("https://")
        assert Path(env["CHERT_CA_FILE"]).is_file()
        file = tmp_path / "a.png"
        make_file(file, 50_000)
        async with GatewayProcess(env) as gateway:
            status, body = await curl(
                "-T", str(file), "-H", "Content-Type: image/png",
                f"{gateway.api}/v1/chats/{CHAT_ID}/attachments",
            )  # fmt: skip
        assert status == 201, body
    finally:
        simulate.terminate()
        await simulate.wait()


async def test_a_dns_failure_for_chert_s_host_is_an_outage_retried_then_503() -> None:
    # .invalid never resolves (RFC 6761): the resolver says so at once.
    settings = Settings.from_env(gateway_env("https://chert-gateway-test.invalid"))
    async with TestClient(ServerAsDeployed(create_app(settings))) as gateway:
        status, answer, response = await send(gateway, png_bytes(500))
        retried = retries(gateway)
    assert (status, answer["error"]["code"]) == (503, "upstream_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert retried >= 1
