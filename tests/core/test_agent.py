"""The agent in-process, on a fake clock, with the bundled replay trace and real local
processes."""

from datetime import timedelta

import pytest

from gridshift.scheduler.errors import ConfigError, ValidationError
from gridshift.scheduler.models import Job, JobSpec, JobState, new_job_id
from gridshift.scheduler.policy.window import StepSeries
from gridshift.scheduler.signals.replay import ReplayProvider
from tests.conftest import free_port

from .agent_helpers import START, make_agent, reconcile_until, wait_until


def spec(**kw):
    base = {"command": ["true"], "expected_duration_s": 3600}
    base.update(kw)
    return JobSpec(**base)


def test_submit_rejects_bad_input_and_changes_nothing(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    with pytest.raises(ValidationError, match="past"):
        agent.submit(spec(deadline=START - timedelta(hours=1)))
    with pytest.raises(ValidationError, match="only"):
        agent.submit(spec(expected_duration_s=7200), deadline_in_s=3600)
    with pytest.raises(ValidationError, match="engine"):
        agent.submit(spec(engine="nope"))
    with pytest.raises(ValidationError, match="region"):
        agent.submit(spec(allowed_regions=["mars"]))
    with pytest.raises(ValidationError, match=r"asks 1 GPU but this box gives jobs 0 \(local.gpus"):
        agent.submit(spec(gpus=1))  # it would run without one
    assert agent.store.list_jobs() == []


def test_job_waits_for_the_cleanest_window_then_runs_and_finishes(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    out = tmp_path / "out.txt"
    job = agent.submit(
        spec(command=[f"echo ran > {out}"], shell=True, expected_duration_s=2 * 3600),
        deadline_in_s=24 * 3600,
    )
    provider = agent.hub.providers["replay"]
    assert isinstance(provider, ReplayProvider)
    series = StepSeries(provider.forecast("", START, START + timedelta(hours=26)))

    def mean_at(t):
        return series.mean(t.timestamp(), t.timestamp() + 2 * 3600)

    if job.state == JobState.HELD:
        assert job.planned_start is not None and job.planned_start <= job.latest_start
        assert mean_at(job.planned_start) < mean_at(START)
        assert job.expected_saving_g and job.expected_saving_g > 0
    # step through the day as the agent would
    while agent.store.get_job(job.id).state == JobState.HELD:
        agent.clock.advance(timedelta(minutes=10))
        agent.refresh_signals()
        agent.tick()
    started = agent.store.get_job(job.id)
    assert started.state == JobState.RUNNING
    assert started.started_at <= started.latest_start
    # in a window no dirtier than running at once
    assert mean_at(started.started_at) <= mean_at(START)
    wait_until(lambda: out.exists())
    agent.clock.advance(60)
    done = reconcile_until(agent, job.id, JobState.SUCCEEDED)
    assert done.exit_code == 0 and done.emissions_g > 0
    text = agent.explain(job.id)["summary"]
    assert "succeeded" in text


def test_a_job_shorter_than_declared_saves_nothing_by_its_length_alone(tmp_path):
    # Declared 2 h, due now, done in two minutes: the saving compares the two minutes it
    # ran with the same two minutes at submission, not with two hours.
    agent = make_agent(tmp_path)
    agent.startup()
    job = agent.submit(spec(expected_duration_s=2 * 3600), deadline_in_s=2 * 3600)
    assert job.state == JobState.RUNNING and job.counterfactual_g
    estimate_g = job.counterfactual_g
    agent.clock.advance(120)
    done = reconcile_until(agent, job.id, JobState.SUCCEEDED)
    assert done.counterfactual_g == pytest.approx(estimate_g * done.run_s / 7200)
    assert done.run_s < 7200 / 10
    assert abs(done.counterfactual_g - done.emissions_g) < 0.05 * estimate_g
    # its latest start stays the one it was submitted with, not its deadline
    latest = agent.explain(job.id)["latest_start"]
    assert (
        latest == (done.deadline - timedelta(hours=2)).isoformat() == job.latest_start.isoformat()
    )


def test_a_start_recorded_before_a_crash_is_carried_out_once(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    marker = tmp_path / "count"
    job = agent.submit(
        spec(command=[f"echo x >> {marker}"], shell=True, expected_duration_s=60),
        deadline_in_s=120,  # latest start is now
    )
    assert agent.store.get_job(job.id).state == JobState.RUNNING
    # simulate a crash between the durable state change and the process start
    wait_until(lambda: marker.exists())
    agent.store.close()

    restarted = make_agent(tmp_path, clock=agent.clock)
    restarted.startup()
    restarted.reconcile()
    wait_until(
        lambda: (
            (restarted.reconcile(), restarted.store.get_job(job.id))[1].state == JobState.SUCCEEDED
        )
    )
    assert marker.read_text() == "x\n"


def test_recorded_running_but_never_started_is_started_by_reconcile(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    marker = tmp_path / "ran"
    now = agent.clock.now()
    s = spec(command=[f"touch {marker}"], shell=True, expected_duration_s=60)
    # the store holds the intent (running), as if the agent died before calling the engine
    job = Job(
        id=new_job_id(),
        spec=s,
        state=JobState.RUNNING,
        submitted_at=now,
        deadline=now + timedelta(hours=1),
        updated_at=now,
        engine_ref="x",
        started_at=now,
        running_since=now,
    )
    agent.store.add_job(job, "test")
    assert not (tmp_path / "runs" / job.id).exists()
    agent.reconcile()
    wait_until(lambda: marker.exists())
    reconcile_until(agent, job.id, JobState.SUCCEEDED)


def test_held_jobs_stay_held_across_restarts(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    held = []
    for hours in (12, 18, 24):
        job = agent.submit(spec(expected_duration_s=3600), deadline_in_s=hours * 3600)
        if job.state == JobState.HELD:
            held.append(job)
    assert held, "the trace should make at least one job wait on this day"
    agent.store.close()
    restarted = make_agent(tmp_path, clock=agent.clock)
    restarted.startup()
    for job in held:
        again = restarted.store.get_job(job.id)
        assert again.state == JobState.HELD
        assert again.planned_start == job.planned_start


def test_fails_open_when_every_signal_is_stale(tmp_path):
    agent = make_agent(tmp_path, staleness_s=3600)
    agent.startup()
    job = agent.submit(spec(expected_duration_s=3600), deadline_in_s=20 * 3600)
    # the signal is never refreshed again: after an hour it is stale
    agent.clock.advance(timedelta(hours=1, seconds=1))
    agent.tick()
    now_state = agent.store.get_job(job.id)
    assert now_state.state == JobState.RUNNING
    assert "fail open" in now_state.reason
    assert (
        agent.metrics.registry.get_sample_value("gridshift_signal_fresh", {"region": "local"}) == 0
    )


def test_cancel(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    job = agent.submit(spec(command=["sleep 30"], shell=True), deadline_in_s=3600 + 60)
    cancelled = agent.cancel(job.id)
    assert cancelled.state == JobState.CANCELLED
    with pytest.raises(ValidationError, match="already ended"):
        agent.cancel(job.id)
    agent.reconcile()
    assert agent.store.get_job(job.id).state == JobState.CANCELLED


def test_what_the_agent_learnt_of_its_forecasts_survives_a_restart(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    region = agent.settings.default_region
    for _ in range(14 * 4):  # 14 h of refreshes every 15 min: enough scored targets
        agent.clock.advance(timedelta(minutes=15))
        agent.refresh_signals()
    learnt = agent.hub.region_signal(region).forecast_error_g_per_kwh
    assert learnt is not None
    agent.store.close()

    restarted = make_agent(tmp_path, clock=agent.clock)
    assert restarted.hub.region_signal(region).forecast_error_g_per_kwh is None  # before startup
    restarted.startup()
    assert restarted.hub.region_signal(region).forecast_error_g_per_kwh == pytest.approx(learnt)


def test_unreadable_forecast_skill_in_the_store_is_relearnt_not_fatal(tmp_path):
    agent = make_agent(tmp_path)
    agent.store.set_meta("forecast_skill", "{not json")
    agent.startup()  # logs a warning, starts afresh
    assert agent.hub.region_signal(agent.settings.default_region).forecast_error_g_per_kwh is None
    agent.store.set_json("forecast_skill", {agent.settings.default_region: {"version": 99}})
    agent.startup()
    assert agent.hub.region_signal(agent.settings.default_region).forecast_error_g_per_kwh is None


def test_a_store_written_on_a_demo_clock_is_refused_by_a_real_agent(tmp_path):
    demo = make_agent(tmp_path, clock_speed=1440.0, clock_origin=START)
    demo.store.close()
    with pytest.raises(ConfigError, match="simulated clock and this one runs on a wall clock"):
        make_agent(tmp_path)
    # a demo agent reopens its own store; a real agent in its own folder starts
    make_agent(tmp_path, clock_speed=1440.0, clock_origin=START).store.close()
    real = make_agent(tmp_path / "real")
    real.store.close()
    with pytest.raises(ConfigError, match=r"remove .*real/gridshift\.db to start afresh"):
        make_agent(tmp_path / "real", clock_speed=60.0, clock_origin=START)


def test_the_values_measured_are_kept_across_a_restart_and_a_bad_copy_is_relearnt(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    region = agent.settings.default_region
    kept = agent.store.get_json("measured_history")
    assert kept[region]["intervals"]  # the value measured at start-up
    assert kept == agent.hub.history_state()
    agent.store.close()
    again = make_agent(tmp_path)
    again._restore_signals()
    assert again.hub.history_state() == kept
    again.store.set_meta("measured_history", "{not json")
    again._restore_signals()  # logs a warning, keeps what it has
    again.store.set_json("measured_history", {region: {"version": 99}})
    again._restore_signals()
    assert again.hub.history_state() == kept
    again.store.close()


def test_a_job_with_engine_options_ray_cannot_take_is_refused_at_submission(tmp_path):
    # Ray is not running: the check needs no cluster, and a refused job changes nothing.
    agent = make_agent(
        tmp_path,
        regions={
            "local": {"sources": [{"provider": "replay"}]},
            "gb": {"sources": [{"provider": "replay"}]},
        },
        ray={"regions": {"local": {"address": f"http://127.0.0.1:{free_port()}"}}},
    )
    base = {"engine": "ray", "command": ["true"], "expected_duration_s": 60}
    with pytest.raises(ValidationError, match="unknown Ray engine options colour"):
        agent.submit(JobSpec(**base, engine_options={"colour": "green"}), deadline_in_s=3600)
    with pytest.raises(ValidationError, match=r"engine_options.num_cpus must be a number >= 0"):
        agent.submit(JobSpec(**base, engine_options={"num_cpus": "two"}), deadline_in_s=3600)
    with pytest.raises(ValidationError, match="region 'gb' has no Ray cluster"):
        agent.submit(JobSpec(**base, allowed_regions=["gb"]), deadline_in_s=3600)
    assert agent.store.list_jobs() == []
    job = agent.submit(
        JobSpec(**base, engine_options={"num_cpus": 1, "resources": {"carbon_slot": 1}}),
        deadline_in_s=3600,
    )
    assert job.spec.engine == "ray"
