"""Pooled connections that Chert's side has dropped, measured from the outside.

Starts the simulator from this checkout, dropping keep-alive connections
idle for 1 s (`--drop-idle-how close` or `forget`), and a gateway from a
checkout (keeping them 15 s) in front of it. Each round warms the gateway's
pool with a few uploads at once, waits out the simulator's idle limit, then
makes one call through the gateway: an upload (slot, PUT, send) or a JSON
send. It prints, per mode and call, the answers and what Chert saw: PUTs
begun and completed, and any attachment whose stored bytes differ from what
was sent.

    .venv/bin/python benchmarks/dropped.py                 # this checkout
    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/dropped.py /tmp/old        # another one

`forget` needs root (CAP_NET_ADMIN); about 40 s in all.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edges import CHAT, PNG, SECRET, Gateway

HERE = Path(__file__).resolve().parent.parent
IDLE_SECONDS = 1.0
ROUNDS = 10
WARM_UPLOADS = 4


class Simulator:
    def __init__(self, how: str) -> None:
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._seen = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "simulate", "--port", "0", "--secret", SECRET,
             "--drop-idle-after", str(IDLE_SECONDS), "--drop-idle-how", how],
            env={**os.environ, "PYTHONPATH": str(HERE)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(200):
            self.log.seek(0)
            if match := re.search(rb"on (http://\S+)", self.log.read()):
                self.url = match.group(1).decode()
                return
            time.sleep(0.05)
        raise RuntimeError("the simulator did not start")

    def requests(self) -> list[dict[str, Any]]:
        """The requests Chert saw since the last call (a reset would clear the
        drop settings too)."""
        seen: list[dict[str, Any]] = requests.get(f"{self.url}/_simulator/requests").json()
        new, self._seen = seen[self._seen :], len(seen)
        return new

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def upload(api: str, size: int) -> tuple[int, str]:
    body = PNG + os.urandom(size - len(PNG))
    answer = requests.post(
        f"{api}/v1/chats/{CHAT}/attachments",
        data=body,
        headers={"Content-Type": "image/png", "X-Filename": "a.png"},
        timeout=30,
    )
    sent = hashlib.sha256(body).hexdigest()
    if answer.status_code != 201:
        return answer.status_code, answer.json()["error"]["message"][:60]
    return 201, "same" if answer.json().get("sha256") == sent else "bytes differ"


def json_send(api: str) -> tuple[int, str]:
    body = {"message": {"parts": [{"type": "text", "value": "hello"}]}}
    answer = requests.post(f"{api}/v1/chats/{CHAT}/messages", json=body, timeout=30)
    if answer.status_code != 201:
        return answer.status_code, answer.json()["error"]["message"][:60]
    return 201, "same"


def form_send(api: str) -> tuple[int, str]:
    files = [(f"f{i}", (f"{i}.png", PNG + os.urandom(1_000_000), "image/png")) for i in range(3)]
    answer = requests.post(
        f"{api}/v1/chats/{CHAT}/messages", data={"text": "three"}, files=files, timeout=30
    )
    if answer.status_code != 201:
        return answer.status_code, answer.json()["error"]["message"][:60]
    return 201, "same"


CALLS = {"upload": lambda api: upload(api, 2_000_000), "json send": json_send, "form": form_send}


def probe(checkout: Path, how: str) -> None:
    simulator = Simulator(how)
    gateway = Gateway(checkout, chert=simulator.url)
    pool = concurrent.futures.ThreadPoolExecutor(WARM_UPLOADS)
    try:
        for call, make in CALLS.items():
            answers: Counter[str] = Counter()
            begun = completed = 0
            for _ in range(ROUNDS):
                list(pool.map(lambda _: upload(gateway.api, 2_000_000), range(WARM_UPLOADS)))
                simulator.requests()
                time.sleep(IDLE_SECONDS * 1.5)
                status, same = make(gateway.api)
                answers[f"{status}" + ("" if same == "same" else f" ({same})")] += 1
                puts = [r for r in simulator.requests() if r["method"] == "PUT"]
                begun += len(puts)
                completed += sum(1 for r in puts if r["body_complete"])
            shown = ", ".join(f"{n}× {a}" for a, n in sorted(answers.items()))
            print(f"{how:6} {call:9}  PUTs begun {begun:2}, completed {completed:2}  {shown}")
            dropped = gateway.text().count("had been dropped by Chert's side")
            print(f"{'':6} {'':9}  gateway log lines on dropped connections so far: {dropped}")
    finally:
        pool.shutdown()
        gateway.stop()
        simulator.stop()


def main() -> None:
    checkout = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE
    print(f"gateway from {checkout}; the simulator drops connections idle {IDLE_SECONDS:g} s")
    for how in ("close", "forget"):
        probe(checkout, how)


if __name__ == "__main__":
    main()
