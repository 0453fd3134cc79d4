"""The agent driving the Kubernetes adapter (kmock's API server, the Job controller played
by `JobController`): a deferrable job waits as a suspended Job until its clean window, is
released then, and its outcome and exit code come back through reconcile."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from gridshift.adapters.kubernetes import KubernetesAdapter
from gridshift.scheduler.agent import Agent
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import load_settings
from gridshift.scheduler.errors import ValidationError
from gridshift.scheduler.models import JobSpec, JobState
from tests.conftest import write_trace

from .conftest import ApiServer, JobController

START = datetime(2026, 3, 4, 0, 0, tzinfo=UTC)


@pytest.fixture
def agent(api_server: ApiServer, tmp_path: Path) -> Iterator[Agent]:
    # dirty until 05:00, clean until 11:00, then middling
    trace = write_trace(tmp_path / "trace.csv", START, [800] * 5 + [100] * 6, 400)
    settings = load_settings(
        None,
        state_dir=tmp_path / "state",
        providers={"replay": {"type": "replay"}},
        regions={"eu": {"sources": [{"provider": "replay", "location": str(trace)}]}},
        default_region="eu",
        kubernetes={
            "regions": {"eu": {"api_url": api_server.url, "namespace": "ml"}},
            "image": "registry.example/train:1",
        },
    )
    agent = Agent.build(settings, clock=FakeClock(START), registry=CollectorRegistry())
    assert isinstance(agent.adapters["kubernetes"], KubernetesAdapter)
    agent.startup()
    yield agent
    agent.stop()


def step(agent: Agent, minutes: float) -> None:
    assert isinstance(agent.clock, FakeClock)
    agent.clock.advance(timedelta(minutes=minutes))
    agent.refresh_signals()
    agent.reconcile()
    agent.tick()


def test_held_as_a_suspended_job_then_released_and_finished(
    agent: Agent, api_server: ApiServer
) -> None:
    controller = JobController(api_server, "ml")
    spec = JobSpec(engine="kubernetes", command=["python", "train.py"], expected_duration_s=3600)
    job = agent.submit(spec, deadline_in_s=12 * 3600)
    name = f"gridshift-{job.id}"
    plan = job.planned_start
    assert job.state == JobState.HELD and plan is not None
    assert START + timedelta(hours=5) <= plan <= START + timedelta(hours=10)
    created = api_server.job("ml", name)
    assert created is not None and created["spec"]["suspend"] is True
    controller.sync()
    assert api_server.pods("ml", name) == []

    while agent.store.get_job(job.id).state == JobState.HELD:
        controller.sync()
        step(agent, 30)
    started = agent.store.get_job(job.id)
    assert started.state == JobState.RUNNING and started.started_at is not None
    assert START + timedelta(hours=5) <= started.started_at <= START + timedelta(hours=10)
    assert api_server.job("ml", name)["spec"]["suspend"] is False
    controller.sync()
    step(agent, 10)
    assert agent.store.get_job(job.id).state == JobState.RUNNING
    controller.finish(name, 0)
    step(agent, 10)
    done = agent.store.get_job(job.id)
    assert done.state == JobState.SUCCEEDED and done.exit_code == 0

    failing = agent.submit(
        JobSpec(engine="kubernetes", command=["false"], expected_duration_s=600),
        deadline_in_s=1200,  # no time to wait: starts now
    )
    assert failing.state == JobState.RUNNING
    controller.sync()
    controller.finish(f"gridshift-{failing.id}", 1)
    step(agent, 1)
    failed = agent.store.get_job(failing.id)
    assert failed.state == JobState.FAILED and failed.exit_code == 1
    assert "BackoffLimitExceeded" in failed.reason


def test_a_job_kubernetes_cannot_run_is_refused_at_submission(agent: Agent) -> None:
    bad = JobSpec(
        engine="kubernetes", command=["true"], expected_duration_s=60,
        engine_options={"image": "x", "privileged": True},
    )  # fmt: skip
    with pytest.raises(ValidationError, match="unknown Kubernetes engine options privileged"):
        agent.submit(bad, deadline_in_s=3600)
    assert agent.store.list_jobs() == []


def native_job(name: str, *, suspend: bool = True, **annotations: str) -> dict[str, object]:
    """A Job as a user writes it for `kubectl apply`, opting in to gridshift."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"gridshift.io/opt-in": "true"},
            "annotations": {
                f"gridshift.io/{k.replace('_', '-')}": v for k, v in annotations.items()
            },
        },
        "spec": {
            "suspend": suspend,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "train", "image": "registry.example/bert:1",
                        "command": ["python", "train.py"],
                        "resources": {"limits": {"nvidia.com/gpu": 2}},
                    }],
                }
            },
        },
    }  # fmt: skip


def test_a_job_created_with_kubectl_that_opts_in_is_adopted_planned_and_released(
    agent: Agent, api_server: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    controller = JobController(api_server, "ml")
    url = f"{api_server.url}/apis/batch/v1/namespaces/ml/jobs"
    for body in (
        native_job("train-bert", deadline="12h", duration="1h"),
        native_job("not-suspended", deadline="12h", suspend=False),  # it starts at once
        native_job("unreadable", deadline="soon"),
    ):
        requests.post(url, json=body, timeout=5).raise_for_status()

    agent.reconcile()
    adopted = agent.store.find_by_engine_ref("kubernetes", "ml/train-bert")
    assert adopted is not None
    assert adopted.spec.gpus == 2 and adopted.spec.expected_duration_s == 3600
    assert adopted.spec.allowed_regions == ["eu"]
    assert agent.store.find_by_engine_ref("kubernetes", "ml/not-suspended") is None
    assert agent.store.find_by_engine_ref("kubernetes", "ml/unreadable") is None
    warnings = [r.getMessage() for r in caplog.records if "opts in to gridshift" in r.getMessage()]
    assert any("ml/not-suspended" in w and "spec.suspend: true" in w for w in warnings)
    assert any("ml/unreadable" in w and "gridshift.io/deadline" in w for w in warnings)
    agent.tick()
    job = agent.store.get_job(adopted.id)
    assert job.state == JobState.HELD and job.planned_start is not None
    assert START + timedelta(hours=5) <= job.planned_start <= START + timedelta(hours=10)
    agent.reconcile()  # seen again: not adopted twice
    assert [j.id for j in agent.store.list_jobs() if j.engine_ref == "ml/train-bert"] == [job.id]

    while agent.store.get_job(job.id).state == JobState.HELD:
        assert api_server.job("ml", "train-bert")["spec"]["suspend"] is True
        controller.sync()
        step(agent, 30)
    released = api_server.job("ml", "train-bert")
    assert released["spec"]["suspend"] is False
    assert released["metadata"]["labels"]["gridshift.io/job-id"] == job.id
    controller.sync()
    step(agent, 10)
    assert agent.store.get_job(job.id).state == JobState.RUNNING
    controller.finish("train-bert", 0)
    step(agent, 10)
    assert agent.store.get_job(job.id).state == JobState.SUCCEEDED
