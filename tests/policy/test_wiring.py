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


def test_the_carbon_planner_takes_its_settings(tmp_path):
    agent = make_agent(
        tmp_path,
        planner_slot_s=900,
        planner_exact_max_jobs=0,
        planner_repair_max_jobs=50,
        planner_straight_relocatable=False,
    )
    try:
        assert isinstance(agent.planner, CarbonPlanner)
        assert agent.planner.config.slot_s == 900
        assert agent.planner.config.exact_max_jobs == 0
        assert agent.planner.config.repair_max_jobs == 50
        assert agent.planner.config.straight_relocatable is False
    finally:
        agent.store.close()
    with pytest.raises(ConfigError, match="planner_exact_max_jobs"):
        load_settings(None, planner_exact_max_jobs=-1)


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


def test_simulate_unknown_trace_is_a_clear_error(tmp_path, capsys):
    assert main(["simulate", "nowhere", "--quiet"]) == 1
    assert "no trace 'nowhere'" in capsys.readouterr().err
    missing = tmp_path / "nope.csv"
    assert main(["simulate", str(missing), "--quiet"]) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err


def test_simulate_says_why_one_day_holds_no_nightly_job(capsys):
    assert main(["simulate", "bundled", "--days", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "no jobs in that period" in err and "17:00 the evening before" in err


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--capacity", "-3", "--capacity: -3 must be at least 1"),
        ("--days", "0", "--days: 0 must be at least 1"),
        ("--slot-s", "0", "--slot-s: 0 must be at least 60"),
        ("--slot-s", "nan", "--slot-s: nan must be at least 60"),
        ("--start-day", "-1", "--start-day: -1 must be at least 0"),
        ("--days", "two", "--days: 'two' is not a whole number"),
        ("--days", "2.5", "--days: '2.5' is not a whole number"),
        ("--mean-duration-h", "long", "--mean-duration-h: 'long' is not a number"),
        # the 'mixed' scenario's generator
        ("--gpu-mix", "1,x", "'1,x': GPU counts separated by commas"),
        ("--gpu-mix", "2,-1", "GPU counts cannot be negative"),
        ("--interruptible-share", "1.5", "1.5 must be between 0 and 1"),
        ("--arrivals-per-hour", "0", "0 must be at least 0.001"),
        ("--mean-duration-h", "-2", "-2 must be at least 0.01"),
    ],
)
def test_simulate_refuses_bad_option_values(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "bundled", "--scenario", "mixed", option, value, "--quiet"])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_simulate_names_a_missing_data_dir(tmp_path, capsys):
    missing = tmp_path / "traces"
    assert main(["simulate", "de", "--data-dir", str(missing), "--quiet"]) == 1
    assert f"--data-dir {missing}: no such folder" in capsys.readouterr().err


def test_simulate_relocates_between_regions_with_capacity(shared_carbon, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["simulate", "de", "no", "--data-dir", str(shared_carbon), "--scenario", "ml"]
    args += ["--days", "2", "--capacity", "32", "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = (out / "report.txt").read_text()
    assert "32 GPUs per region" in text and "threshold de " in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    # NO's hydro is far cleaner than DE: gridshift moves jobs there, the baselines keep
    # half of them at home; nobody misses a deadline
    assert float(rows["gridshift"][2]) > float(rows["wait-awhile"][2]) + 10
    assert rows["gridshift"][-2] == "0"  # missed (then suspends)
    assert (out / "de-no_ml_placements.png").is_file()
    capsys.readouterr()


def test_simulate_refuses_regions_of_different_periods(shared_carbon, capsys):
    args = ["simulate", "de", "us-ciso", "--data-dir", str(shared_carbon), "--quiet"]
    assert main(args) == 1
    assert "traces of the same period" in capsys.readouterr().err


def test_simulate_says_when_no_schedule_can_meet_every_deadline(shared_carbon, capsys):
    args = ["simulate", "de", "no", "--data-dir", str(shared_carbon), "--scenario", "ml"]
    assert main([*args, "--days", "2", "--capacity", "8", "--quiet"]) == 0
    assert "no oracle: the oracle found no feasible schedule" in capsys.readouterr().out


def test_simulate_reports_the_online_optimum_beside_the_oracle(shared_carbon, capsys):
    args = ["simulate", "de", "no", "--data-dir", str(shared_carbon), "--scenario", "ml"]
    args += ["--days", "2", "--policies", "gridshift", "--quiet", "--online-optimum"]
    assert main([*args, "--capacity", "24"]) == 0
    text = capsys.readouterr().out
    kg = {
        line[:28].strip(): float(line[28:41])
        for line in text.splitlines()[2:]
        if line[28:41].strip().replace(".", "").isdigit()
    }
    # knowing every job in advance can only help; no online plan beats the oracle
    assert kg["oracle (MILP, perfect)"] <= kg["online optimum (MILP)"] + 1e-6
    assert kg["online optimum (MILP)"] < kg["run-now"]
    assert "jobs to come unknown" in text
    # with fewer GPUs, the starts made without knowing the later jobs leave some of them
    # no room before their deadline (the oracle, knowing them, still finds a schedule)
    assert main([*args, "--capacity", "20"]) == 0
    text = capsys.readouterr().out
    assert "oracle (MILP, perfect)" in text
    assert "no online optimum: the online optimum has no schedule at slot" in text
