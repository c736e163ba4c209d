"""`make dashboard-preview`: the Grafana dashboard's panels, each drawn from
its own PromQL as a real Prometheus answers it, into one PNG.

No Grafana runs here, so this is the picture a reviewer can look at: the
gateway (`serve --simulate`) takes a short mixed load (files streamed and
chunked, refused types, Chert failures and a 3002 retried, downloads),
Debian's Prometheus scrapes it every second, and every panel of
monitoring/dashboard.json is evaluated with its own expressions, the
dashboard's variables set to "All". Panels keep the dashboard's layout.

    python monitoring/preview.py [--seconds 60] [--output docs/dashboard-preview.png]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import orjson

# Run as a script, so this directory is on sys.path.
from prometheus import running as running_prometheus
from prometheus import scrape_config
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring" / "dashboard.json"
CHAT_ID = "0f2d3c1a-8b4e-4f6a-90d2-1a3b4c5d6e7f"
PNG = b"\x89PNG\r\n\x1a\n"
VARIABLES = {"$cluster": ".*", "$namespace": ".*", "$pod": ".*", "$__rate_interval": "15s"}
SCALES = {"bytes": (1024**2, "MiB"), "Bps": (1e6, "MB/s"), "percentunit": (0.01, "%")}


@asynccontextmanager
async def gateway() -> AsyncIterator[dict[str, str]]:
    """`chert-gateway serve --simulate`; its API, ops and Chert URLs."""
    env = {
        **os.environ,
        "GATEWAY_LISTEN": "127.0.0.1:0",
        "GATEWAY_OPS_LISTEN": "127.0.0.1:0",
        "GATEWAY_MAX_IN_FLIGHT": "8",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--simulate", "--log-format", "json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            while line := await proc.stdout.readline():
                entry = orjson.loads(line) if line.startswith(b"{") else {}
                if entry.get("msg") == "listening":
                    break
        drain = asyncio.ensure_future(_discard(proc.stdout))
        yield {"api": entry["api"], "ops": entry["ops"], "chert": entry["chert"]}
    finally:
        proc.terminate()
        await proc.wait()
    drain.cancel()


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


@asynccontextmanager
async def prometheus(ops: str, workdir: Path) -> AsyncIterator[str]:
    labels = {"pod": "example-app-0", "namespace": "demo", "cluster": "dev"}
    config = scrape_config(ops.removeprefix("http://"), labels)
    async with running_prometheus(config, workdir) as url:
        yield url


async def load(urls: dict[str, str], seconds: float) -> None:
    """A mix a dashboard has something to say about, for `seconds`."""
    send = f"{urls['api']}/v1/chats/{CHAT_ID}/attachments"
    faults = f"{urls['chert']}/_simulator/faults"
    png = {"Content-Type": "image/png"}
    deadline = time.monotonic() + seconds
    with tqdm(
        total=int(seconds), unit="s", desc="load", file=sys.stderr, disable=not sys.stderr.isatty()
    ) as bar:
        async with aiohttp.ClientSession() as http:
            round_ = 0
            while (left := deadline - time.monotonic()) > 0:
                bar.n = int(seconds - left)
                bar.refresh()
                round_ += 1
                size = 200_000 if round_ % 4 else 8_000_000
                body = PNG + os.urandom(size - len(PNG))
                async with http.post(send, data=io.BytesIO(body), headers=png) as r:
                    answer = await r.json()
                async with http.post(send, data=_chunked(body), headers=png):
                    pass
                async with http.post(send, data=b"text", headers={"Content-Type": "text/plain"}):
                    pass
                if round_ % 3 == 0:
                    change = {"fail_sends": 1, "fail_send_code": 4001}
                    async with http.post(faults, json=change):
                        pass
                    async with http.post(send, data=io.BytesIO(body), headers=png):
                        pass
                if round_ % 5 == 0:
                    change = {"fail_sends": 1, "fail_send_code": 3002, "retry_after_seconds": 0}
                    async with http.post(faults, json=change):
                        pass
                    async with http.post(send, data=io.BytesIO(body), headers=png):
                        pass
                if "attachment_id" in answer:
                    content = f"{urls['api']}/v1/attachments/{answer['attachment_id']}/content"
                    async with http.get(content) as r:
                        await r.read()
                await asyncio.sleep(0.1)
            bar.n = int(seconds)
            bar.refresh()


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    yield body


def panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def _expr(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


async def evaluate(url: str, start: float, end: float) -> dict[int, list[tuple[str, Any]]]:
    """Each panel's series: (legend, [(t, v), …]) per result of each target."""
    found: dict[int, list[tuple[str, Any]]] = {}
    async with aiohttp.ClientSession() as http:
        for panel in panels():
            series: list[tuple[str, Any]] = []
            for target in panel.get("targets", []):
                params = {"query": _expr(target["expr"]), "start": start, "end": end, "step": 2}
                async with http.get(f"{url}/api/v1/query_range", params=params) as response:
                    answer = await response.json()
                if answer["status"] != "success":
                    raise SystemExit(f"{panel['title']}: {answer}")
                for result in answer["data"]["result"]:
                    legend = target.get("legendFormat", "")
                    for key, value in result["metric"].items():
                        legend = legend.replace("{{" + key + "}}", value)
                    points = [(float(t) - start, float(v)) for t, v in result["values"]]
                    series.append((legend or target["refId"], points))
            found[panel["id"]] = series
    return found


def draw(series: dict[int, list[tuple[str, Any]]], output: Path) -> None:
    laid_out = panels()
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in laid_out)
    figure = plt.figure(figsize=(20, rows * 0.42))
    grid = figure.add_gridspec(rows, 24, hspace=3.5, wspace=2.5, top=0.97, bottom=0.02)
    for panel in laid_out:
        pos = panel["gridPos"]
        if panel["type"] == "row":
            header = figure.add_subplot(grid[pos["y"], :])
            header.set_axis_off()
            header.text(
                0, 0, panel["title"], fontsize=14, weight="bold", transform=header.transAxes
            )
            continue
        ax = figure.add_subplot(
            grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]]
        )
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        scale, label = SCALES.get(unit, (1, unit))
        ax.set_title(panel["title"], fontsize=10, loc="left")
        found = series.get(panel["id"], [])
        if panel["type"] == "stat":
            last = [points[-1][1] / scale for _, points in found if points]
            text = f"{last[0]:.3g} {label}" if last else "no data"
            ax.text(0.5, 0.4, text, fontsize=22, ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for legend, points in found:
            ax.plot([t for t, _ in points], [v / scale for _, v in points], label=legend)
        if not found:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        if found:
            ax.legend(fontsize=6, loc="upper left")
    figure.suptitle(
        "chert-gateway dashboard: each panel's own PromQL on a real Prometheus"
        " (seconds into the run)",
        fontsize=14,
        y=0.995,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=70, bbox_inches="tight")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "dashboard-preview.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chert-dashboard-") as workdir:
        async with gateway() as urls, prometheus(urls["ops"], Path(workdir)) as url:
            start = time.time()
            await load(urls, args.seconds)
            await asyncio.sleep(3)  # the last scrapes
            series = await evaluate(url, start, time.time())
    draw(series, args.output)
    empty = [p["title"] for p in panels() if p["type"] != "row" and not series.get(p["id"])]
    for panel in panels():
        if panel["type"] != "row":
            print(f"{panel['title']}: {len(series.get(panel['id'], []))} series")
    print(f"wrote {args.output}" + (f"; panels with no data: {empty}" if empty else ""))
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
