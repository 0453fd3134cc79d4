"""The alert rules: valid for promtool, unit-tested with promtool, and complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.ops.tools import DEPLOY, RULES, RULES_TEST, run, tool

pytestmark = pytest.mark.prometheus

PROMTOOL_HINT = "apt-get install prometheus (Debian ships promtool with it)"


def test_promtool_check_rules() -> None:
    promtool = tool("promtool", PROMTOOL_HINT)
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = tool("promtool", PROMTOOL_HINT)
    result = run([promtool, "test", "rules", str(RULES_TEST)], cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: the same tool on a rule with a PromQL error."""
    promtool = tool("promtool", PROMTOOL_HINT)
    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum by (instance (up)"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(rules))
    result = run([promtool, "check", "rules", str(broken)])
    assert result.returncode != 0


def test_example_prometheus_config_is_valid() -> None:
    promtool = tool("promtool", PROMTOOL_HINT)
    result = run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.example.yml")]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_the_ops_team_asked_for_exist_and_are_tested() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    wanted = {
        "GridshiftSignalStale",
        "GridshiftAllProvidersFailing",
        "GridshiftAgentDown",
        "GridshiftJobDeadlineAtRisk",
        "GridshiftGpuCappedWithoutSignal",
        "GridshiftAdapterErrors",
    }
    assert wanted <= set(alerts), f"missing alerts: {sorted(wanted - set(alerts))}"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    tests = yaml.safe_load(RULES_TEST.read_text())
    tested = {
        case["alertname"]
        for t in tests["tests"]
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alerts) <= tested, (
        f"alerts never shown firing in a unit test: {set(alerts) - tested}"
    )
