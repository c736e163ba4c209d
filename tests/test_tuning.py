"""The malloc tuning takes effect in a real process, and yields to the operator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SNIPPET = "from gateway.ops import tuning; print(tuning.tune_malloc())"


def run(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_applied_on_glibc() -> None:
    assert run({"PATH": "/usr/bin:/bin"}) == "True"


def test_an_operators_malloc_settings_win() -> None:
    assert run({"PATH": "/usr/bin:/bin", "MALLOC_ARENA_MAX": "2"}) == "False"


def test_gc_collects_rarely_and_skips_what_lives_forever() -> None:
    snippet = (
        "import gc; from gateway.ops import tuning; tuning.tune_gc(); "
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)"
    )
    result = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["50000", "True"]


TRIM_SNIPPET = """
import asyncio
from gateway.ops import procstat, tuning
tuning.tune_malloc()
held = [bytes(2000) for _ in range(100_000)]  # 200 MB of small blocks on the heap
top = bytes(2000)  # allocated last: keeps the freed memory below it from the heap's top
del held
before = procstat.status_bytes("VmRSS")

async def main():
    async with tuning.trim_malloc_every(0.05):
        await asyncio.sleep(0.3)

asyncio.run(main())
print(before // 2**20, procstat.status_bytes("VmRSS") // 2**20)
"""


def test_free_heap_pages_go_back_to_the_system_on_the_timer() -> None:
    result = subprocess.run(
        [sys.executable, "-c", TRIM_SNIPPET],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    before, after = (int(mib) for mib in result.stdout.split())
    # Without the trim the freed 200 MB stays resident (the trim threshold is 64 MiB).
    assert before > 150
    assert after < before - 150, (before, after)


ARENAS_SNIPPET = """
import ctypes, sys, threading
from gateway.ops import tuning
if sys.argv[1] == "tuned":
    tuning.tune_malloc()

def churn():
    for _ in range(200):
        blocks = [bytes(1000) for _ in range(500)]
        del blocks

threads = [threading.Thread(target=churn) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
out = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, out)
libc.fclose(out)
"""


def arenas(mode: str, tmp_path: Path) -> int:
    report = tmp_path / f"malloc-{mode}.xml"
    subprocess.run(
        [sys.executable, "-c", ARENAS_SNIPPET, mode, str(report)],
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    return report.read_text().count("<heap nr=")


def test_threads_share_at_most_two_arenas(tmp_path: Path) -> None:
    assert arenas("tuned", tmp_path) <= 2
    assert arenas("untuned", tmp_path) > 2  # what the cap prevents
