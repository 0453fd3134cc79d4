"""The agent's metric set follows Prometheus' naming conventions, keeps label cardinality
bounded, passes `promtool check metrics`, and is documented for operators."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gridshift.scheduler.metrics import AgentMetrics, decision_cause
from gridshift.scheduler.models import PowerSample
from gridshift.scheduler.telemetry.metrics import GpuCollector
from tests.ops.tools import DEPLOY, run, tool

UNITS = ("seconds", "watts", "joules", "grams", "grams_per_kwh", "ratio", "bytes")
# Gauges that count things or are flags carry no unit (Prometheus: "use base units";
# counts and booleans are dimensionless).
DIMENSIONLESS_GAUGES = {
    "gridshift_jobs",
    "gridshift_jobs_deadline_at_risk",
    "gridshift_leader",
    "gridshift_signal_fresh",
    "gridshift_signal_provider_in_use",
}
# Every label and the values it can take are bounded by configuration, code or hardware.
BOUNDED_LABELS = {
    "region", "provider", "kind", "horizon", "lead", "state", "action", "cause", "basis",
    "adapter", "operation", "task", "reason", "outcome", "gpu", "uuid", "version", "le",
    "database",  # the agent's own store: one value per agent
}  # fmt: skip


def populated_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    metrics.declare_adapter("local")
    metrics.declare_provider("replay")
    metrics.declare_region("local")
    metrics.declare_task("tick")
    metrics.intensity.labels(region="local", provider="replay", kind="average").set(240)
    metrics.forecast_next.labels(region="local", lead="1h").set(250)
    metrics.forecast_min.labels(region="local", horizon="24h").set(180)
    metrics.signal_age.labels(region="local").set(60)
    metrics.signal_fresh.labels(region="local").set(1)
    metrics.signal_provider.labels(region="local", provider="replay").set(1)
    metrics.signal_errors.labels(provider="replay", reason="timeout").inc()
    metrics.signal_switches.labels(region="local").inc()
    metrics.decisions.labels(action="hold", cause="window").inc()
    metrics.job_wait.observe(120)
    metrics.tick_duration.observe(0.01)
    metrics.planner_duration.observe(0.001)
    metrics.last_tick.set_to_current_time()
    metrics.leader.labels(database="gridshift/public").set(1)
    gpus = GpuCollector(registry)
    gpus.update([
        PowerSample(
            index=0, uuid="GPU-0", at=datetime.now(UTC), power_w=300.0, energy_j=1e6,
            power_limit_w=500.0, default_limit_w=700.0, utilization_pct=80.0,
        )
    ])  # fmt: skip
    return registry


def exposition() -> str:
    return generate_latest(populated_registry()).decode()


def gridshift_families() -> list[tuple[str, str, set[str]]]:
    """(name, type, label names) of each family, as the client library sees them."""
    out = []
    for family in populated_registry().collect():
        if not family.name.startswith("gridshift_"):
            continue
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels)
        out.append((family.name, family.type, labels))
    return out


def test_names_carry_units_and_counters_end_in_total() -> None:
    text = exposition()
    families = gridshift_families()
    assert len(families) >= 25
    for name, kind, _ in families:
        assert re.fullmatch(r"gridshift_[a-z0-9_]+", name), name
        if kind == "counter":
            assert re.search(rf"^{name}_total(\{{| )", text, re.M), f"{name}: no _total sample"
        elif kind == "histogram":
            assert name.endswith("_seconds"), f"{name}: histograms here measure durations"
        elif kind == "info":
            assert re.search(rf"^{name}_info\{{", text, re.M), name
        elif kind == "gauge" and name not in DIMENSIONLESS_GAUGES:
            assert name.endswith(UNITS) or name.endswith("_timestamp_seconds"), (
                f"{name}: a gauge needs its unit in the name"
            )


def test_labels_are_bounded() -> None:
    for name, _, labels in gridshift_families():
        unbounded = labels - BOUNDED_LABELS
        assert not unbounded, f"{name} has labels of unbounded cardinality: {unbounded}"


def test_known_label_values_start_at_zero() -> None:
    """Series exist before the first event, so increase() in alerts counts the first one."""
    text = exposition()
    assert 'gridshift_adapter_errors_total{adapter="local",operation="start"} 0.0' in text
    assert 'gridshift_signal_fetches_total{outcome="error",provider="replay"} 0.0' in text
    assert 'gridshift_carbon_saved_grams_total{basis="measured"} 0.0' in text
    assert 'gridshift_job_placements_total{region="local"} 0.0' in text
    assert "process_resident_memory_bytes" in text


@pytest.mark.prometheus
def test_promtool_check_metrics() -> None:
    promtool = tool("promtool", "apt-get install prometheus")
    result = run([promtool, "check", "metrics"], input=exposition())
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


@pytest.mark.prometheus
def test_promtool_check_metrics_can_fail() -> None:
    promtool = tool("promtool", "apt-get install prometheus")
    bad = "# HELP gridshift_things Things\n# TYPE gridshift_things counter\ngridshift_things 1\n"
    result = run([promtool, "check", "metrics"], input=bad)
    assert "_total" in result.stdout + result.stderr


def test_every_metric_is_documented_for_operators() -> None:
    doc = (DEPLOY / "docs" / "operators.md").read_text()
    for name, kind, _ in gridshift_families():
        shown = name + {"counter": "_total", "info": "_info"}.get(kind, "")
        assert f"`{shown}`" in doc, f"{shown} is not in deploy/docs/operators.md"


@pytest.mark.parametrize(
    ("reason", "cause"),
    [
        (
            "latest start 2026-06-01 12:00Z has passed: starting to meet the deadline",
            "latest start",
        ),
        ("latest start 06-01 12:00Z is less than a slot away: starting", "latest start"),
        ("waiting for the window 2026-06-01 12:00Z-13:00Z (210 g/kWh)", "waiting for the window"),
        ("waiting until 2026-06-02 03:30Z: 180 g/kWh vs 320 now", "waiting until"),
        ("no signal for local: running now (fail open)", "no signal for local"),
        ("power: grid above 400 g/kWh", "power"),
        ("", "other"),
    ],
)
def test_decision_causes_drop_the_unbounded_detail(reason: str, cause: str) -> None:
    assert decision_cause(reason) == cause


def test_decision_causes_stay_few_over_a_day_of_reasons() -> None:
    reasons = [
        f"waiting until 2026-06-01 {h:02d}:{m:02d}Z: {v} g/kWh"
        for h in range(24)
        for m in (0, 30)
        for v in (120, 480)
    ]
    assert {decision_cause(r) for r in reasons} == {"waiting until"}
