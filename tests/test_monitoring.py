"""The dashboard and the alerts against a real Prometheus (Debian's), and
promtool's checks of the metrics, the rules and the rule tests."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import BaseTestServer

from gateway.api.admission import Admission
from gateway.api.app import create_app, create_ops_app
from gateway.ops.config import Settings
from gateway.ops.metrics import Metrics
from gateway.simulator import ChertSimulator
from monitoring.prometheus import running as running_prometheus
from monitoring.prometheus import scrape_config
from tests.conftest import ServerAsDeployed, gateway_env, require_tool
from tests.constants import CHAT_ID
from tests.samples import sample

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
# Grafana's variables, as a query of the whole fleet would fill them in.
GRAFANA_VARIABLES = {
    "$cluster": ".*",
    "$namespace": ".*",
    "$pod": ".*",
    "$__rate_interval": "30s",
}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


class Traffic:
    """Successes, rejects and failures, mixed, until stopped."""

    def __init__(self, api: BaseTestServer, simulator: ChertSimulator) -> None:
        self.api, self.simulator = api, simulator
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        url = str(self.api.make_url(f"/v1/chats/{CHAT_ID}/attachments"))
        png = {"Content-Type": "image/png"}
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                body = sample("image/png", 200_000)
                await http.post(url, data=io.BytesIO(body), headers=png)  # streamed: sent
                await http.post(url, data=self._chunked(body), headers=png)  # spooled: sent
                await http.post(url, data=b"hello", headers={"Content-Type": "text/plain"})
                self.simulator.faults.update({"fail_sends": 1, "fail_send_code": 4001})
                await http.post(url, data=io.BytesIO(body), headers=png)  # upstream_error
                self.simulator.faults.update(
                    {"fail_sends": 1, "fail_send_code": 3002, "retry_after_seconds": 0}
                )
                await http.post(url, data=io.BytesIO(body), headers=png)  # retried, sent
                self.sent += 1
                await asyncio.sleep(0.2)

    @staticmethod
    async def _chunked(body: bytes) -> AsyncIterator[bytes]:
        yield body


@pytest.fixture
async def gateway_servers(
    chert_server: BaseTestServer,
) -> AsyncIterator[tuple[BaseTestServer, BaseTestServer]]:
    """The API and the ops listener of one gateway, sharing their metrics."""
    settings = Settings.from_env(gateway_env(str(chert_server.make_url(""))))
    metrics, admission = Metrics(), Admission(settings.max_in_flight)
    api = ServerAsDeployed(create_app(settings, metrics=metrics, admission=admission))
    ops = ServerAsDeployed(create_ops_app(metrics, admission))
    async with api, ops:
        yield api, ops


@pytest.fixture
async def prometheus(
    gateway_servers: tuple[BaseTestServer, BaseTestServer], tmp_path: Path
) -> AsyncIterator[str]:
    _, ops = gateway_servers
    config = scrape_config(
        f"{ops.host}:{ops.port}",
        {"pod": "gateway-0", "namespace": "test"},
        rule_files=[str(MONITORING / "alerts.yaml")],
    )
    async with running_prometheus(config, tmp_path, require_tool("prometheus")) as url:
        yield url


async def query(http: aiohttp.ClientSession, prometheus: str, expr: str) -> dict[str, Any]:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    async with http.get(f"{prometheus}/api/v1/query", params={"query": expr}) as response:
        return dict(await response.json())


@pytest.mark.slow
async def test_every_dashboard_and_alert_expression_runs_on_real_prometheus(
    prometheus: str,
    gateway_servers: tuple[BaseTestServer, BaseTestServer],
    simulator: ChertSimulator,
) -> None:
    api, _ = gateway_servers
    traffic = Traffic(api, simulator)
    stop = asyncio.Event()
    running = asyncio.create_task(traffic.run(stop))
    try:
        async with aiohttp.ClientSession() as http:
            # Enough scrapes for rate() over 30 s, with traffic between them.
            async with asyncio.timeout(60):
                while True:
                    scrapes = await query(
                        http, prometheus, 'count_over_time(up{job="chert-gateway"}[1m])'
                    )
                    found = scrapes["data"]["result"]
                    if found and float(found[0]["value"][1]) >= 8 and traffic.sent >= 3:
                        break
                    await asyncio.sleep(0.5)

            empty = []
            for title, expr in dashboard_queries():
                answer = await query(http, prometheus, expr)
                assert answer["status"] == "success", (title, expr, answer)
                if not answer["data"]["result"]:
                    empty.append(title)
            assert empty == [], f"dashboard panels with no data: {empty}"

            for rule in alert_rules():
                answer = await query(http, prometheus, rule["expr"])
                assert answer["status"] == "success", (rule["alert"], answer)

            async with http.get(f"{prometheus}/api/v1/rules") as response:
                groups = (await response.json())["data"]["groups"]
            loaded = {rule["name"]: rule["health"] for g in groups for rule in g["rules"]}
            assert set(loaded) == {rule["alert"] for rule in alert_rules()}
            assert set(loaded.values()) <= {"ok", "unknown"}, loaded
    finally:
        stop.set()
        await running


async def test_scraped_metrics_pass_promtool_check_metrics(
    gateway_servers: tuple[BaseTestServer, BaseTestServer],
) -> None:
    promtool = require_tool("promtool")
    api, ops = gateway_servers
    async with aiohttp.ClientSession() as http:
        # Some of everything first, so every family has samples to lint.
        url = str(api.make_url(f"/v1/chats/{CHAT_ID}/attachments"))
        body = sample("image/png", 5000)
        await http.post(url, data=body, headers={"Content-Type": "image/png"})
        await http.post(url, data=b"x", headers={"Content-Type": "text/plain"})
        async with http.get(ops.make_url("/metrics")) as response:
            text = await response.read()
    assert b"chert_gateway_requests_total" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"", result.stdout  # no lint findings at all
    assert result.stderr.strip() == b"", result.stderr


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = require_tool("promtool")
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        result = subprocess.run(
            [promtool, *args], cwd=MONITORING, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_the_kubernetes_wrappers_are_rendered_from_the_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(MONITORING / "render.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    configmap = yaml.safe_load((ROOT / "k8s" / "monitoring" / "grafana-dashboard.yaml").read_text())
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["chert-gateway.json"])
    assert [v["name"] for v in dashboard["templating"]["list"]] == [
        "datasource",
        "cluster",
        "namespace",
        "pod",
    ]


def test_every_alert_stays_silent_in_a_unit_test() -> None:
    tests = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text())["tests"]
    silent = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if not case.get("exp_alerts")
    }
    assert silent == {rule["alert"] for rule in alert_rules()}


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert (ROOT / path).is_file(), url
        assert anchor in anchors, url
        section = runbook.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Means**", "**Check**", "**Do**"):
            assert part in section, (rule["alert"], part)


def test_a_missing_target_has_its_own_alert() -> None:
    (absent,) = [r for r in alert_rules() if "absent(" in r["expr"]]
    assert absent["expr"].strip() == 'absent(up{job="chert-gateway"})'


def test_the_dashboard_opens_on_single_numbers_and_scopes_every_query() -> None:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    panels = dashboard["panels"]
    first_row = [p for p in panels[1:] if p["gridPos"]["y"] == panels[1]["gridPos"]["y"]]
    assert [p["type"] for p in first_row] == ["stat"] * 4
    assert [p["title"] for p in first_row] == [
        "Uploads per second", "Failure ratio", "p99 upload time", "Bytes per second to Chert",
    ]  # fmt: skip
    for title, expr in dashboard_queries():
        assert 'cluster=~"$cluster", namespace=~"$namespace", pod=~"$pod"' in expr, title
    failure_ratios = [e for t, e in dashboard_queries() if "Failure ratio" in t]
    assert len(failure_ratios) == 2
    assert all("overloaded" in e for e in failure_ratios)  # the gateway's own 503s
    memory = [p for p in panels if "process_resident_memory_bytes" in json.dumps(p)]
    cpu = [p for p in panels if "process_cpu_seconds_total" in json.dumps(p)]
    assert len(memory) == len(cpu) == 1
    assert memory[0] is not cpu[0]
    assert memory[0]["fieldConfig"]["defaults"]["unit"] == "bytes"


def test_the_monitoring_doc_names_every_panel_and_alert() -> None:
    doc = (ROOT / "docs" / "monitoring.md").read_text()
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        assert (f"| {panel['title']} |" in doc) or (f"**{panel['title']}**" in doc), panel["title"]
    for rule in alert_rules():
        assert f"[{rule['alert']}]" in doc, rule["alert"]
    assert (ROOT / "docs" / "dashboard-preview.png").stat().st_size > 50_000
