"""The command runner and the adapter's error handling, with stand-in Slurm binaries (no
Slurm needed): timeouts, an unreachable controller, a Slurm without --json, a missing
install. The real behaviour of each is checked against a real Slurm in the other files."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gridshift.adapters.slurm import SlurmAdapter, SlurmCli, SlurmCommandError, build
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import SlurmAdapterConfig, load_settings
from gridshift.scheduler.errors import AdapterError, EngineUnavailable, NotFound, ValidationError
from gridshift.scheduler.interfaces import EngineState
from gridshift.scheduler.models import Job, JobSpec

DATA = Path(__file__).parent / "data"


def fake_bin(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def make_adapter(bin_dir: Path, **overrides: object) -> SlurmAdapter:
    config = SlurmAdapterConfig(
        regions={"green": {"partition": "gpu-green"}, "brown": {"partition": "gpu-brown"}},
        bin_dir=str(bin_dir),
        timeout_s=1,
        **overrides,  # type: ignore[arg-type]
    )
    return SlurmAdapter(config, FakeClock(datetime(2026, 1, 1, tzinfo=UTC)))


def held_job() -> Job:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Job(
        id="j-held",
        spec=JobSpec(command=["true"], expected_duration_s=60, engine="slurm"),
        submitted_at=now,
        deadline=now + timedelta(hours=4),
        engine_ref="1",
        updated_at=now,
    )


def test_a_command_that_hangs_times_out_as_unavailable(tmp_path: Path) -> None:
    fake_bin(tmp_path, "squeue", "sleep 30")
    cli = SlurmCli(timeout_s=0.5, bin_dir=str(tmp_path))
    with pytest.raises(EngineUnavailable, match=r"did not answer within 0\.5 s"):
        cli.run(["squeue", "--json"])


def test_unreachable_controller_is_unavailable_and_not_asked_again_at_once(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    fake_bin(
        tmp_path,
        "scontrol",
        f"echo x >> {calls}; echo 'slurm_update error: Unable to contact slurm controller "
        "(connect failure)' >&2; exit 1",
    )
    cli = SlurmCli(timeout_s=5, bin_dir=str(tmp_path))
    with pytest.raises(EngineUnavailable, match="connect failure"):
        cli.run(["scontrol", "release", "7"])
    with pytest.raises(EngineUnavailable, match="connect failure"):
        cli.run(["scontrol", "release", "7"])
    assert calls.read_text().count("x") == 1


def test_a_refusal_is_a_command_error_that_knows_unknown_jobs(tmp_path: Path) -> None:
    fake_bin(tmp_path, "scancel", "echo 'scancel: error: Invalid job id specified' >&2; exit 1")
    cli = SlurmCli(timeout_s=5, bin_dir=str(tmp_path))
    with pytest.raises(SlurmCommandError) as caught:
        cli.run(["scancel", "99"])
    assert caught.value.unknown_job and caught.value.returncode == 1


def test_missing_slurm_client_says_what_to_install(tmp_path: Path) -> None:
    cli = SlurmCli(timeout_s=5, bin_dir=str(tmp_path / "nowhere"))
    with pytest.raises(AdapterError, match=r"slurm\.bin_dir"):
        cli.run(["squeue", "--json"])


def test_commands_run_in_utc_with_the_configured_slurm_conf(tmp_path: Path) -> None:
    fake_bin(tmp_path, "squeue", 'echo "$TZ $SLURM_CONF $SLURM_JOB_ID"')
    cli = SlurmCli(timeout_s=5, slurm_conf="/etc/slurm-b/slurm.conf", bin_dir=str(tmp_path))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_JOB_ID", "123")  # the agent's own job context must not leak
        mp.setenv("TZ", "Europe/Paris")
        assert cli.run(["squeue"]).split() == ["UTC", "/etc/slurm-b/slurm.conf"]


def test_a_slurm_without_json_falls_back_to_the_text_format(tmp_path: Path) -> None:
    text = (DATA / "squeue-22.05-text.txt").read_text()
    (tmp_path / "squeue.txt").write_text(text)
    fake_bin(
        tmp_path,
        "squeue",
        'case "$*" in *--json*) echo "squeue: unrecognized option \'--json\'" >&2; exit 1;; '
        f"*) cat {tmp_path / 'squeue.txt'};; esac",
    )
    fake_bin(tmp_path, "scontrol", f"cat {DATA / 'scontrol-show-job-22.05.txt'}")
    adapter = make_adapter(tmp_path)
    status = adapter.status(held_job())
    assert status.state is EngineState.HELD and status.region == "brown"
    by_ref = {s.ref: s for s in adapter.list_managed()}
    assert by_ref["1"].job_id == "j-held"
    assert by_ref["2"].adopt_spec is not None  # "gridshift:deadline=8h", running
    assert by_ref["2"].gpus == [0, 1]


def test_json_that_is_not_json_falls_back_too(tmp_path: Path) -> None:
    fake_bin(
        tmp_path,
        "squeue",
        f'case "$*" in *--json*) echo "not json";; *) cat {DATA / "squeue-22.05-text.txt"};; esac',
    )
    fake_bin(tmp_path, "scontrol", f"cat {DATA / 'scontrol-show-job-22.05.txt'}")
    adapter = make_adapter(tmp_path)
    assert adapter.status(held_job()).state is EngineState.HELD
    with pytest.raises(AdapterError, match="output: text"):
        make_adapter(tmp_path, output="json").status(held_job())


def test_controller_down_in_json_output_is_unavailable(tmp_path: Path) -> None:
    payload = json.loads((DATA / "squeue-22.05-v0.0.38.json").read_text())
    payload["jobs"] = []
    payload["errors"] = [{"description": "Failed while looking for jobs", "error_number": -1}]
    (tmp_path / "down.json").write_text(json.dumps(payload))
    fake_bin(tmp_path, "squeue", f"cat {tmp_path / 'down.json'}")
    adapter = make_adapter(tmp_path)
    with pytest.raises(EngineUnavailable):
        adapter.list_managed()
    with pytest.raises(EngineUnavailable):  # never taken for "the job is gone"
        adapter.status(held_job())


def test_actions_on_a_job_slurm_does_not_know(tmp_path: Path) -> None:
    fake_bin(tmp_path, "squeue", 'echo \'{"jobs": [], "errors": []}\'')
    disabled = "sacct: error: Slurm accounting storage is disabled"
    fake_bin(tmp_path, "sacct", f"echo '{disabled}' >&2; exit 1")
    adapter = make_adapter(tmp_path)
    job = held_job()
    assert adapter.status(job).state is EngineState.MISSING
    with pytest.raises(NotFound, match="submit it again"):
        adapter.release(job)
    adapter.cancel(job)  # nothing to cancel: a no-op


def test_build_from_settings() -> None:
    settings = load_settings(None)
    assert build(settings, FakeClock()) is None
    settings = load_settings(
        None, slurm={"regions": {"local": {"partition": "gpu"}}, "timeout_s": 7}
    )
    adapter = build(settings, FakeClock())
    assert isinstance(adapter, SlurmAdapter)
    assert adapter.default_region == "local" and adapter.cli.timeout_s == 7


def test_a_job_older_than_min_job_age_is_read_from_accounting(tmp_path: Path) -> None:
    fake_bin(tmp_path, "squeue", 'echo \'{"jobs": [], "errors": []}\'')
    fake_bin(
        tmp_path,
        "sacct",
        'echo "1|train|CANCELLED by 0|0:15|2026-01-01T00:00:00|2026-01-01T01:00:00|'
        '2026-01-01T01:30:00|gpu-green|gridshift:id=j-held;start=now"',
    )
    status = make_adapter(tmp_path).status(held_job())
    assert status.state is EngineState.CANCELLED and status.exit_code == 128 + 15
    assert status.region == "green"
    assert status.ended_at == datetime(2026, 1, 1, 1, 30, tzinfo=UTC)

    fake_bin(
        tmp_path,
        "sacct",
        'echo "1|train|COMPLETED|0:0|2026-01-01T00:00:00|2026-01-01T01:00:00|'
        '2026-01-01T01:30:00|gpu-brown|"',
    )
    status = make_adapter(tmp_path).status(held_job())
    assert status.state is EngineState.SUCCEEDED and status.exit_code == 0


def test_accounting_that_cannot_be_reached_is_not_taken_for_a_lost_job(tmp_path: Path) -> None:
    fake_bin(tmp_path, "squeue", 'echo \'{"jobs": [], "errors": []}\'')
    fake_bin(
        tmp_path,
        "sacct",
        "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1",
    )
    with pytest.raises(EngineUnavailable):
        make_adapter(tmp_path).status(held_job())


def test_bad_environment_names_are_refused_before_sbatch(tmp_path: Path) -> None:
    fake_bin(tmp_path, "squeue", 'echo \'{"jobs": [], "errors": []}\'')
    fake_bin(tmp_path, "sbatch", f"touch {tmp_path / 'called'}; echo 5")
    job = held_job().model_copy(update={"engine_ref": None})
    job.spec = job.spec.model_copy(update={"env": {"OK": "1", "BAD;rm -rf x": "2"}})
    with pytest.raises(ValidationError, match="environment names"):
        make_adapter(tmp_path).submit(job)
    assert not (tmp_path / "called").exists()
    job.spec = job.spec.model_copy(update={"env": {"OK": "1"}})
    assert make_adapter(tmp_path).submit(job) == "5"
    assert (tmp_path / "called").exists()
