"""The gateway as its own OS process, the way users run it, for tests that
measure its memory, send it signals or read its logs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import NamedTuple

import orjson

from gateway.ops import procstat

START_TIMEOUT_S = 20


class GatewayProcess:
    """`python -m gateway serve` with the given environment, listening on port 0.

    `command` replaces `python -m gateway serve --log-format json` (its log
    must still be JSON lines); `cwd` and `user` (a uid, via setpriv when we
    are root) run it the way a container would.
    """

    def __init__(
        self,
        env: dict[str, str],
        *args: str,
        command: list[str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
    ) -> None:
        self.command = command or [sys.executable, "-m", "gateway", "serve", "--log-format", "json"]
        if user is not None and os.getuid() == 0:
            self.command = [
                "setpriv",
                f"--reuid={user}",
                f"--regid={user}",
                "--clear-groups",
                *self.command,
            ]
        self.cwd = cwd
        self.env = {
            **os.environ,
            "GATEWAY_LISTEN": "127.0.0.1:0",
            "GATEWAY_OPS_LISTEN": "127.0.0.1:0",
            **env,
        }
        self.args = args
        self.lines: list[str] = []
        self.api = ""
        self.ops = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def log_entries(self) -> list[dict[str, object]]:
        entries = []
        for line in self.lines:
            if line.startswith("{"):
                entries.append(orjson.loads(line))
        return entries

    async def __aenter__(self) -> GatewayProcess:
        self._proc = await asyncio.create_subprocess_exec(
            *self.command,
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read_output())
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await self._listening.wait()
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.output}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _read_output(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if '"msg":"listening"' in line:
                entry = orjson.loads(line)
                self.api, self.ops = str(entry["api"]), str(entry["ops"])
                self._listening.set()

    def signal(self, signum: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(signum)

    async def wait(self, timeout: float = 30) -> int:
        assert self._proc is not None
        async with asyncio.timeout(timeout):
            code = await self._proc.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> int | None:
        if self._proc is None or self._proc.returncode is not None:
            return self._proc.returncode if self._proc else None
        self._proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait(timeout=30)
        except TimeoutError:
            self._proc.kill()
            return await self.wait()

    def peak_rss_bytes(self) -> int:
        """VmHWM: the highest resident set size the process has had."""
        return procstat.status_bytes("VmHWM", self.pid)


class Ran(NamedTuple):
    code: int
    out: str
    err: str


async def run(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, clean_env: bool = False
) -> Ran:
    """Run a command to its end: (exit code, stdout, stderr). `env` is added
    to this process's environment (or is the whole of it, `clean_env`). The
    one runner of short-lived commands."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env or {}) if clean_env else {**os.environ, **(env or {})},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


async def gateway_cli(*args: str, env: dict[str, str] | None = None) -> Ran:
    """`chert-gateway ARGS` as `python -m gateway`."""
    return await run(sys.executable, "-m", "gateway", *args, env=env)


async def shell(command: str, *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
    """A command line as a person would paste it, through bash."""
    return await run("bash", "-c", command, env=env, cwd=cwd)


async def curl(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run curl (a real client) and return (HTTP status, body text)."""
    from tests.conftest import require_tool

    _, out, _ = await run(require_tool("curl"), "-sS", "-w", "\n%{http_code}", *args, cwd=cwd)
    body, _, code = out.rpartition("\n")
    return int(code), body


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def until_listening(port: int, timeout: float = 10) -> None:
    """Wait for a server a test started to accept connections on `port`."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
