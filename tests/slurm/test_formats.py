"""Reading Slurm's output (no Slurm needed): real 22.05 captures and the newer layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gridshift.adapters.slurm import formats, marker
from gridshift.scheduler.errors import AdapterError, EngineUnavailable, ValidationError
from gridshift.scheduler.models import JobSpec

DATA = Path(__file__).parent / "data"


def _by_name(jobs: list[formats.SlurmJob]) -> dict[str, formats.SlurmJob]:
    return {j.name: j for j in jobs}


def test_squeue_json_22_05_capture() -> None:
    payload = json.loads((DATA / "squeue-22.05-v0.0.38.json").read_text())
    assert formats.json_layout(payload) == "openapi/v0.0.38"
    jobs = _by_name(formats.parse_json(payload))

    held = jobs["held"]
    assert held.pending and held.held and not held.ended
    assert held.partition == "gpu-brown"
    assert held.time_limit_s == 90 * 60
    assert held.gpus_requested == 1
    assert held.start_time is None
    assert marker.parse(held.comment, "gridshift:").job_id == "j-held"

    train = jobs["train"]
    assert train.state == "RUNNING" and not train.held
    assert train.gpu_indices == [0, 1]
    assert train.gpus_requested == 2
    assert train.time_limit_s is None  # UNLIMITED
    assert train.start_time is not None and train.start_time.tzinfo is UTC

    assert jobs["susp"].state == "SUSPENDED"
    assert jobs["susp"].gpu_indices == [2]
    assert jobs["susp"].time_limit_s == 26 * 3600

    assert jobs["fail"].state == "FAILED" and jobs["fail"].exit_code == 3  # raw status 768
    assert jobs["ok"].state == "COMPLETED" and jobs["ok"].exit_code == 0
    assert jobs["ok"].end_time is not None

    requeued = jobs["rq"]
    assert requeued.pending and requeued.held


def test_squeue_text_22_05_capture_matches_json() -> None:
    payload = json.loads((DATA / "squeue-22.05-v0.0.38.json").read_text())
    from_json = _by_name(formats.parse_json(payload))
    from_text = _by_name(formats.parse_text((DATA / "squeue-22.05-text.txt").read_text()))
    assert set(from_json) == set(from_text)
    for name, tj in from_text.items():
        jj = from_json[name]
        assert (tj.job_id, tj.state, tj.partition, tj.comment) == (
            jj.job_id,
            jj.state,
            jj.partition,
            jj.comment,
        ), name
        assert tj.held == jj.held, name
        assert tj.time_limit_s == jj.time_limit_s, name
        assert tj.gpus_requested == jj.gpus_requested, name
        assert tj.submit_time == jj.submit_time, name
        if not tj.pending:
            assert tj.start_time == jj.start_time, name


def test_scontrol_show_job_gives_gpu_indices_and_exit_codes() -> None:
    shown = formats.parse_show_job((DATA / "scontrol-show-job-22.05.txt").read_text())
    payload = json.loads((DATA / "squeue-22.05-v0.0.38.json").read_text())
    for job in formats.parse_json(payload):
        assert shown[job.job_id].gpu_indices == job.gpu_indices, job.name
        if job.ended:
            assert shown[job.job_id].exit_code == job.exit_code, job.name


# The layout of Slurm 23.11+ (OpenAPI v0.0.40 and later): state flags as lists, numbers
# wrapped in {"set", "infinite", "number"}, exit codes as objects, gres/gpu in TRES.
NEW_LAYOUT = {
    "meta": {"plugin": {"type": "openapi/slurmctld", "name": "Slurm OpenAPI slurmctld"}},
    "errors": [],
    "warnings": [],
    "jobs": [
        {
            "job_id": 41,
            "name": "held",
            "job_state": ["PENDING"],
            "state_reason": "JobHeldUser",
            "partition": "gpu-brown",
            "comment": "gridshift:id=j-1;start=2026-01-01T03:00:00Z",
            "time_limit": {"set": True, "infinite": False, "number": 120},
            "submit_time": {"set": True, "infinite": False, "number": 1767225600},
            "start_time": {"set": True, "infinite": False, "number": 0},
            "end_time": {"set": True, "infinite": False, "number": 0},
            "exit_code": {
                "status": ["PENDING"],
                "return_code": {"set": False, "infinite": False, "number": 0},
            },
            "tres_per_node": "gres/gpu:h100:2",
            "gres_detail": [],
        },
        {
            "job_id": 42,
            "name": "run",
            "job_state": ["RUNNING"],
            "state_reason": "None",
            "partition": "gpu-green",
            "comment": "",
            "time_limit": {"set": False, "infinite": True, "number": 0},
            "submit_time": {"set": True, "infinite": False, "number": 1767225600},
            "start_time": {"set": True, "infinite": False, "number": 1767225660},
            "tres_per_node": "gres/gpu:1",
            "gres_detail": ["gpu:h100:1(IDX:3)"],
        },
        {
            "job_id": 43,
            "name": "rq",
            "job_state": ["PENDING", "REQUEUE_HOLD"],
            "state_reason": "None",
            "partition": "gpu-green",
            "comment": "",
        },
        {
            "job_id": 44,
            "name": "bad",
            "job_state": ["FAILED"],
            "state_reason": "NonZeroExitCode",
            "partition": "gpu-green",
            "exit_code": {
                "status": ["ERROR"],
                "return_code": {"set": True, "infinite": False, "number": 7},
            },
            "end_time": {"set": True, "infinite": False, "number": 1767229200},
        },
    ],
}


def test_squeue_json_newer_layout() -> None:
    jobs = _by_name(formats.parse_json(NEW_LAYOUT))
    assert jobs["held"].held and jobs["held"].time_limit_s == 7200
    assert jobs["held"].gpus_requested == 2
    assert jobs["held"].submit_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert jobs["run"].state == "RUNNING" and jobs["run"].gpu_indices == [3]
    assert jobs["run"].time_limit_s is None
    assert jobs["rq"].held and jobs["rq"].pending
    assert jobs["bad"].exit_code == 7 and jobs["bad"].ended


def test_squeue_json_errors_are_reported() -> None:
    with pytest.raises(EngineUnavailable, match="Failed while looking for jobs"):
        failed = {"description": "Failed while looking for jobs", "source": "slurm_load_jobs"}
        formats.parse_json({"jobs": [], "errors": [failed]})
    with pytest.raises(AdapterError, match="output: text"):
        formats.parse_json({"meta": {}})


@pytest.mark.parametrize(
    ("text", "gpus"),
    [
        ("gres:gpu:2", 2),
        ("gres/gpu:a100:4", 4),
        ("gres:gpu", 1),
        ("gres:gpu:1,gres:license:3", 1),
        ("gres:nic:2", 0),
        ("", 0),
    ],
)
def test_gpus_from_tres(text: str, gpus: int) -> None:
    assert formats.gpus_from_tres(text) == gpus


def test_gpu_indices_and_time_limits() -> None:
    assert formats.gpu_indices(["gpu:4(IDX:0-1,3,5-6)"]) == [0, 1, 3, 5, 6]
    assert formats.gpu_indices("Nodes=n1 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:2)") == [2]
    assert formats.gpu_indices(["gpu(IDX:N/A)"]) == []
    assert formats.parse_time_limit_s("UNLIMITED") is None
    assert formats.parse_time_limit_s("30") == 1800
    assert formats.parse_time_limit_s("1:30:00") == 5400
    assert formats.parse_time_limit_s("2-00:00:00") == 172800
    assert formats.parse_time_limit_s("1-12") == 129600
    assert formats.strip_gres_sockets("gpu:4(S:0-1),gpu:a100:2(S:0)") == "gpu:4,gpu:a100:2"
    assert formats.parse_exit_code("0:9") == 137 and formats.parse_exit_code("2:0") == 2


def test_text_line_with_separator_in_comment() -> None:
    line = (
        "7|n|PENDING|JobHeldUser|gpu-green|alice|10:00|2026-01-01T00:00:00|N/A|N/A|N/A|"
        "note|with|bars gridshift:deadline=2h"
    )
    (job,) = formats.parse_text(line)
    assert job.comment == "note|with|bars gridshift:deadline=2h"
    with pytest.raises(AdapterError, match="cannot read"):
        formats.parse_text("7|n|PENDING")


# ----------------------------------------------------------------------------- the marker


def test_marker_round_trip_keeps_user_text_and_keys() -> None:
    parsed = marker.parse("nightly run gridshift:deadline=8h;regions=green,brown", "gridshift:")
    assert parsed.present and parsed.before == "nightly run "
    assert parsed.fields == {"deadline": "8h", "regions": "green,brown"}
    text = marker.render(parsed, "gridshift:", id="j-1", start="2026-01-01T00:00:00Z")
    assert text == (
        "nightly run gridshift:deadline=8h;regions=green,brown;id=j-1;start=2026-01-01T00:00:00Z"
    )
    again = marker.parse(text, "gridshift:")
    assert marker.render(again, "gridshift:", start=None) == (
        "nightly run gridshift:deadline=8h;regions=green,brown;id=j-1"
    )
    assert not marker.parse("no marker here", "gridshift:").present


def test_adopt_spec_relative_deadline_counts_from_submission() -> None:
    spec = marker.adopt_spec(
        {"deadline": "8h", "interruptible": "yes"},
        name="train",
        slurm_job_id="12",
        time_limit_s=3600,
        default_duration_s=999,
        gpus=2,
        submitted_age_s=600,
        current_region="green",
    )
    assert spec["expected_duration_s"] == 3600
    assert spec["max_delay_s"] == 8 * 3600 - 3600 - 600
    assert spec["interruptible"] is True and spec["gpus"] == 2
    assert spec["allowed_regions"] == ["green"]
    JobSpec(**spec)  # the agent builds a JobSpec from it


def test_adopt_spec_absolute_deadline_duration_and_regions() -> None:
    spec = marker.adopt_spec(
        {"deadline": "2026-05-01T06:00Z", "duration": "2h", "regions": "any"},
        name="",
        slurm_job_id="13",
        time_limit_s=None,
        default_duration_s=999,
        gpus=0,
        submitted_age_s=0,
        current_region="green",
    )
    assert spec["deadline"] == datetime(2026, 5, 1, 6, tzinfo=UTC)
    assert spec["expected_duration_s"] == 7200 and "allowed_regions" not in spec
    assert spec["name"] == "slurm-13"
    JobSpec(**spec)


@pytest.mark.parametrize(
    "fields",
    [
        {"deadline": "soon"},
        {"deadline": "8h", "max_delay": "1h"},
        {"interruptible": "maybe"},
        {"duration": "long"},
        {"deadline": "2026-13-45T00:00Z"},
    ],
)
def test_adopt_spec_rejects_bad_markers(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        marker.adopt_spec(
            fields,
            name="x",
            slurm_job_id="1",
            time_limit_s=60,
            default_duration_s=60,
            gpus=0,
            submitted_age_s=0,
            current_region=None,
        )
