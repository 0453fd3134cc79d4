"""Job traces for `gridshift simulate`: a file of jobs (as `gridshift list --json` prints
them) moved to the simulated period, and the generator's options."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pytest

from gridshift.scheduler.cli import main
from gridshift.scheduler.errors import ConfigError
from gridshift.scheduler.models import Job, JobSpec, JobState
from gridshift.scheduler.sim.jobs import load_jobs, scenario_jobs

START = datetime(2022, 1, 9, tzinfo=UTC)  # the simulated first day
HOUR = 3600.0


def _write_lines(path, items):
    path.write_text("\n".join(json.dumps(x) for x in items) + "\n", encoding="utf-8")
    return path


def test_a_job_file_moves_by_whole_days_and_keeps_each_jobs_terms(tmp_path):
    path = _write_lines(
        tmp_path / "jobs.jsonl",
        [
            # deadline in the spec
            {
                "id": "train",
                "submitted_at": "2025-03-03T09:00:00Z",
                "spec": {
                    "command": ["python", "train.py"],
                    "expected_duration_s": 7200,
                    "gpus": 2,
                    "deadline": "2025-03-04T06:00:00Z",
                },
            },
            # a delay allowance, submitted between slots, in another time zone
            {
                "submitted_at": "2025-03-04T18:20:00+01:00",
                "spec": {"command": ["x"], "expected_duration_s": 1800, "max_delay_s": 3600},
            },
            # no deadline at all: the agent's default delay (24 h)
            {
                "submitted_at": "2025-03-05T00:00:00Z",
                "spec": {"command": ["x"], "gpus": 1, "expected_duration_s": 3600},
            },
        ],
    )
    jobs, shift_d = load_jobs(path, START, ["us-ciso"], HOUR)
    assert shift_d == (START.date() - datetime(2025, 3, 3).date()).days
    shift = timedelta(days=shift_d)
    by_id = {j.id: j for j in jobs}
    assert set(by_id) == {"train", "job-00001", "job-00002"}
    train = by_id["train"]
    assert train.submitted_at == START + timedelta(hours=9)  # same time of day, on START
    assert train.deadline == datetime(2025, 3, 4, 6, tzinfo=UTC) + shift
    assert train.spec.gpus == 2 and train.spec.allowed_regions == ["us-ciso"]
    late = by_id["job-00001"]
    # 17:20Z moves to the next slot boundary; its deadline (17:20 + 0.5 h + 1 h) is kept
    assert late.submitted_at == datetime(2025, 3, 4, 18, tzinfo=UTC) + shift
    assert late.deadline == datetime(2025, 3, 4, 18, 50, tzinfo=UTC) + shift
    assert late.spec.max_delay_s is None and late.spec.deadline == late.deadline
    plain = by_id["job-00002"]
    assert plain.deadline == plain.submitted_at + timedelta(hours=25)
    assert [j.submitted_at for j in jobs] == sorted(j.submitted_at for j in jobs)


def test_a_tight_deadline_is_not_broken_by_the_slot_rounding(tmp_path):
    path = _write_lines(
        tmp_path / "jobs.jsonl",
        [
            {
                "submitted_at": "2025-03-03T09:40:00Z",
                "spec": {"command": ["x"], "expected_duration_s": 3600},
                "deadline": "2025-03-03T10:40:00Z",
            }
        ],
    )
    [job] = load_jobs(path, START, ["a"], HOUR)[0]
    assert job.submitted_at == START + timedelta(hours=10)
    assert job.deadline == START + timedelta(hours=11)  # no less than its duration


def test_the_listing_of_a_running_agent_replays_from_submission(tmp_path):
    # `gridshift list --json` prints jobs with their whole state; only the submission, the
    # spec, the deadline and the region it ran in are read.
    sub = datetime(2025, 6, 2, 14, tzinfo=UTC)
    spec = JobSpec(
        command=["python", "train.py"],
        expected_duration_s=4 * HOUR,
        gpus=4,
        interruptible=True,
        checkpoint_cost_s=300,
        min_run_s=HOUR,
        allowed_regions=["de", "no", "fr"],
    )
    done = Job(
        id="j-1",
        spec=spec,
        state=JobState.SUCCEEDED,
        submitted_at=sub,
        deadline=sub + timedelta(hours=20),
        region="no",
        started_at=sub + timedelta(hours=3),
        ended_at=sub + timedelta(hours=7),
        run_s=4 * HOUR,
        emissions_g=120.0,
        updated_at=sub + timedelta(hours=7),
    )
    path = tmp_path / "listing.json"
    path.write_text(json.dumps([done.model_dump(mode="json")], indent=2), encoding="utf-8")
    [job] = load_jobs(path, START, ["de", "no"], HOUR)[0]
    assert job.state == JobState.PENDING and job.run_s == 0 and job.started_at is None
    assert job.spec.allowed_regions == ["no", "de"]  # fr is not simulated; no, where it ran, first
    assert job.region == "no"
    assert job.deadline - job.submitted_at == timedelta(hours=20)
    assert job.spec.interruptible and job.spec.checkpoint_cost_s == 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not JSON or JSON Lines"),
        ("", "no jobs"),
        ("[1, 2]", "item 1: a job must be a JSON object"),
        ('{"spec": {"command": ["x"], "expected_duration_s": 60}}', "line 1: submitted_at missing"),
        (
            '{"submitted_at": "2025-01-01T00:00:00Z", "spec": {"command": ["x"], '
            '"expected_duration_s": 60, "gpus": -1}}',
            "line 1: gpus: Input should be greater than or equal to 0",
        ),
        (
            '{"submitted_at": "yesterday", "spec": {"command": ["x"], "expected_duration_s": 60}}',
            "line 1: submitted_at: Input should be a valid datetime",
        ),
        (
            '{"submitted_at": "2025-01-01T00:00:00", "spec": {"expected_duration_s": 60}}',
            "line 1: submitted_at: timestamp must carry a timezone",
        ),
        (
            '{"submitted_at": "2025-01-01T00:00:00Z", "deadline": "2025-01-01T05:00:00", '
            '"spec": {"expected_duration_s": 60}}',
            "line 1: deadline: timestamp must carry a timezone",
        ),
        (
            '{"submitted_at": "2025-01-01T00:00:00Z", "spec": {"command": ["x"], '
            '"expected_duration_s": 60, "allowed_regions": ["fr"]}}',
            "names none of the simulated regions (de)",
        ),
        (
            '{"id": "a", "submitted_at": "2025-01-01T00:00:00Z", "spec": {"command": ["x"], '
            '"expected_duration_s": 60}}\n'
            '{"id": "a", "submitted_at": "2025-01-01T01:00:00Z", "spec": {"command": ["x"], '
            '"expected_duration_s": 60}}',
            "line 2: job id a is given twice",
        ),
    ],
)
def test_a_bad_job_file_says_where(tmp_path, text, message):
    path = tmp_path / "jobs.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_jobs(path, START, ["de"], HOUR)
    assert message in str(err.value)


def test_a_hand_written_job_needs_no_command(tmp_path):
    # a replay runs no command, so a job trace written by hand may leave it out
    path = _write_lines(
        tmp_path / "jobs.jsonl",
        [{"submitted_at": "2025-01-01T10:00:00Z", "spec": {"expected_duration_s": 2 * HOUR}}],
    )
    [job], _ = load_jobs(path, START, ["de"], HOUR)
    assert job.spec.expected_duration_s == 2 * HOUR
    assert job.deadline - job.submitted_at == timedelta(hours=26)  # the default 24 h delay


def test_the_generator_takes_its_options_for_the_mixed_scenario_only():
    jobs = scenario_jobs(
        "mixed",
        START,
        3,
        ["a", "b"],
        HOUR,
        generator={"per_hour": 4.0, "gpu_mix": (8,), "interruptible_share": 1.0},
    )
    assert 200 < len(jobs) < 380  # Poisson, 4 an hour for 72 h
    assert {j.spec.gpus for j in jobs} == {8}
    assert all(j.spec.interruptible for j in jobs)
    default = scenario_jobs("mixed", START, 3, ["a", "b"], HOUR)
    assert len(default) < len(jobs) and len({j.spec.gpus for j in default}) > 1
    with pytest.raises(ValueError, match="apply to the 'mixed' scenario"):
        scenario_jobs("ml", START, 3, ["a"], HOUR, generator={"per_hour": 1.0})


def test_simulate_replays_a_job_file(tmp_path, capsys):
    path = _write_lines(
        tmp_path / "week.jsonl",
        [
            {
                "submitted_at": f"2025-03-0{3 + d}T{h:02d}:00:00Z",
                "spec": {
                    "command": ["x"],
                    "expected_duration_s": 3 * HOUR,
                    "gpus": 1,
                    "max_delay_s": 12 * HOUR,
                },
            }
            for d in range(3)
            for h in (9, 14)
        ],
    )
    out = tmp_path / "report"
    assert main(["simulate", "bundled", "--jobs", str(path), "--out", str(out), "--quiet"]) == 0
    text = (out / "report.txt").read_text()
    assert "week.jsonl (moved -1149 days), 6 jobs" in text
    assert sorted(p.name for p in out.glob("*.png")) == [
        "us-ciso_week_placements.png",
        "us-ciso_week_savings.png",
    ]
    assert "gridshift" in capsys.readouterr().out
    # one row per job and policy, adding up to the report's emissions
    with (out / "jobs.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    policies = {r["policy"] for r in rows}
    lines = [ln.split() for ln in text.splitlines()[2:] if ln[:6] != "oracle"]
    kg = {f[0]: float(f[1]) for f in lines}
    delay_h = {f[0]: float(f[-3]) for f in lines}  # ... wait h, delay h, missed, suspends
    assert policies == set(kg) and len(policies) == 8
    assert len(rows) == 6 * len(policies)
    run_now_g = 1000 * kg["run-now"]
    for name in policies:
        mine = [r for r in rows if r["policy"] == name]
        assert sum(float(r["emissions_g"]) for r in mine) == pytest.approx(1000 * kg[name], abs=10)
        saved = sum(float(r["saving_g"]) for r in mine)
        assert saved == pytest.approx(run_now_g - 1000 * kg[name], abs=10)
        # the delay of the finish includes the wait for the first start
        assert all(float(r["delay_h"]) >= float(r["wait_h"]) for r in mine)
        mean_delay = sum(float(r["delay_h"]) for r in mine) / len(mine)
        assert mean_delay == pytest.approx(delay_h[name], abs=0.01)
    gs = [r for r in rows if r["policy"] == "gridshift"]
    assert all(r["submitted"] <= r["first_start"] < r["end"] <= r["deadline"] for r in gs)
    assert all(r["missed"] == "0" for r in gs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "JOBS", "--scenario", "ml"], "--scenario: not with --jobs"),
        (["--jobs", "JOBS", "--days", "3"], "--days: not with --jobs"),
        (["--jobs", "MISSING"], "no such file"),
        (["--scenario", "ml", "--gpu-mix", "1,2"], "--gpu-mix: only with --scenario mixed"),
        (["--arrivals-per-hour", "3"], "--arrivals-per-hour: only with --scenario mixed"),
    ],
)
def test_simulate_refuses_options_that_do_not_go_together(tmp_path, args, message, capsys):
    jobs = _write_lines(
        tmp_path / "jobs.jsonl",
        [
            {
                "submitted_at": "2025-01-01T00:00:00Z",
                "spec": {"command": ["x"], "expected_duration_s": 60},
            }
        ],
    )
    args = [
        str(jobs) if a == "JOBS" else str(tmp_path / "none.jsonl") if a == "MISSING" else a
        for a in args
    ]
    assert main(["simulate", "bundled", *args, "--quiet"]) == 1
    assert message in capsys.readouterr().err


def test_a_job_file_never_starts_before_the_simulated_start(tmp_path):
    # a carbon trace that begins at 07:00: a job of 03:00 moves to 03:00 the day after
    path = _write_lines(
        tmp_path / "jobs.jsonl",
        [
            {
                "submitted_at": "2025-03-03T03:00:00Z",
                "spec": {"command": ["x"], "expected_duration_s": 60},
            }
        ],
    )
    start = START + timedelta(hours=7)
    [job], shift_d = load_jobs(path, start, ["a"], HOUR)
    assert job.submitted_at == START + timedelta(days=1, hours=3)
    assert shift_d == (START.date() - datetime(2025, 3, 3).date()).days + 1
