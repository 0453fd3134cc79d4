"""The agent builds the planner the configuration names; `gridshift simulate` runs."""

from __future__ import annotations

import pytest

from gridshift.scheduler.cli import main
from gridshift.scheduler.config import load_settings
from gridshift.scheduler.errors import ConfigError
from gridshift.scheduler.policy.planner import CarbonPlanner
from gridshift.scheduler.policy.window import WindowPlanner
from tests.core.agent_helpers import make_agent


@pytest.mark.parametrize(("name", "cls"), [("carbon", CarbonPlanner), ("window", WindowPlanner)])
def test_agent_uses_the_configured_planner(tmp_path, name, cls):
    agent = make_agent(tmp_path, planner=name)
    try:
        assert isinstance(agent.planner, cls)
    finally:
        agent.store.close()


def test_carbon_planner_is_the_default_and_typos_are_rejected():
    assert load_settings(None).planner == "carbon"
    with pytest.raises(ConfigError, match="planner"):
        load_settings(None, planner="greedy")


def test_simulate_command_writes_a_report(tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(
        [
            "simulate",
            "bundled",
            "--scenario",
            "nightly",
            "--days",
            "6",
            "--forecast",
            "noise10",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    text = (out / "report.txt").read_text()
    assert "gridshift" in text and "oracle (MILP, perfect)" in text
    assert sorted(p.name for p in out.glob("*.png")) == [
        "us-ciso_nightly_placements.png",
        "us-ciso_nightly_savings.png",
    ]
    assert "run-now" in capsys.readouterr().out


def test_simulate_unknown_trace_is_a_clear_error(capsys):
    assert main(["simulate", "nowhere", "--quiet"]) == 1
    assert "no trace 'nowhere'" in capsys.readouterr().err
