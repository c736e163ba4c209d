"""Render the Kubernetes wrappers of the monitoring sources.

    monitoring/dashboard.json → k8s/monitoring/grafana-dashboard.yaml
                                (a ConfigMap labelled grafana_dashboard: "1")
    monitoring/alerts.yaml    → k8s/monitoring/prometheusrule.yaml (a PrometheusRule)

The sources are what people edit and what promtool tests; the wrappers are
never edited by hand. `python monitoring/render.py` writes them;
`--check` fails when they are stale (tests/test_monitoring.py runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "monitoring"
TARGETS = ROOT / "k8s" / "monitoring"
HEADER = "# Rendered by monitoring/render.py from monitoring/{source}; do not edit.\n"
LABELS = {"app.kubernetes.io/name": "chert-gateway", "app.kubernetes.io/component": "monitoring"}


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the embedded files stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def _dump(document: dict[str, Any], source: str) -> str:
    body = yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, width=120)
    return HEADER.format(source=source) + body


def render() -> dict[Path, str]:
    dashboard = (SOURCES / "dashboard.json").read_text()
    rules = yaml.safe_load((SOURCES / "alerts.yaml").read_text())
    return {
        TARGETS / "grafana-dashboard.yaml": _dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "chert-gateway-dashboard",
                    "labels": {**LABELS, "grafana_dashboard": "1"},
                },
                "data": {"chert-gateway.json": dashboard},
            },
            "dashboard.json",
        ),
        TARGETS / "prometheusrule.yaml": _dump(
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": "chert-gateway", "labels": LABELS},
                "spec": rules,
            },
            "alerts.yaml",
        ),
    }


def main(argv: list[str]) -> int:
    rendered = render()
    stale = [p for p, text in rendered.items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run `make monitoring`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in rendered.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
