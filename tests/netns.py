"""A real link for tests: a network namespace behind a shaped wire.

    with Link(delay_ms=20, rate_mbit=200) as link:
        link.chert_address        # the namespace's end, where Chert listens
        link.inside(argv)         # argv, to run inside the namespace

The delay and the rate apply each way. The wire is tests/wire.py (TUN
devices and a process that carries the packets), because this kernel has
no netem qdisc. The namespace and the wire are removed on exit whatever
happened; names carry the test process's pid, so parallel runs do not meet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from tests.conftest import require_root

WIRE = Path(__file__).with_name("wire.py")


class Link:
    def __init__(self, *, delay_ms: int, rate_mbit: int) -> None:
        require_root("network namespaces and TUN devices")
        if shutil.which("ip") is None:
            raise RuntimeError("ip (Debian's iproute2) is needed for a real link")
        pid = os.getpid()
        self.namespace = f"chert-link-{pid}"
        self._outer, self._inner = f"cg{pid % 10**6}", f"cs{pid % 10**6}"
        subnet = f"10.231.{pid % 250}"
        self.gateway_address, self.chert_address = f"{subnet}.1", f"{subnet}.2"
        self._shape = (str(delay_ms), str(rate_mbit))
        self._wire: subprocess.Popen[str] | None = None

    def inside(self, argv: list[str]) -> list[str]:
        """`argv`, to be run in the namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def __enter__(self) -> Link:
        self._delete()  # what a run killed mid-way may have left
        try:
            subprocess.run(["ip", "netns", "add", self.namespace], check=True)
            self._wire = subprocess.Popen(
                [sys.executable, str(WIRE), self.namespace, self._outer, self.gateway_address,
                 self._inner, self.chert_address, *self._shape],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            assert self._wire.stdout is not None
            if self._wire.stdout.readline().strip() != "ready":
                raise RuntimeError("the wire did not come up")
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._delete()

    def _delete(self) -> None:
        if self._wire is not None:
            self._wire.terminate()
            self._wire.wait(10)
            if self._wire.stdout is not None:
                self._wire.stdout.close()
            self._wire = None
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
