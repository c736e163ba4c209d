"""Running the gateway: both listeners, the embedded simulator for
`serve --simulate`, and the drain on SIGTERM.

SIGTERM (or SIGINT): /readyz turns 503 and new uploads get 503 at once;
uploads in flight get up to GATEWAY_DRAIN_SECONDS to finish; then the
listeners close and `serve` returns, so the process exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from gateway.api.admission import Admission
from gateway.api.app import create_app, create_ops_app, refusal_recorder
from gateway.api.http_protocol import GatewayRunner
from gateway.api.keys import METRICS
from gateway.ops import tuning
from gateway.ops.config import ListenAddress, Settings
from gateway.ops.credentials import Credential
from gateway.ops.metrics import Metrics
from gateway.simulator import ChertSimulator

log = logging.getLogger("chert_gateway")

# How every listener runs. `handler_cancellation` off (aiohttp's default, said
# out loud): a caller that vanishes mid-body surfaces in the handler as an
# error, so it aborts the upstream PUT, logs and counts the abort itself.
# Our middleware logs each request (without query strings): no access_log.
RUNNER_OPTIONS: dict[str, Any] = {"access_log": None, "handler_cancellation": False}

# After the drain, what is still open (idle keep-alive connections) gets this
# long to close.
CLOSE_GRACE_SECONDS = 2.0


def api_runner(app: web.Application, **kwargs: Any) -> GatewayRunner:
    """The runner the API is served with, by `serve` and by the tests alike."""
    return GatewayRunner(
        app, on_refusal=refusal_recorder(app[METRICS]), **{**kwargs, **RUNNER_OPTIONS}
    )


@dataclass(frozen=True)
class Running:
    """What a started gateway serves, for a banner or a test to read."""

    api: str
    ops: str
    chert: str
    simulated_secret: str | None


async def start_site(
    runner: web.AppRunner, address: ListenAddress, ssl_context: ssl.SSLContext | None = None
) -> str:
    """Bind `address`; return where it actually listens (port 0 → the real port)."""
    if address.path is not None:
        _remove_stale_socket(address.path)
        site: web.BaseSite = web.UnixSite(runner, address.path)
        await site.start()
        # The socket stands for the loopback listener: reachable by anyone who
        # can reach the (pod-local) directory it is in.
        os.chmod(address.path, 0o666)
        return f"unix:{address.path}"
    site = web.TCPSite(runner, address.host, address.port, ssl_context=ssl_context)
    await site.start()
    # Each runner here has one site: its bound address is the last one.
    host, port = runner.addresses[-1][:2]
    scheme = "https" if ssl_context is not None else "http"
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


def _remove_stale_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[Running], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`), then drain and return."""
    loop = asyncio.get_running_loop()
    stop = stop if stop is not None else asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    runners: list[web.AppRunner] = []
    simulated_secret = None
    try:
        if settings.simulate:
            settings, simulated_secret, sim_runner = await _start_simulator(settings)
            runners.append(sim_runner)
        metrics = Metrics()
        admission = Admission(settings.max_in_flight)
        api = api_runner(
            create_app(settings, metrics=metrics, admission=admission),
            shutdown_timeout=CLOSE_GRACE_SECONDS,
        )
        ops = web.AppRunner(create_ops_app(metrics, admission), **RUNNER_OPTIONS)
        for runner in (api, ops):
            await runner.setup()
            runners.append(runner)
        running = Running(
            api=await start_site(api, settings.listen),
            ops=await start_site(ops, settings.ops_listen),
            chert=str(settings.chert_api_url),
            simulated_secret=simulated_secret,
        )
        log.info(
            "listening",
            extra={
                "fields": {
                    "api": running.api,
                    "ops": running.ops,
                    "chert": running.chert,
                    # The loop actually running: asyncio or uvloop.
                    "event_loop": type(loop).__module__.partition(".")[0],
                }
            },
        )
        if on_ready is not None:
            on_ready(running)

        async with tuning.trim_malloc_every():
            await stop.wait()
        admission.start_draining()
        log.info(
            "draining",
            extra={"fields": {"in_flight": admission.in_flight, "drain_s": settings.drain_seconds}},
        )
        if not await admission.wait_idle(settings.drain_seconds):
            log.warning(
                "drain time over; cutting uploads still running",
                extra={"fields": {"in_flight": admission.in_flight}},
            )
            admission.cut()
            # Time for each cut upload to tell its caller so.
            await admission.wait_idle(CLOSE_GRACE_SECONDS)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


async def _start_simulator(settings: Settings) -> tuple[Settings, str | None, web.AppRunner]:
    """Start the Chert simulator on a loopback port and point the gateway at it."""
    generated = None
    if settings.signing_secret is not None:
        secret = settings.signing_secret.current(time.monotonic())
    else:
        secret = generated = secrets.token_urlsafe(24)
    simulator = ChertSimulator(secret, tenant=settings.tenant)
    runner = web.AppRunner(simulator.app(), **RUNNER_OPTIONS)
    await runner.setup()
    url = await start_site(runner, ListenAddress(host="127.0.0.1", port=0))
    settings = dataclasses.replace(
        settings,
        chert_api_url=URL(url),
        signing_secret=settings.signing_secret or Credential(inline=secret),
    )
    return settings, generated, runner
