"""Same-run benchmark: uploading to Chert directly, through the gateway, and
through nginx, over the same files, alternately, on loopback.

Each party is its own OS process: Chert's side (benchmarks/sink.py by
default: the three calls answered by a bare asyncio protocol, the PUT's
body counted and dropped; or, with --sink simulator, `simulate --discard`),
the gateway as users run it (`chert-gateway serve`, once with SHA-256 and
once without), Debian's nginx in front of Chert's upload route, and this
script as the load generator (aiohttp, keep-alive, bodies written in 64 KiB
pieces as curl writes them).

Paths, run one after another for each workload and round (A, B, C, D, A, …),
so the machine's drift hits all alike:
  direct         the three Chert calls, straight to Chert's side
  gateway        one request per file to the gateway (SHA-256 on, the default)
  gateway-nosha  the same with GATEWAY_SHA256=false
  nginx          the three calls, the PUT through nginx (request buffering off)
  minimal-relay  one request per file to benchmarks/minimal_relay.py: the three
                 calls and SHA-256 in bare aiohttp, nothing else (a reference
                 for what aiohttp itself costs)

Figures per path and workload: aggregate MB/s, uploads/s, p50/p99 seconds
per upload, and for the relays (gateways, nginx, minimal relay) peak RSS
(over idle, and itself) and CPU seconds per GB and per upload; for every
path, the cores the relay, Chert's side and the load generator kept busy.
Medians over the rounds (CPU: all rounds' CPU time over all rounds' bytes,
as /proc counts it in 10 ms ticks); ratios are of medians measured in this
same run. The report also says what share of the machine's CPU time the
hypervisor took during the run.

    python benchmarks/bench.py            # 5 rounds, the full workloads (minutes)
    python benchmarks/bench.py --quick    # 2 rounds, small workloads (under a minute)
    python benchmarks/bench.py --tls      # the production leg: Chert over verified TLS

With --tls Chert's side serves HTTPS (a throwaway CA, trustme), every path
verifies it (the gateway through CHERT_CA_FILE; nginx with
`proxy_pass https://`, `proxy_ssl_verify on`, session reuse and keep-alive),
and the report names the TLS version and cipher each party negotiated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from gateway.ops import procstat

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KIB, MIB = 1024, 1024 * 1024
PIECE = 64 * KIB  # what curl writes at a time
CHAT_ID = "0f2d3c1a-8b4e-4f6a-90d2-1a3b4c5d6e7f"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Workload:
    name: str
    count: int
    size: int


FULL = [
    Workload("1 × 100 MB", 1, 100 * MIB),
    Workload("10 × 10 MB", 10, 10 * MIB),
    Workload("50 × 1 MB", 50, MIB),
    Workload("200 × 64 KB", 200, 64 * KIB),
]
QUICK = [
    Workload("1 × 20 MB", 1, 20 * MIB),
    Workload("10 × 2 MB", 10, 2 * MIB),
    Workload("50 × 256 KB", 50, 256 * KIB),
    Workload("200 × 64 KB", 200, 64 * KIB),
]
PATHS = ["direct", "gateway", "gateway-nosha", "nginx", "minimal-relay"]
# Settings both gateways run with unless --gateway-env says otherwise. The
# event loop is named so a run never depends on what happens to be installed.
GATEWAY_SETTINGS = {"GATEWAY_MAX_IN_FLIGHT": "1000", "GATEWAY_EVENT_LOOP": "asyncio"}


@dataclass
class Run:
    seconds: float
    per_upload: list[float]
    bytes: int
    uploads: int
    peak_rss_over_idle: int | None = None
    # The peak itself: with free pages handed back while idle (ops/tuning.py),
    # "over idle" counts pages that are faulted in again, so both are shown.
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    # CPU of Chert's side and of this load generator: what shares the cores.
    sink_cpu_seconds: float = 0.0
    load_cpu_seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MIB / self.seconds

    @property
    def uploads_per_s(self) -> float:
        return self.uploads / self.seconds

    @property
    def cpu_per_gb(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds / (self.bytes / 1e9)


@dataclass
class Results:
    runs: dict[str, dict[str, list[Run]]] = field(default_factory=dict)

    def add(self, path: str, workload: str, run: Run) -> None:
        self.runs.setdefault(workload, {}).setdefault(path, []).append(run)


# -- the processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_listening(port: int, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


NGINX_TLS = """
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
            # So the simulator can tell nginx's calls from the others.
            proxy_set_header X-Via nginx;"""

NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    upstream chert {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 200m;
        # The fair setting: nginx's default 16 KiB body buffer is slow.
        client_body_buffer_size 1m;
        proxy_request_buffering off;
        proxy_buffering off;
        location / {{
            proxy_pass {scheme}://chert;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;{tls}
        }}
    }}
}}
"""


class Fleet:
    """The simulator, two gateways, nginx and the minimal relay, each its own process."""

    def __init__(
        self,
        tmp: Path,
        gateway_env: dict[str, str] | None = None,
        *,
        tls: bool = False,
        sink: str = "lean",
        gateway_cpus: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.tls = tls
        self.sink = sink
        # Both gateways run under `taskset -c` this list when given.
        self.pinned = ["taskset", "-c", gateway_cpus] if gateway_cpus else []
        self.scheme = "https" if tls else "http"
        self.ca_file = tmp / "ca.pem"
        # What both gateways run with: GATEWAY_SETTINGS, then the lever measured.
        self.gateway_env = {**GATEWAY_SETTINGS, **(gateway_env or {})}
        self.secret = secrets.token_urlsafe(16)
        self.ports = {
            name: free_port()
            for name in ("chert", "gw", "gw-ops", "nosha", "nosha-ops", "nginx", "relay")
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    async def __aenter__(self) -> Fleet:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _start(self) -> None:
        nginx = nginx_binary()  # before anything starts: it may be missing
        gateway = str(Path(sys.executable).parent / "chert-gateway")
        p = self.ports
        if self.sink == "lean":
            chert = [sys.executable, str(ROOT / "benchmarks" / "sink.py"), str(p["chert"])]
        else:
            chert = [gateway, "simulate", "--port", str(p["chert"]), "--secret", self.secret,
                     "--discard"]  # fmt: skip
        self.procs["chert"] = start([*chert, *self._certificates()])
        chert_url = f"{self.scheme}://127.0.0.1:{p['chert']}"
        trust = {"CHERT_CA_FILE": str(self.ca_file)} if self.tls else {}
        common = {
            "CHERT_API_URL": chert_url,
            **trust,
            "CHERT_SIGNING_SECRET": self.secret,
            "GATEWAY_SPOOL_DIR": str(self.tmp),
            **self.gateway_env,
        }
        for name, sha in (("gw", "true"), ("nosha", "false")):
            self.procs[name] = start(
                [*self.pinned, gateway, "serve", "--log-format", "json"],
                {
                    **common,
                    "GATEWAY_LISTEN": f"127.0.0.1:{p[name]}",
                    "GATEWAY_OPS_LISTEN": f"127.0.0.1:{p[name + '-ops']}",
                    "GATEWAY_SHA256": sha,
                },
            )
        nginx_dir = self.tmp / "nginx"
        nginx_dir.mkdir(mode=0o777)
        nginx_dir.chmod(0o777)
        conf = nginx_dir / "nginx.conf"
        tls = NGINX_TLS.format(ca=self.ca_file) if self.tls else ""
        conf.write_text(
            NGINX_CONF.format(
                tmp=nginx_dir, upstream=p["chert"], port=p["nginx"], scheme=self.scheme, tls=tls
            )
        )
        self.procs["nginx"] = start(
            [nginx, "-c", str(conf), "-p", str(nginx_dir), "-g", "daemon off;"]
        )
        self.procs["relay"] = start(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "minimal_relay.py"),
                chert_url,
                self.secret,
                str(p["relay"]),
            ],
            # Python's default context trusts what SSL_CERT_FILE names.
            {"SSL_CERT_FILE": str(self.ca_file)} if self.tls else None,
        )
        for name in ("chert", "gw", "nosha", "nginx", "relay"):
            await wait_listening(p[name])

    def _certificates(self) -> list[str]:
        """The simulator's TLS arguments: a throwaway CA's certificate for
        127.0.0.1 and localhost, written beside the CA the paths trust."""
        if not self.tls:
            return []
        import trustme

        authority = trustme.CA()
        authority.cert_pem.write_to_path(str(self.ca_file))
        issued = authority.issue_cert("127.0.0.1", "localhost")
        cert, key = self.tmp / "chert.pem", self.tmp / "chert-key.pem"
        issued.private_key_pem.write_to_path(str(key))
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        return ["--tls-cert", str(cert), "--tls-key", str(key)]

    def client_ssl(self) -> ssl.SSLContext | bool:
        """What the load generator verifies Chert with."""
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else True

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def relay_pids(self, path: str) -> list[int]:
        """The processes whose memory and CPU count for a path."""
        if path == "gateway":
            return [self.procs["gw"].pid]
        if path == "gateway-nosha":
            return [self.procs["nosha"].pid]
        if path == "minimal-relay":
            return [self.procs["relay"].pid]
        if path == "nginx":
            master = self.procs["nginx"].pid
            return [master, *children(master)]
        return []


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        raise SystemExit("nginx is not installed: `make bench` installs it (Debian's nginx-light)")
    return found


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def reset_peak(pids: list[int]) -> int:
    """Reset VmHWM (clear_refs 5) and return the current RSS, in bytes."""
    rss = 0
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        rss += procstat.status_bytes("VmRSS", pid)
    return rss


def peak(pids: list[int]) -> int:
    return sum(procstat.status_bytes("VmHWM", pid) for pid in pids)


# -- the load generator ---------------------------------------------------------------------


async def pieces(data: memoryview) -> AsyncIterator[memoryview]:
    for start_at in range(0, len(data), PIECE):
        yield data[start_at : start_at + PIECE]


class LoadGenerator:
    def __init__(self, http: aiohttp.ClientSession, fleet: Fleet) -> None:
        self.http, self.fleet = http, fleet
        p = fleet.ports
        self.chert = f"{fleet.scheme}://127.0.0.1:{p['chert']}"
        self.auth = {"Authorization": f"Bearer {fleet.secret}"}
        self.gateways = {
            "gateway": f"http://127.0.0.1:{p['gw']}",
            "gateway-nosha": f"http://127.0.0.1:{p['nosha']}",
            "minimal-relay": f"http://127.0.0.1:{p['relay']}",
        }
        self.nginx = URL(f"http://127.0.0.1:{p['nginx']}")

    async def upload(self, path: str, data: memoryview) -> float:
        started = time.perf_counter()
        if path in self.gateways:
            await self._through_gateway(self.gateways[path], data)
        else:
            await self._three_calls(data, via_nginx=path == "nginx")
        return time.perf_counter() - started

    async def _through_gateway(self, base: str, data: memoryview) -> None:
        headers = {"Content-Type": "image/png", "Content-Length": str(len(data))}
        url = f"{base}/v1/chats/{CHAT_ID}/attachments"
        async with self.http.put(url, data=pieces(data), headers=headers) as response:
            body = await response.read()
            if response.status != 201:
                raise RuntimeError(f"gateway answered {response.status}: {body[:300]!r}")

    async def _three_calls(self, data: memoryview, via_nginx: bool) -> None:
        slot_body = {"filename": "a.png", "content_type": "image/png", "size_bytes": len(data)}
        async with self.http.post(
            f"{self.chert}/api/v1/attachments", json=slot_body, headers=self.auth
        ) as response:
            slot = await response.json()
        upload_url = URL(slot["upload_url"])
        if via_nginx:
            upload_url = self.nginx.with_path(upload_url.path)
        headers = {**self.auth, "Content-Type": "image/png", "Content-Length": str(len(data))}
        async with self.http.put(upload_url, data=pieces(data), headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"PUT answered {response.status}: {await response.text()}")
            await response.read()
        message = {
            "message": {"parts": [{"type": "media", "attachment_id": slot["attachment_id"]}]}
        }
        async with self.http.post(
            f"{self.chert}/api/v1/chats/{CHAT_ID}/messages", json=message, headers=self.auth
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"send answered {response.status}: {await response.text()}")
            await response.read()

    async def negotiated(self) -> dict[str, list[str]]:
        """The TLS versions and ciphers the simulator saw, by who called, and
        how many connections (handshakes) carried how many calls."""
        async with self.http.get(f"{self.chert}/_simulator/requests") as response:
            calls = await response.json()
        seen: dict[str, set[str]] = {}
        connections: dict[str, dict[tuple[str, int], bool]] = {}
        counts: dict[str, int] = {}
        for call in calls:
            headers = {name.lower(): value for name, value in call["headers"]}
            if headers.get("x-via") == "nginx":
                party = "nginx"
            elif headers.get("user-agent", "").startswith("chert-gateway/"):
                party = "gateway"
            else:
                party = "others (direct, minimal relay)"
            seen.setdefault(party, set()).add(str(call["tls_cipher"]))
            connections.setdefault(party, {})[tuple(call["peer"])] = call["tls_resumed"]
            counts[party] = counts.get(party, 0) + 1
        return {
            party: [
                *sorted(ciphers),
                f"{counts[party]} calls on {len(connections[party])} connections, "
                f"{sum(connections[party].values())} of them resumed",
            ]
            for party, ciphers in sorted(seen.items())
        }

    async def run(self, path: str, workload: Workload, data: memoryview) -> Run:
        pids = self.fleet.relay_pids(path)
        sink = [self.fleet.procs["chert"].pid]
        idle_rss = reset_peak(pids) if pids else None
        cpu_before = cpu_seconds(pids) if pids else None
        sink_before, load_before = cpu_seconds(sink), time.process_time()
        started = time.perf_counter()
        times = await asyncio.gather(*(self.upload(path, data) for _ in range(workload.count)))
        elapsed = time.perf_counter() - started
        return Run(
            seconds=elapsed,
            per_upload=sorted(times),
            bytes=workload.size * workload.count,
            uploads=workload.count,
            peak_rss_over_idle=(peak(pids) - idle_rss) if idle_rss is not None else None,
            peak_rss=peak(pids) if pids else None,
            cpu_seconds=(cpu_seconds(pids) - cpu_before) if cpu_before is not None else None,
            sink_cpu_seconds=cpu_seconds(sink) - sink_before,
            load_cpu_seconds=time.process_time() - load_before,
        )


# -- the report ---------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(results: Results) -> dict[str, dict[str, dict[str, Any]]]:
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, by_path in results.runs.items():
        summary[workload] = {}
        for path, runs in by_path.items():
            uploads = [t for run in runs for t in run.per_upload]
            rss = [r.peak_rss_over_idle for r in runs if r.peak_rss_over_idle is not None]
            peaks = [r.peak_rss for r in runs if r.peak_rss is not None]
            # CPU time is read in clock ticks (10 ms): over all rounds
            # together, not as a median of per-round figures a few ticks long.
            timed = [r for r in runs if r.cpu_seconds is not None]
            cpu_gb = sum(r.bytes for r in timed) / 1e9
            seconds = sum(r.seconds for r in runs)
            summary[workload][path] = {
                "mb_per_s": median([r.mb_per_s for r in runs]),
                "uploads_per_s": median([r.uploads_per_s for r in runs]),
                "p50_s": percentile(uploads, 0.5),
                "p99_s": percentile(uploads, 0.99),
                "peak_rss_over_idle_mib": max(rss) / MIB if rss else None,
                "peak_rss_mib": max(peaks) / MIB if peaks else None,
                "cpu_s_per_gb": (
                    sum(r.cpu_seconds or 0.0 for r in timed) / cpu_gb if timed else None
                ),
                "cpu_ms_per_upload": (
                    1000 * sum(r.cpu_seconds or 0.0 for r in timed) / sum(r.uploads for r in timed)
                    if timed
                    else None
                ),
                # Cores kept busy while the path ran: the relay, Chert's side, the load.
                "cores_busy": [
                    sum(r.cpu_seconds or 0.0 for r in runs) / seconds,
                    sum(r.sink_cpu_seconds for r in runs) / seconds,
                    sum(r.load_cpu_seconds for r in runs) / seconds,
                ],
                "rounds": len(runs),
            }
    return summary


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = [
        "| workload | path | MB/s | uploads/s | p50 s | p99 s | peak RSS over idle (peak) "
        "| CPU s/GB | CPU ms/upload | cores busy (relay / sink / load) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workload, by_path in summary.items():
        for path, s in by_path.items():
            rss = (
                "–"
                if s["peak_rss_over_idle_mib"] is None
                else f"{s['peak_rss_over_idle_mib']:.1f} MiB ({s['peak_rss_mib']:.0f})"
            )
            lines.append(
                f"| {workload} | {path} | {s['mb_per_s']:.0f} | {s['uploads_per_s']:.1f} | "
                f"{s['p50_s']:.3f} | {s['p99_s']:.3f} | {rss} | {fmt(s['cpu_s_per_gb'], '.2f')} "
                f"| {fmt(s['cpu_ms_per_upload'], '.2f')} "
                f"| {' / '.join(format(c, '.2f') for c in s['cores_busy'])} |"
            )
    lines += [
        "",
        "| workload | measure | gateway / direct | gateway / nginx | no-SHA gateway / nginx "
        "| gateway / minimal relay | CPU/GB gateway / nginx |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for workload, by_path in summary.items():
        small = "64 KB" in workload
        key = "uploads_per_s" if small else "mb_per_s"
        g, n, d = by_path["gateway"][key], by_path["nginx"][key], by_path["direct"][key]
        ns, r = by_path["gateway-nosha"][key], by_path["minimal-relay"][key]
        measure = "uploads/s" if small else "MB/s"
        cpu_g, cpu_n = by_path["gateway"]["cpu_s_per_gb"], by_path["nginx"]["cpu_s_per_gb"]
        cpu = f"{cpu_g / cpu_n:.2f}" if cpu_g and cpu_n else "–"
        lines.append(
            f"| {workload} | {measure} | {g / d:.2f} | {g / n:.2f} | {ns / n:.2f} | {g / r:.2f} "
            f"| {cpu} |"
        )
    return "\n".join(lines)


def plot(summary: dict[str, dict[str, dict[str, Any]]], target: Path, leg: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(summary)
    fig, grid = plt.subplots(1, len(workloads), figsize=(4 * len(workloads), 4), squeeze=False)
    axes = grid[0]
    for ax, workload in zip(axes, workloads, strict=True):
        small = "64 KB" in workload
        key, unit = ("uploads_per_s", "uploads/s") if small else ("mb_per_s", "MB/s")
        values = [summary[workload][p][key] for p in PATHS]
        bars = ax.bar(PATHS, values, color=["#999999", "#2b6cb0", "#63b3ed", "#38a169", "#d69e2e"])
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_title(workload)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"chert-gateway vs direct upload vs nginx (medians, same run, loopback{leg})")
    fig.tight_layout()
    fig.savefig(target, dpi=110)


def cpu_ticks() -> tuple[int, int]:
    """(all ticks, stolen ticks) of every CPU since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]


def stolen_share(since: tuple[int, int]) -> float:
    """The share of CPU time the hypervisor took from this machine since `since`:
    on a shared host it inflates every figure, so the report says it."""
    total, steal = cpu_ticks()
    return (steal - since[1]) / max(1, total - since[0])


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nginx": subprocess.run(
            [nginx_binary(), "-v"], capture_output=True, text=True
        ).stderr.strip(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3),
    }


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds of small workloads")
    parser.add_argument("--rounds", type=int, help="default 5 (2 with --quick)")
    parser.add_argument("--tls", action="store_true", help="Chert over verified TLS")
    parser.add_argument(
        "--sink",
        choices=["lean", "simulator"],
        default="lean",
        help="Chert's side: benchmarks/sink.py (default), or the simulator (--discard)",
    )
    parser.add_argument(
        "--workloads", help="only these, by name, comma-separated (e.g. '1 × 100 MB')"
    )
    parser.add_argument(
        "--gateway-cpus",
        metavar="LIST",
        help="run both gateways on these CPUs only (taskset -c LIST), e.g. 0",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for both gateways (to measure a lever)",
    )
    args = parser.parse_args(argv)
    workloads = QUICK if args.quick else FULL
    if args.workloads:
        chosen = {name.strip() for name in args.workloads.split(",")}
        workloads = [w for w in workloads if w.name in chosen]
    rounds = args.rounds or (2 if args.quick else 5)
    results = Results()
    ticks_at_start = cpu_ticks()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chert-bench-") as tmp:
        extra = dict(item.split("=", 1) for item in args.gateway_env)
        async with Fleet(
            Path(tmp), extra, tls=args.tls, sink=args.sink, gateway_cpus=args.gateway_cpus
        ) as fleet:
            connector = aiohttp.TCPConnector(limit=0, ssl=fleet.client_ssl())
            async with aiohttp.ClientSession(connector=connector) as http:
                load = LoadGenerator(http, fleet)
                for workload in workloads:
                    data = memoryview(PNG_MAGIC + os.urandom(workload.size - len(PNG_MAGIC)))
                    for path in PATHS:  # warm every path's connections and code
                        await load.run(
                            path, Workload("warm-up", min(workload.count, 10), workload.size), data
                        )
                    for round_number in range(rounds):
                        # Rotate the order each round: drift and warmth hit all paths alike.
                        order = (
                            PATHS[round_number % len(PATHS) :] + PATHS[: round_number % len(PATHS)]
                        )
                        for path in order:
                            results.add(path, workload.name, await load.run(path, workload, data))
                    print(f"done: {workload.name}", file=sys.stderr)
                negotiated = await load.negotiated() if args.tls else {}
    summary = summarize(results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {
        "when": stamp,
        "mode": "quick" if args.quick else "full",
        "rounds": rounds,
        "machine": {**machine(), "cpu_stolen_share": round(stolen_share(ticks_at_start), 3)},
        "gateway_env": fleet.gateway_env,
        "sink": args.sink,
        "gateway_cpus": args.gateway_cpus,
        "tls": negotiated,
        "summary": summary,
        "runs": {
            w: {p: [asdict(r) for r in runs] for p, runs in by.items()}
            for w, by in results.runs.items()
        },
    }
    name = ("tls-" if args.tls else "") + ("quick" if args.quick else "full")
    (RESULTS / f"{name}-latest.json").write_text(json.dumps(report, indent=2))
    plot(summary, RESULTS / f"{name}-latest.png", ", Chert over TLS" if args.tls else "")
    print(table(summary))
    print(f"\nCPU time taken by the hypervisor during the run: {stolen_share(ticks_at_start):.0%}")
    for party, seen in negotiated.items():
        print(f"TLS, {party} to Chert: {', '.join(seen)}")
    print(f"\nwritten: {RESULTS / (name + '-latest.json')}, {RESULTS / (name + '-latest.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
