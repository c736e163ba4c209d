"""The malloc tuning takes effect in a real process, and yields to the operator."""

from __future__ import annotations

import subprocess
import sys

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
