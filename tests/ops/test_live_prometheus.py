"""A real Prometheus scrapes a real agent (replay signal, fake GPUs, local jobs, a fast clock);
every dashboard query and every alert rule is then evaluated by that Prometheus."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.ops.conftest import SEEDED_FORECAST_ERROR_G_PER_KWH, LiveStack
from tests.ops.tools import (
    HTTP_TIMEOUT_S,
    dashboard_queries,
    metric_names,
    rule_queries,
    run,
    substitute,
    tool,
    wait_until,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.nvml_fake, pytest.mark.slow]

_OFFSET_RE = re.compile(r"\s+offset\s+\d+[smhdwy]")


def job_state(live: LiveStack, name: str) -> str:
    job_id = live.jobs[name]["id"]
    resp = requests.get(f"{live.agent.url}/jobs/{job_id}", timeout=HTTP_TIMEOUT_S)
    state: str = resp.json()["state"]
    return state


def dashboard_failures(live: LiveStack, region: str) -> list[str]:
    prom = live.prometheus
    failures = []
    for q in dashboard_queries():
        expr = substitute(q.expr, region)
        try:
            result = prom.query(expr)
            if _OFFSET_RE.search(expr):
                # "The forecast made an hour ago" has no data in a Prometheus younger than an
                # hour: the same query without the offset must have data now.
                result = prom.query(_OFFSET_RE.sub("", expr))
        except AssertionError as exc:
            failures.append(f"{q.where}: rejected by Prometheus: {exc}\n    {expr}")
            continue
        if not result:
            failures.append(f"{q.where}: no data\n    {expr}")
    return failures


def test_urgent_job_runs_and_deferrable_job_is_held(live: LiveStack) -> None:
    wait_until("the urgent job to finish", lambda: job_state(live, "urgent") == "succeeded", 40)
    job_id = live.jobs["deferrable"]["id"]
    resp = requests.get(f"{live.agent.url}/jobs/{job_id}/explain", timeout=HTTP_TIMEOUT_S)
    events = resp.json()["events"]
    # Held for a cleaner window first. On the fast clock (ten minutes a second) that window
    # comes within minutes, so the job may since have run; it must not have started before
    # it was held.
    moves = [e for e in events if e["from_state"] is not None]
    assert moves and moves[0]["to_state"] == "held", events
    assert moves[0]["reason"].startswith("window "), moves[0]


@pytest.mark.parametrize("region", [".*", "local"])
def test_every_dashboard_query_returns_data(live: LiveStack, region: str) -> None:
    wait_until("the urgent job to finish", lambda: job_state(live, "urgent") == "succeeded", 40)
    values = live.prometheus.api(
        "label/region/values", **{"match[]": "gridshift_grid_carbon_intensity_grams_per_kwh"}
    )
    assert "local" in values, f"the region variable would offer {values}"
    failures: list[str] = []

    def all_have_data() -> bool:
        failures[:] = dashboard_failures(live, region)
        return not failures

    try:
        wait_until("every dashboard query to return data", all_have_data, 30, interval_s=2)
    except AssertionError:
        pytest.fail("dashboard queries without data:\n" + "\n".join(failures))


def test_forecast_error_learnt_by_an_earlier_run_is_exported_at_once(live: LiveStack) -> None:
    # The store held what an earlier run had learnt (30 g/kWh off); the agent reads it back
    # at start-up, and the replayed forecast, exact, only pulls the error down from there.
    name = "gridshift_grid_carbon_intensity_forecast_error_grams_per_kwh"
    lines = [
        line
        for line in live.agent.metrics_text().splitlines()
        if line.startswith(name + "{") and 'region="local"' in line
    ]
    assert lines, f"{name} is not exported for the region"
    error = float(lines[0].rsplit(" ", 1)[1])
    assert 0 < error <= SEEDED_FORECAST_ERROR_G_PER_KWH + 1e-9


def test_rule_queries_are_valid_and_name_scraped_metrics(live: LiveStack) -> None:
    prom = live.prometheus
    for q in rule_queries():
        prom.query(q.expr)  # raises if Prometheus rejects it
        for name in metric_names(q.expr):
            assert prom.query(f'count({{__name__="{name}"}})'), f"{q.where}: {name} not scraped"


def test_prometheus_evaluates_every_rule_without_error(live: LiveStack) -> None:
    prom = live.prometheus
    n_rules = len(rule_queries())

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        if len(rules) == n_rules and all(r["lastEvaluation"][:4] != "0001" for r in rules):
            return rules
        return []

    rules = wait_until("every rule to be evaluated", evaluated, 20)
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad, f"rules failing to evaluate: {bad}"


def test_stale_region_raises_the_signal_alert(live: LiveStack) -> None:
    """The `offline` region's provider fails on every call: the stale-signal condition holds
    for it (and only it), and Prometheus has the alert pending (its `for` is 15 minutes)."""
    prom = live.prometheus
    expr = next(q.expr for q in rule_queries() if q.where == "rule GridshiftSignalStale")
    stale = {s["metric"]["region"] for s in prom.query(expr)}
    assert stale == {"offline"}
    errors = prom.query('gridshift_signal_fetch_errors_total{provider="recorded"} > 0')
    assert errors, "the failing provider's errors are not counted"

    def pending() -> bool:
        alerts = prom.api("alerts")["alerts"]
        return any(
            a["labels"]["alertname"] == "GridshiftSignalStale"
            and a["labels"]["region"] == "offline"
            and a["state"] == "pending"
            for a in alerts
        )

    wait_until("GridshiftSignalStale to be pending for region offline", pending, 15)


def test_gpus_are_capped_while_the_grid_is_dirty(live: LiveStack) -> None:
    prom = live.prometheus
    capped = wait_until(
        "a GPU power cap",
        lambda: prom.query(
            "gridshift_gpu_power_limit_watts < gridshift_gpu_default_power_limit_watts"
        ),
        20,
    )
    assert {s["metric"]["gpu"] for s in capped} == {"0", "1"}
    written = live.nvml.read_back()
    assert float(written["gpu0.power_limit_mw"]) < 700_000, "the cap did not reach the device"


def test_promtool_check_metrics_on_the_agent(live: LiveStack) -> None:
    promtool = tool("promtool", "apt-get install prometheus")
    wait_until("the urgent job to finish", lambda: job_state(live, "urgent") == "succeeded", 40)
    text = live.agent.metrics_text()
    assert "gridshift_gpu_power_watts" in text and "gridshift_decisions_total" in text
    result = run([promtool, "check", "metrics"], input=text)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_agent_down_alert_condition_after_the_agent_stops(live: LiveStack) -> None:
    """Runs last in this module: it stops the agent."""
    prom = live.prometheus
    down = next(q.expr for q in rule_queries() if q.where == "rule GridshiftAgentDown")
    absent = next(q.expr for q in rule_queries() if q.where == "rule GridshiftAgentAbsent")
    assert prom.query(down) == []
    for job in live.jobs.values():
        requests.post(f"{live.agent.url}/jobs/{job['id']}/cancel", timeout=HTTP_TIMEOUT_S)
    assert live.agent.stop() == 0, live.agent.log()
    hit = wait_until("up == 0 for the stopped agent", lambda: prom.query(down), 15)
    assert hit[0]["metric"]["job"] == "gridshift"
    assert prom.query(absent) == [], "the target still exists; only AgentDown applies"
