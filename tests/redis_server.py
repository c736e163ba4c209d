"""A real redis-server (Debian's package), started by a test on a free
loopback port and stopped by its pid: the shared idempotency store of the
gateways under test."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import redis.asyncio as redis

from tests.conftest import require_tool
from tests.processes import free_port, until_listening


class RedisServer:
    """`redis-server` without persistence; `stop` and `start` again keep its
    port (and so the URL the gateways were given). `password` adds AUTH;
    `tls` (cert, key and CA files) makes it listen with TLS only."""

    def __init__(
        self,
        workdir: Path,
        *,
        password: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.binary = require_tool("redis-server")
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        self.tls = tls
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return f"rediss://{auth}localhost:{self.port}/0?ssl_ca_certs={self.tls[2]}"

    def client(self) -> redis.Redis:
        """A client of our own, to look at what the gateways stored."""
        return redis.from_url(self.url)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def start(self) -> None:
        args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
        self._proc = await asyncio.create_subprocess_exec(self.binary, *args)
        try:
            await until_listening(self.port)
        except TimeoutError:
            await self.stop()
            log = (self.workdir / "redis.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server did not start:\n{log}") from None

    async def stop(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    async def __aenter__(self) -> RedisServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
