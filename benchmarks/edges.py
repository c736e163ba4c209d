"""Hostile and odd input, measured from the outside (issue 12's classes).

Starts `chert-gateway serve --simulate` from a checkout and probes it with
plain HTTP clients and raw sockets, printing one line per class: what the
caller got, how long it took, peak memory, what Chert saw, what the log
holds. Run it against two checkouts to compare them, one after the other:

    .venv/bin/python benchmarks/edges.py                 # this checkout
    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/edges.py /tmp/old        # another one

Not part of `make test`: the tests assert each behaviour; this prints the
figures. It takes about 40 s (it waits out the 10 s header deadline).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import requests
from aiohttp import web

CHAT = "0f2d3c1a-8b4e-4f6a-90d2-1a3b4c5d6e7f"
SECRET = "edges-secret-83bd1f0e"
PNG = b"\x89PNG\r\n\x1a\n"


class Gateway:
    """A gateway process from `checkout`, listening on loopback port 0."""

    def __init__(self, checkout: Path, env: dict[str, str] | None = None, chert: str = "") -> None:
        # Open for as long as the script runs: a handful of them, freed at exit.
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        args = ["serve", "--log-format", "json"] + ([] if chert else ["--simulate"])
        full_env = {
            **os.environ,
            "PYTHONPATH": str(checkout),
            "GATEWAY_LISTEN": "127.0.0.1:0",
            "GATEWAY_OPS_LISTEN": "127.0.0.1:0",
            "CHERT_SIGNING_SECRET": SECRET,
            "GATEWAY_CLIENT_TIMEOUT": "5",
            **({"CHERT_API_URL": chert} if chert else {}),
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=tempfile.gettempdir(),
        )
        for _ in range(400):
            for line in self.text().splitlines():
                if '"listening"' in line:
                    entry = json.loads(line)
                    self.api, self.chert = str(entry["api"]), str(entry["chert"])
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the gateway did not start:\n{self.text()}")

    def text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def raw(api: str, data: bytes, then: bytes = b"", pause: float = 0.0) -> tuple[bytes, float]:
    """One request written by hand; its answer (head and body) and how long it took."""
    host, port = api.removeprefix("http://").rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(15)
        sock.sendall(data)
        if then:
            time.sleep(pause)
            sock.sendall(then)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = next(
                (
                    int(h.split(b":")[1])
                    for h in head.split(b"\r\n")
                    if h.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(rest) < length and (chunk := sock.recv(65536)):
                rest += chunk
            answer = head + b"\r\n\r\n" + rest
        except TimeoutError:
            pass
    return answer, time.monotonic() - started


def describe(answer: bytes) -> str:
    """`status content-type rid=yes|no` of a raw answer."""
    if not answer:
        return "no answer"
    lines = answer.split(b"\r\n")
    content_type = next(
        (
            h.split(b":", 1)[1].strip().decode()
            for h in lines
            if h.lower().startswith(b"content-type")
        ),
        "-",
    )
    has_id = any(h.lower().startswith(b"x-request-id") for h in lines)
    return f"{lines[0].split()[1].decode()} {content_type} rid={'yes' if has_id else 'no'}"


def quoting_upstream() -> int:
    """An upstream (a proxy in front of Chert, say) that quotes the request's
    Authorization in a 400; its port."""

    async def quote(request: web.Request) -> web.Response:
        message = f"bad: {request.headers.get('Authorization')}"
        return web.json_response({"error": {"code": 1002, "message": message}}, status=400)

    ports: list[int] = []

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", quote)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ports.append(runner.addresses[0][1])
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    while not ports:
        time.sleep(0.05)
    return ports[0]


def probe(checkout: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    gw = Gateway(checkout)
    files = f"{gw.api}/v1/chats/{CHAT}/attachments"
    messages = f"{gw.api}/v1/chats/{CHAT}/messages"
    png = {"Content-Type": "image/png"}

    pdf = b"%PDF-1.7\n" + b"A" * (1024 * 1024 - 9)
    packed = gzip.compress(pdf)
    r = requests.post(
        files, data=packed, headers={"Content-Encoding": "gzip", "Content-Type": "application/pdf"}
    )
    results["1 gzip upload"] = f"{r.status_code} size_bytes={r.json().get('size_bytes')}"

    baseline = gw.peak_rss_mib()
    r = requests.post(messages, files=[("text", (None, "x" * 60_000)) for _ in range(1200)])
    sends = [
        q
        for q in requests.get(f"{gw.chert}/_simulator/requests").json()
        if q["path"].endswith("/messages")
    ]
    results["3 1,200 x 60 KB form"] = (
        f"{r.status_code}, peak RSS +{gw.peak_rss_mib() - baseline:.0f} MiB, sends {len(sends)}"
    )

    key = {"Idempotency-Key": "edges-form-1"}
    first = requests.post(
        messages, files=[("text", (None, "one")), ("f", ("a.png", PNG + b"1" * 500))], headers=key
    )
    other = requests.post(
        messages, files=[("text", (None, "two")), ("f", ("a.png", PNG + b"2" * 500))], headers=key
    )
    results["4 same key, other form"] = (
        f"{first.status_code} then {other.status_code} "
        f"replayed={other.headers.get('Idempotent-Replayed')}"
    )

    faults = f"{gw.chert}/_simulator/faults"
    requests.post(
        faults,
        json={
            "fail_sends": 1,
            "fail_send_code": 5003,
            "fail_send_status": 503,
            "retry_after_seconds": 1,
        },
    )
    r = requests.post(files, data=PNG + b"p" * 100, headers=png)
    results["5a 503 with code 5003, once"] = r.status_code
    requests.post(
        faults, json={"fail_sends": 9, "fail_send_code": 3002, "retry_after_seconds": "inf"}
    )
    try:
        r = requests.post(files, data=PNG + b"p" * 100, headers=png)
        results["5b Retry-After: inf"] = (
            f"{r.status_code} Retry-After={r.headers.get('Retry-After')}"
        )
    except requests.RequestException as exc:
        results["5b Retry-After: inf"] = f"no answer ({type(exc).__name__})"
    requests.post(f"{gw.chert}/_simulator/reset")

    head = f"POST /v1/chats/{CHAT}/".encode()
    answer, _ = raw(
        gw.api, b"GET /openapi.json HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    )
    results["6a 9 KB header"] = describe(answer)
    form = b'--b0\r\nContent-Disposition: form-data; name="text"\r\n\r\nhi\r\n--b0--\r\n'
    answer, _ = raw(
        gw.api,
        head
        + b"messages HTTP/1.1\r\nHost: g\r\nContent-Type: multipart/form-data\r\n"
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(form)
        + form,
    )
    results["6b form without boundary"] = describe(answer)
    answer, _ = raw(
        gw.api,
        head
        + b"attachments HTTP/1.1\r\nHost: g\r\nContent-Type: image/png\r\n"
        + b"X-Filename: \xff\xfe.png\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
        + PNG
        + b"zz",
    )
    results["6c X-Filename \\xff\\xfe.png"] = describe(answer)

    chunked = (
        head
        + b"attachments HTTP/1.1\r\nHost: g\r\nContent-Type: image/png\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer, took = raw(
        gw.api, chunked + b"10\r\n" + PNG + b"12345678\r\n", then=b"zz\r\nxx\r\n", pause=0.3
    )
    results["7a bad chunk mid-body"] = f"{describe(answer)} after {took:.1f} s"
    host, port = gw.api.removeprefix("http://").rsplit(":", 1)
    slow = [socket.create_connection((host, int(port))) for _ in range(200)]
    for sock in slow:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nX-Slow: ")
    time.sleep(12)
    still_open = 0
    for sock in slow:
        sock.setblocking(False)
        try:
            sock.recv(65536)
        except BlockingIOError:
            still_open += 1
        sock.close()
    results["7b slow-header connections open after 12 s (of 200)"] = still_open

    r = requests.post(
        messages,
        files=[("parallel_attachments", (None, "true")), ("f", ("a.png", PNG + b"1" * 50))],
    )
    puts = [
        q for q in requests.get(f"{gw.chert}/_simulator/requests").json() if q["method"] == "PUT"
    ]
    results["8 parallel_attachments with 1 image"] = f"{r.status_code}, PUTs {len(puts)}"
    r = requests.post(
        f"{gw.chert}/api/v1/chats/{CHAT}/messages",
        json={"message": {"parts": [{"type": "text", "value": "x"}]}, "parts": []},
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    results["9 simulator, top-level parts"] = r.status_code
    gw.stop()
    results["log ERROR lines"] = gw.text().count('"level":"error"')

    gw = Gateway(checkout, {"GATEWAY_DRAIN_SECONDS": "0.5"})
    host, port = gw.api.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            head
            + b"attachments HTTP/1.1\r\nHost: g\r\nContent-Type: image/png\r\n"
            + b"Content-Length: 10000000\r\n\r\n"
            + PNG
            + b"\0" * 1_000_000
        )
        time.sleep(0.5)
        gw.proc.send_signal(signal.SIGTERM)
        sock.settimeout(10)
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            answer = b""
    gw.proc.wait(30)
    said = answer.partition(b"\r\n\r\n")[2][:80]
    results["7c upload cut by the drain"] = f"{describe(answer)} {said!r}"

    gw = Gateway(checkout, chert=f"http://127.0.0.1:{quoting_upstream()}")
    r = requests.post(f"{gw.api}/v1/chats/{CHAT}/attachments", data=PNG + b"z", headers=png)
    gw.stop()
    results["2 secret quoted by upstream"] = (
        f"{r.status_code}; in the answer: {SECRET in r.text}; in the log: {SECRET in gw.text()}"
    )
    return results


def main() -> int:
    checkout = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    for what, result in probe(checkout).items():
        print(f"{what:52} {result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
