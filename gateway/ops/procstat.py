"""A process's figures from /proc/<pid>/status (Linux), for the demo's
report, the memory tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path


def status_value(field: str, pid: int | str = "self") -> int:
    """The number a status line gives (`Threads`, `VmRSS` in kB, …); 0 where
    /proc does not say."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def status_bytes(field: str, pid: int | str = "self") -> int:
    """`VmRSS`, `VmHWM` (the peak), … in bytes; 0 where /proc does not say."""
    return status_value(field, pid) * 1024  # the kernel reports kB
