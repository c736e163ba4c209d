"""The container image and the Kubernetes manifests, checked statically, and
the contracts between them and the gateway: probe paths, ports, variable
names, the drain and grace period, the restricted security context, the
socket path, the user id.

There is no cluster here, so the kustomizations are rendered offline by
`kubectl kustomize` and every resulting object is validated: built-in kinds
with kubernetes-validate, the prometheus-operator kinds with k8s/schemas/.
The sidecar component is also added to a new app's kustomization exactly as
docs/deploy.md shows it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from gateway import __version__
from gateway.ops.config import OPTIONS, parse_listen
from gateway.ops.metrics import Metrics
from tests.conftest import require_tool
from tests.constants import CHAT_ID, SECRET
from tests.manifests import (
    CUSTOM_SCHEMAS,
    K8S,
    KUBERNETES_VERSIONS,
    ROOT,
    Manifest,
    find,
    kustomize,
    load_all,
    ops_routes,
    validate_strictly,
)
from tests.processes import GatewayProcess, curl
from tests.samples import make_file

KUSTOMIZATIONS = ["base", "overlays/unix-socket", "overlays/small", "overlays/network-policy"]


def gateway_container(deployment: Manifest) -> Manifest:
    (container,) = [
        c
        for c in deployment["spec"]["template"]["spec"]["initContainers"]
        if c["name"] == "chert-gateway"
    ]
    return dict(container)


def gateway_env(objects: list[Manifest], workload: str = "Deployment") -> dict[str, str]:
    """The gateway's environment as the pod would see it: its ConfigMaps in
    envFrom order (an optional one may be missing), then its env."""
    container = gateway_container(find(objects, workload))
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]
        if ref["name"] in config_maps:
            env.update(config_maps[ref["name"]]["data"])
        else:
            assert ref.get("optional"), f"{ref['name']} is not rendered"
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


@pytest.fixture(params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    return kustomize(K8S / request.param)


# -- validation -------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(rendered: list[Manifest], version: str) -> None:
    validate_strictly(rendered, version)


def test_the_custom_schemas_are_strict() -> None:
    podmonitor = load_all(K8S / "components" / "sidecar" / "podmonitor.yaml")[0]
    podmonitor["spec"]["podMetricsEndpoints"][0]["intervall"] = "30s"  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(podmonitor, json.loads(CUSTOM_SCHEMAS["PodMonitor"].read_text()))


def test_the_secret_example_validates() -> None:
    for version in KUBERNETES_VERSIONS:
        for obj in load_all(K8S / "chert-signing-secret.example.yaml"):
            kubernetes_validate.validate(obj, version, strict=True)


def assert_linter_passes(tool: str, *args: str) -> None:
    result = subprocess.run(
        [require_tool(tool), *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_passes() -> None:
    assert_linter_passes("yamllint", "--strict", "k8s", "monitoring")


def test_hadolint_passes() -> None:
    assert_linter_passes("hadolint", "--failure-threshold", "warning", "Dockerfile")


# -- contracts between the manifests and the gateway ---------------------------------


def test_probes_hit_real_ops_routes_on_the_ops_port(rendered: list[Manifest]) -> None:
    container = gateway_container(find(rendered, "Deployment"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    ops_port = parse_listen(gateway_env(rendered)["GATEWAY_OPS_LISTEN"]).port
    routes = ops_routes()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] in routes, probe
        assert ports[http["port"]] == ops_port, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_every_variable_is_a_gateway_setting(rendered: list[Manifest]) -> None:
    known = {option.env for option in OPTIONS}
    assert set(gateway_env(rendered)) <= known


def test_the_gateway_is_a_native_sidecar(rendered: list[Manifest]) -> None:
    container = gateway_container(find(rendered, "Deployment"))
    assert container["restartPolicy"] == "Always"
    assert "startupProbe" in container


def test_grace_period_covers_the_app_and_the_gateway_drain(rendered: list[Manifest]) -> None:
    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    drain = float(gateway_env(rendered)["GATEWAY_DRAIN_SECONDS"])
    (app,) = pod["containers"]
    pre_stop = float(app["lifecycle"]["preStop"]["exec"]["command"][-1])
    app_drain = 20  # the example app's own, as the manifest's comment says
    assert pod["terminationGracePeriodSeconds"] > pre_stop + app_drain + drain


def test_the_security_context_is_restricted(rendered: list[Manifest]) -> None:
    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["runAsNonRoot"] is True


def mounts(container: Manifest, volumes: dict[str, Manifest]) -> dict[str, Manifest]:
    return {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}


def test_writable_paths_are_size_limited_empty_dirs(rendered: list[Manifest]) -> None:
    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    container = gateway_container(find(rendered, "Deployment"))
    mounted = mounts(container, volumes)
    env = gateway_env(rendered)
    spool = mounted[env["GATEWAY_SPOOL_DIR"]]["emptyDir"]
    assert _bytes(spool["sizeLimit"]) >= int(env["GATEWAY_SPOOL_MAX_BYTES"])
    assert "sizeLimit" in mounted["/tmp"]["emptyDir"]


def test_the_secret_file_is_in_the_secret_mount(rendered: list[Manifest]) -> None:
    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    path = Path(gateway_env(rendered)["CHERT_SIGNING_SECRET_FILE"])
    volume = mounts(gateway_container(find(rendered, "Deployment")), volumes)[str(path.parent)]
    (example,) = load_all(K8S / "chert-signing-secret.example.yaml")
    assert volume["secret"]["secretName"] == example["metadata"]["name"]
    assert path.name in example["stringData"]


def test_the_api_is_reachable_only_inside_the_pod(rendered: list[Manifest]) -> None:
    listen = parse_listen(gateway_env(rendered)["GATEWAY_LISTEN"])
    deployment = find(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    app_url = {e["name"]: e["value"] for e in app["env"]}["CHERT_GATEWAY_URL"]
    if listen.path is None:
        assert listen.host == "127.0.0.1"
        assert app_url == f"http://127.0.0.1:{listen.port}"
        assert listen.port not in [
            p["containerPort"] for p in gateway_container(deployment)["ports"]
        ]
    else:
        # Both sides name the same socket, in a directory both containers mount.
        assert app_url == f"unix:{listen.path}"
        volumes = {v["name"]: v for v in pod["volumes"]}
        directory = str(Path(listen.path).parent)
        assert directory in mounts(gateway_container(deployment), volumes)
        assert directory in mounts(app, volumes)


def test_monitoring_selects_the_sidecar_and_its_metric_names(rendered: list[Manifest]) -> None:
    template_labels = find(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    podmonitor = find(rendered, "PodMonitor")
    for key, value in podmonitor["spec"]["selector"]["matchLabels"].items():
        assert template_labels[key] == value
    endpoint = podmonitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in [
        p["name"] for p in gateway_container(find(rendered, "Deployment"))["ports"]
    ]
    assert {"targetLabel": "job", "replacement": "chert-gateway", "action": "replace"} in endpoint[
        "relabelings"
    ]
    hpa_metric = find(rendered, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]
    names = {family.name for family in Metrics().registry.collect()}
    assert hpa_metric["name"] in names


def test_the_network_policy_is_opt_in_and_admits_the_ops_port() -> None:
    """A policy selects whole pods: it is not in the base, only where asked for."""
    assert not [o for o in kustomize(K8S / "base") if o["kind"] == "NetworkPolicy"]
    rendered = kustomize(K8S / "overlays" / "network-policy")
    policy = find(rendered, "NetworkPolicy")
    template_labels = find(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for key, value in policy["spec"]["podSelector"]["matchLabels"].items():
        assert template_labels[key] == value
    ops_port = parse_listen(gateway_env(rendered)["GATEWAY_OPS_LISTEN"]).port
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == ops_port


def test_the_image_runs_as_the_sidecars_user_and_pins_this_version() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.M)
    context = gateway_container(find(kustomize(K8S / "base"), "Deployment"))["securityContext"]
    assert (int(user[0]), int(user[1])) == (context["runAsUser"], context["runAsGroup"])
    assert f"chert-gateway=={__version__}" in dockerfile


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


# -- the gateway run the way the image runs it ---------------------------------------


def image_command_and_env() -> tuple[list[str], dict[str, str]]:
    """ENTRYPOINT + CMD and the ENV of the Dockerfile's final stage."""
    final_stage = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", final_stage, re.M)[1])  # type: ignore[index]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final_stage, re.M)[1])  # type: ignore[index]
    env_block = re.search(r"^ENV ((?:.*\\\n)*.*)$", final_stage, re.M)[1]  # type: ignore[index]
    env = dict(pair.split("=", 1) for pair in env_block.replace("\\\n", " ").split())
    return [*entrypoint, *cmd], env


async def test_the_gateway_runs_as_the_image_runs_it(chert_server: Any, simulator: Any) -> None:
    command, image_env = image_command_and_env()
    assert command == ["chert-gateway", "serve"]
    command[0] = str(Path(sys.executable).parent / command[0])  # the installed entry point

    # The pod's layout: a read-only working directory, the secret as a file,
    # the spool on its own writable directory; a non-root user (as in the pod).
    root = Path(tempfile.mkdtemp(prefix="image-run-"))
    try:
        os.chmod(root, 0o755)
        workdir, spool, secret = root / "app", root / "spool", root / "signing-secret"
        workdir.mkdir(mode=0o555)
        spool.mkdir(mode=0o777)
        spool.chmod(0o777)
        secret.write_text(SECRET)
        secret.chmod(0o644)
        upload = root / "upload.png"
        make_file(upload, 3 * 1024 * 1024)
        upload.chmod(0o644)
        env = {
            **image_env,
            "GATEWAY_SPOOL_DIR": str(spool),
            "CHERT_API_URL": str(chert_server.make_url("")),
            "CHERT_SIGNING_SECRET_FILE": str(secret),
            "GATEWAY_DRAIN_SECONDS": "20",
        }
        async with GatewayProcess(env, command=command, cwd=workdir, user=65534) as gateway:
            url = f"{gateway.api}/v1/chats/{CHAT_ID}/attachments"
            status, body = await curl("-T", str(upload), "-H", "Content-Type: image/png", url)
            assert status == 201, body
            # Chunked: through the spool directory.
            status, body = await curl(
                "-T",
                str(upload),
                "-H",
                "Content-Type: image/png",
                "-H",
                "Transfer-Encoding: chunked",
                url,
            )
            assert status == 201, body
            slow = asyncio.create_task(
                curl("-T", str(upload), "-H", "Content-Type: image/png", "--limit-rate", "1M", url)
            )
            await asyncio.sleep(1.0)
            gateway.signal(signal.SIGTERM)
            status, body = await slow
            exit_code = await gateway.wait()
        assert status == 201, body
        assert exit_code == 0, gateway.output
        assert list(workdir.iterdir()) == []
        assert list(spool.iterdir()) == []
        assert len(simulator.state.messages) == 3
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the component added to a new app, as docs/deploy.md shows it ---------------------

NEW_APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: invoices, labels: {app: invoices}}
spec:
  selector: {matchLabels: {app: invoices}}
  template:
    metadata: {labels: {app: invoices}}
    spec:
      containers:
        - name: invoices
          image: registry.example.com/invoices:1.0
          env: [{name: CHERT_GATEWAY_URL, value: "http://127.0.0.1:8790"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: reports}
spec:
  serviceName: reports
  selector: {matchLabels: {app: reports}}
  template:
    metadata: {labels: {app: reports}}
    spec:
      containers: [{name: reports, image: registry.example.com/reports:1.0}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cron-ui, annotations: {chert-gateway/sidecar: "false"}}
spec:
  selector: {matchLabels: {app: cron-ui}}
  template:
    metadata: {labels: {app: cron-ui}}
    spec:
      containers: [{name: ui, image: registry.example.com/ui:1.0}]
"""


def documented_kustomization() -> str:
    """The kustomization.yaml docs/deploy.md tells a user to write."""
    section = (ROOT / "docs" / "deploy.md").read_text().split("## Add the sidecar", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.S)
    assert block is not None
    return "\n".join(line.removeprefix("   ") for line in block[1].splitlines())


def test_the_component_adds_the_sidecar_to_a_new_app_as_documented(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "my-app.yaml").write_text(NEW_APP)
    kustomization = documented_kustomization()
    assert kustomization.count("components:") == 1
    # The docs' layout: the checkout beside the app.
    (tmp_path / "chert-gateway").symlink_to(ROOT)
    (app / "kustomization.yaml").write_text(kustomization)
    rendered = kustomize(app)

    for version in KUBERNETES_VERSIONS:
        validate_strictly(rendered, version)
    for workload in ("Deployment", "StatefulSet"):
        name = "invoices" if workload == "Deployment" else "reports"
        obj = find(rendered, workload, name)
        pod = obj["spec"]["template"]
        assert pod["metadata"]["labels"]["chert-gateway/sidecar"] == "true"
        (sidecar,) = pod["spec"]["initContainers"]
        assert sidecar["restartPolicy"] == "Always"
        assert {"chert-secret", "spool", "tmp"} <= {v["name"] for v in pod["spec"]["volumes"]}
    statefulset_volumes = find(rendered, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    assert "data" in {v["name"] for v in statefulset_volumes}  # the app's own are kept
    opted_out = find(rendered, "Deployment", "cron-ui")["spec"]["template"]["spec"]
    assert "initContainers" not in opted_out

    # The user's one value overrides the defaults, which stay in force otherwise.
    env = gateway_env([o for o in rendered if o["metadata"]["name"] != "cron-ui"])
    assert env["CHERT_TENANT"] == "acme"
    assert env["GATEWAY_LISTEN"] == "127.0.0.1:8790"
    podmonitor = find(rendered, "PodMonitor")
    assert podmonitor["spec"]["selector"]["matchLabels"] == {"chert-gateway/sidecar": "true"}
