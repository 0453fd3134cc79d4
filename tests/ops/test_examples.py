"""The deployment examples: their gridshift settings load, the systemd units verify, and the
compose file wires the image, the config, the state volume and Prometheus together."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gridshift.scheduler.config import load_settings
from tests.conftest import REPO_ROOT
from tests.ops.tools import DEPLOY, RULES, run, tool

EXAMPLES = DEPLOY / "examples"
UNITS = sorted(EXAMPLES.glob("*/gridshift.service"))


@pytest.mark.parametrize(
    "path", sorted(EXAMPLES.glob("*/gridshift.yaml")), ids=lambda p: p.parent.name
)
def test_example_settings_load(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GRIDSHIFT_CONFIG", "GRIDSHIFT_API__PORT", "GRIDSHIFT_STATE_DIR"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings(path)
    assert settings.state_dir == Path("/var/lib/gridshift")
    for region in settings.regions.values():
        assert region.sources[-1].provider == "replay", "every chain ends in the offline trace"


def test_there_is_an_example_for_a_gpu_box_a_slurm_controller_and_a_ray_head() -> None:
    assert {p.parent.name for p in UNITS} == {"single-gpu", "slurm-controller", "ray-head"}
    slurm = load_settings(EXAMPLES / "slurm-controller" / "gridshift.yaml")
    assert slurm.slurm is not None and set(slurm.slurm.regions) == set(slurm.regions)
    ray = load_settings(EXAMPLES / "ray-head" / "gridshift.yaml")
    assert ray.ray is not None and set(ray.ray.regions) == set(ray.regions)
    box = load_settings(EXAMPLES / "single-gpu" / "gridshift.yaml")
    assert box.nvml.enabled and box.local.gpus == 1


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.parent.name)
def test_systemd_units_verify(unit: Path, tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    text = unit.read_text()
    assert "ExecStart=/opt/gridshift/bin/gridshift agent" in text
    assert "GRIDSHIFT_CONFIG=/etc/gridshift/gridshift.yaml" in text
    # verify checks that ExecStart exists; gridshift is not installed under /opt here.
    copy = tmp_path / "gridshift.service"
    copy.write_text(
        text.replace("/opt/gridshift/bin/gridshift agent", shutil.which("true") or "/bin/true")
    )
    result = run([analyze, "verify", str(copy)])
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_compose_example() -> None:
    folder = EXAMPLES / "single-gpu"
    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    agent = compose["services"]["gridshift"]
    assert (folder / agent["build"]["context"] / agent["build"]["dockerfile"]).resolve() == (
        REPO_ROOT / "Dockerfile"
    )
    assert agent["environment"]["GRIDSHIFT_API__HOST"] == "0.0.0.0"
    assert agent["ports"] == ["127.0.0.1:8787:8787"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in agent["volumes"]}
    assert (folder / mounts["/etc/gridshift/gridshift.yaml"]).is_file()
    assert mounts["/var/lib/gridshift"] in compose["volumes"]
    devices = agent["deploy"]["resources"]["reservations"]["devices"][0]
    assert devices["driver"] == "nvidia" and "utility" in devices["capabilities"]
    prom = compose["services"]["prometheus"]
    prom_mounts = {m.split(":")[1]: m.split(":")[0] for m in prom["volumes"]}
    assert (folder / prom_mounts["/etc/prometheus/gridshift-alerts.yml"]).resolve() == RULES
    scrape = yaml.safe_load((folder / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["job_name"] == "gridshift"
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["gridshift:8787"]


@pytest.mark.prometheus
def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    promtool = tool("promtool", "apt-get install prometheus")
    config = yaml.safe_load((EXAMPLES / "single-gpu" / "prometheus.yml").read_text())
    shutil.copy(RULES, tmp_path / "gridshift-alerts.yml")
    config["rule_files"] = ["gridshift-alerts.yml"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
