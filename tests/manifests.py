"""The Kubernetes manifests as a test sees them: rendered offline by the
real `kubectl kustomize`, each object validated strictly (built-in kinds with
kubernetes-validate, the prometheus-operator kinds with k8s/schemas/)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from gateway.api.admission import Admission
from gateway.api.app import create_ops_app
from gateway.ops.metrics import Metrics
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")
CUSTOM_SCHEMAS = {
    "PodMonitor": K8S / "schemas" / "podmonitor-monitoring-v1.json",
    "PrometheusRule": K8S / "schemas" / "prometheusrule-monitoring-v1.json",
}
Manifest = dict[str, Any]


def load_all(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomize(directory: Path) -> list[Manifest]:
    """`kubectl kustomize`: the real renderer, offline."""
    result = subprocess.run(
        [require_tool("kubectl"), "kustomize", str(directory)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate_strictly(objects: list[Manifest], version: str) -> None:
    for obj in objects:
        if obj["kind"] in CUSTOM_SCHEMAS:
            jsonschema.validate(obj, json.loads(CUSTOM_SCHEMAS[obj["kind"]].read_text()))
        else:
            kubernetes_validate.validate(obj, version, strict=True)


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of `kind` (named `name`, or generated from that name
    with kustomize's hash suffix)."""
    (found,) = [
        o
        for o in objects
        if o["kind"] == kind
        and (name is None or re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", o["metadata"]["name"]))
    ]
    return found


def ops_routes() -> set[str]:
    """The paths the ops listener serves: what a probe may name."""
    return {
        r.resource.canonical
        for r in create_ops_app(Metrics(), Admission(1)).router.routes()
        if r.resource is not None
    }
