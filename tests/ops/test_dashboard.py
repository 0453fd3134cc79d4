"""The Grafana dashboard: importable JSON, a region variable, a sane layout, and queries that
only name metrics the agent exports. (Whether every query returns data from a real agent is
checked against a real Prometheus in test_live_prometheus.py.)"""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry

from gridshift.scheduler.metrics import AgentMetrics
from gridshift.scheduler.telemetry.metrics import GpuCollector
from tests.ops.tools import (
    CHART,
    DASHBOARD,
    RULES,
    dashboard,
    dashboard_queries,
    iter_panels,
    metric_names,
    rule_queries,
)


def exported_names() -> set[str]:
    """Every sample name the agent's registry can expose (Prometheus adds `up` itself)."""
    registry = CollectorRegistry()
    AgentMetrics(registry)
    GpuCollector(registry)
    names = {"up"}
    for family in registry.collect():
        base = family.name
        if family.type == "counter":
            names.add(base + "_total")
        elif family.type == "histogram":
            names |= {base + "_bucket", base + "_sum", base + "_count"}
        elif family.type == "info":
            names.add(base + "_info")
        else:
            names.add(base)
    return names


def test_dashboard_is_importable_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] == "gridshift"
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"]), "Grafana uids are at most 40 chars"
    assert board.get("id") is None, "an exported dashboard must not carry a database id"
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["timezone"] == "utc"
    assert board["panels"], "no panels"


def test_datasource_and_region_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    region = variables["region"]
    assert region["type"] == "query"
    query = region["query"]["query"] if isinstance(region["query"], dict) else region["query"]
    assert query == "label_values(gridshift_grid_carbon_intensity_grams_per_kwh, region)"
    assert region["multi"] and region["includeAll"] and region["allValue"] == ".*"


def test_every_query_uses_the_datasource_variable() -> None:
    for panel in iter_panels(dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_layout_has_unique_ids_and_no_overlap() -> None:
    panels = list(iter_panels(dashboard()))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{p['title']!r} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_region_metrics_are_filtered_by_the_region_variable() -> None:
    regional = {
        "gridshift_grid_carbon_intensity_grams_per_kwh",
        "gridshift_grid_carbon_intensity_forecast_grams_per_kwh",
        "gridshift_grid_carbon_intensity_forecast_min_grams_per_kwh",
        "gridshift_signal_age_seconds",
        "gridshift_job_placements_total",
    }
    for q in dashboard_queries():
        for name in metric_names(q.expr) & regional:
            assert re.search(re.escape(name) + r'\{[^}]*region=~"\$region"', q.expr), (
                f"{q.where}: {name} is not filtered by $region"
            )


def test_dashboard_covers_the_ops_view() -> None:
    used = set().union(*(metric_names(q.expr) for q in dashboard_queries()))
    wanted = {
        # grid intensity and forecast per region
        "gridshift_grid_carbon_intensity_grams_per_kwh",
        "gridshift_grid_carbon_intensity_forecast_grams_per_kwh",
        "gridshift_signal_age_seconds",
        "gridshift_signal_provider_in_use",
        # GPU power and caps
        "gridshift_gpu_power_watts",
        "gridshift_gpu_power_limit_watts",
        "gridshift_gpu_default_power_limit_watts",
        # jobs held/running/suspended, how long they wait, placements, decisions
        "gridshift_jobs",
        "gridshift_job_wait_seconds_bucket",
        "gridshift_job_placements_total",
        "gridshift_decisions_total",
        # grams emitted and saved
        "gridshift_job_emissions_grams_total",
        "gridshift_carbon_saved_grams_total",
        # the agent itself
        "up",
        "gridshift_planner_duration_seconds_bucket",
        "gridshift_adapter_errors_total",
        "gridshift_last_tick_timestamp_seconds",
    }
    assert wanted <= used, f"not on the dashboard: {sorted(wanted - used)}"
    states = "".join(q.expr for q in dashboard_queries() if "gridshift_jobs{" in q.expr)
    for state in ("held", "running", "suspended"):
        assert state in states


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_queries_name_only_exported_metrics(source: str) -> None:
    queries = dashboard_queries() if source == "dashboard" else rule_queries()
    exported = exported_names()
    for q in queries:
        names = metric_names(q.expr)
        assert names, f"{q.where}: no metric found in {q.expr!r}"
        missing = {n for n in names if n not in exported and not n.startswith("process_")}
        assert not missing, f"{q.where} uses metrics the agent does not export: {sorted(missing)}"


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.9, sum by (le) (increase(gridshift_job_wait_seconds_bucket[6h])))"
        " / on (instance) group_left () max by (region, instance) "
        '(gridshift_signal_fresh{region=~"$region", job="x"} offset 1h) > 1e3'
    )
    assert metric_names(expr) == {"gridshift_job_wait_seconds_bucket", "gridshift_signal_fresh"}


def test_chart_ships_the_same_dashboard_and_rules() -> None:
    assert (CHART / "files" / "gridshift.json").read_bytes() == DASHBOARD.read_bytes()
    assert (CHART / "files" / "gridshift-alerts.yml").read_bytes() == RULES.read_bytes()
