"""k8s/shared/: one gateway Deployment that many services call through a
Service. Rendered by the real `kubectl kustomize`, validated strictly, and
checked against the gateway: its settings, its ports and probes, the Redis
URL from a Secret, who the NetworkPolicy lets in."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.ops.config import OPTIONS, Settings, parse_listen
from gateway.ops.metrics import Metrics
from tests.manifests import (
    K8S,
    KUBERNETES_VERSIONS,
    Manifest,
    find,
    kustomize,
    load_all,
    ops_routes,
)
from tests.manifests import validate_strictly as validate

SHARED = K8S / "shared"
EXAMPLE_SECRETS = ["redis-secret.example.yaml", "client-tokens.example.yaml"]


@pytest.fixture(scope="module")
def rendered() -> list[Manifest]:
    return kustomize(SHARED)


def container(objects: list[Manifest]) -> Manifest:
    (gateway,) = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(gateway)


def config(objects: list[Manifest]) -> dict[str, str]:
    """The settings from the ConfigMap and plain env values."""
    env = dict(find(objects, "ConfigMap", "chert-gateway-shared-config")["data"])
    env.update({e["name"]: e["value"] for e in container(objects)["env"] if "value" in e})
    return env


def pod_labels(objects: list[Manifest]) -> dict[str, str]:
    return dict(find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels are evaluated here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def admits(policy: Manifest, *, namespace: dict[str, str], pod: dict[str, str], port: int) -> bool:
    """Whether a NetworkPolicy's ingress rules let this peer reach `port`."""
    for rule in policy["spec"]["ingress"]:
        if port not in [p["port"] for p in rule["ports"]]:
            continue
        for peer in rule["from"]:
            if "namespaceSelector" not in peer:
                continue  # this namespace only: the peers below are elsewhere
            if selects(peer["namespaceSelector"], namespace) and selects(
                peer.get("podSelector", {}), pod
            ):
                return True
    return False


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(rendered: list[Manifest], version: str) -> None:
    validate(rendered, version)
    for name in EXAMPLE_SECRETS:
        validate(load_all(SHARED / name), version)


def test_it_has_every_part_of_the_topology(rendered: list[Manifest]) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "PodMonitor",
        "PrometheusRule",
    } <= kinds
    deployment = find(rendered, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    hpa = find(rendered, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2
    names = {family.name for family in Metrics().registry.collect()}
    assert hpa["metrics"][0]["pods"]["metric"]["name"] in names
    pdb = find(rendered, "PodDisruptionBudget")["spec"]
    assert selects(pdb["selector"], pod_labels(rendered))
    assert pdb["maxUnavailable"] < hpa["minReplicas"]


def test_the_settings_are_the_gateways_and_valid(rendered: list[Manifest]) -> None:
    env = config(rendered)
    assert set(env) | {"GATEWAY_IDEMPOTENCY_URL"} <= {option.env for option in OPTIONS}
    (example,) = load_all(SHARED / "redis-secret.example.yaml")
    settings = Settings.from_env(
        {
            **env,
            "CHERT_SIGNING_SECRET": "s",
            "CHERT_SIGNING_SECRET_FILE": "",
            "GATEWAY_CLIENT_TOKENS_FILE": "",
            "GATEWAY_SPOOL_DIR": "",
            "GATEWAY_IDEMPOTENCY_URL": example["stringData"]["url"],
        }
    )
    assert settings.caller_max_in_flight is not None
    assert settings.caller_rate is not None


def test_the_redis_url_and_the_secrets_come_from_secrets(rendered: list[Manifest]) -> None:
    gateway = container(rendered)
    (redis_url,) = [e for e in gateway["env"] if e["name"] == "GATEWAY_IDEMPOTENCY_URL"]
    ref = redis_url["valueFrom"]["secretKeyRef"]
    (example,) = load_all(SHARED / "redis-secret.example.yaml")
    assert (ref["name"], ref["key"] in example["stringData"]) == (example["metadata"]["name"], True)

    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {m["mountPath"]: volumes[m["name"]] for m in gateway["volumeMounts"]}
    env = config(rendered)
    (tokens,) = load_all(SHARED / "client-tokens.example.yaml")
    for variable, secret in [
        ("CHERT_SIGNING_SECRET_FILE", load_all(K8S / "chert-signing-secret.example.yaml")[0]),
        ("GATEWAY_CLIENT_TOKENS_FILE", tokens),
    ]:
        directory, _, filename = env[variable].rpartition("/")
        assert mounted[directory]["secret"]["secretName"] == secret["metadata"]["name"]
        assert filename in secret["stringData"]
    # Every caller is named: each gets its own quota.
    assert all(":" in line for line in tokens["stringData"]["tokens"].split())


def test_the_service_reaches_the_api_and_the_probes_the_ops_routes(
    rendered: list[Manifest],
) -> None:
    gateway = container(rendered)
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    env = config(rendered)
    api, ops = parse_listen(env["GATEWAY_LISTEN"]), parse_listen(env["GATEWAY_OPS_LISTEN"])
    assert (api.host, ports["api"], ports["ops"]) == ("0.0.0.0", api.port, ops.port)
    service = find(rendered, "Service")["spec"]
    assert selects({"matchLabels": service["selector"]}, pod_labels(rendered))
    assert [p["targetPort"] for p in service["ports"]] == ["api"]
    routes = ops_routes()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["path"] in routes
        assert gateway[probe]["httpGet"]["port"] == "ops"
    podmonitor = find(rendered, "PodMonitor")["spec"]
    assert selects(podmonitor["selector"], pod_labels(rendered))
    assert podmonitor["podMetricsEndpoints"][0]["port"] == "ops"


def test_the_grace_period_covers_the_drain_and_the_pod_is_restricted(
    rendered: list[Manifest],
) -> None:
    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    gateway = container(rendered)
    pre_stop = float(gateway["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(config(rendered)["GATEWAY_DRAIN_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = gateway["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]


def test_the_network_policy_admits_only_labelled_clients_and_monitoring(
    rendered: list[Manifest],
) -> None:
    policy = find(rendered, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"], pod_labels(rendered))
    env = config(rendered)
    api = parse_listen(env["GATEWAY_LISTEN"]).port
    ops = parse_listen(env["GATEWAY_OPS_LISTEN"]).port
    assert api is not None
    assert ops is not None
    client = {"chert-gateway/client": "true", "app": "billing"}
    apps = {"kubernetes.io/metadata.name": "billing"}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    assert admits(policy, namespace=apps, pod=client, port=api)
    assert not admits(policy, namespace=apps, pod={"app": "billing"}, port=api)
    assert not admits(policy, namespace=apps, pod=client, port=ops)
    assert admits(policy, namespace=monitoring, pod={"app": "prometheus"}, port=ops)
    assert not admits(policy, namespace=monitoring, pod={"app": "prometheus"}, port=api)
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6379} <= egress_ports
