"""A real Prometheus (Debian's), started on a free loopback port with the
given configuration and stopped by pid: for the tests of the dashboard and
the alerts, and for `make dashboard-preview`."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def running(
    config: dict[str, Any], workdir: Path, binary: str | None = None
) -> AsyncIterator[str]:
    """Prometheus with `config` (its data in `workdir`), ready; its URL."""
    binary = binary or shutil.which("prometheus") or "/usr/bin/prometheus"
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:
                try:
                    async with http.get(f"{url}/-/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                if proc.returncode is not None:
                    raise RuntimeError("prometheus exited at start")
                await asyncio.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        await proc.wait()


def scrape_config(target: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Scrape the gateway's ops listener each second as job chert-gateway."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        **extra,
        "scrape_configs": [
            {
                "job_name": "chert-gateway",
                "static_configs": [{"targets": [target], "labels": labels}],
            }
        ],
    }
