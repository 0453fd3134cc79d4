"""The Kubernetes adapter against an in-memory API server (kmock) with the Job controller's
effects played by `JobController`: Jobs are created suspended, released, paused and
resumed with `spec.suspend`, cancelled, moved between clusters, and their outcomes read
back with exit codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from gridshift.adapters.kubernetes import KubernetesAdapter
from gridshift.scheduler.clock import FakeClock
from gridshift.scheduler.config import KubernetesAdapterConfig
from gridshift.scheduler.errors import (
    AdapterError,
    Conflict,
    EngineUnavailable,
    NotFound,
    ValidationError,
)
from gridshift.scheduler.interfaces import (
    Adapter,
    ChecksSpecs,
    EngineState,
    Relocatable,
    Suspendable,
)
from gridshift.scheduler.models import Job, JobSpec, JobState, new_job_id
from tests.conftest import free_port

from .conftest import ApiServer, JobController

NOW = datetime(2026, 3, 4, tzinfo=UTC)


def make_adapter(api: ApiServer, **regions: Any) -> KubernetesAdapter:
    config = KubernetesAdapterConfig(
        regions=regions or {"east": {"api_url": api.url, "namespace": "ml"}},
        image="busybox:1.36",
    )
    return KubernetesAdapter(config, FakeClock(NOW))


def make_job(command: str = "sleep 600", region: str | None = None, **kw: Any) -> Job:
    spec = JobSpec(
        engine="kubernetes", command=[command], shell=True, expected_duration_s=600, **kw
    )
    return Job(
        id=new_job_id(),
        spec=spec,
        submitted_at=NOW,
        deadline=NOW + timedelta(hours=2),
        updated_at=NOW,
        region=region,
    )


def state(adapter: KubernetesAdapter, job: Job) -> EngineState:
    return adapter.status(job).state


def test_a_job_is_created_suspended_and_runs_once_released(api_server: ApiServer) -> None:
    adapter = make_adapter(api_server)
    assert isinstance(adapter, Adapter) and isinstance(adapter, Suspendable)
    assert isinstance(adapter, Relocatable) and isinstance(adapter, ChecksSpecs)
    controller = JobController(api_server, "ml")
    job = make_job(
        "python train.py", gpus=2, env={"EPOCHS": "3"}, workdir="/work",
        engine_options={"cpu": "4", "memory": "16Gi", "node_selector": {"pool": "a100"}},
    )  # fmt: skip
    ref = adapter.submit(job)
    assert ref == f"ml/gridshift-{job.id}"
    assert adapter.submit(job) == ref  # idempotent: one Job
    [created] = api_server.jobs("ml")
    assert created["metadata"]["labels"]["gridshift.io/job-id"] == job.id
    assert created["spec"]["suspend"] is True and created["spec"]["backoffLimit"] == 0
    pod = created["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["nodeSelector"] == {"pool": "a100"}
    [container] = pod["containers"]
    assert container["image"] == "busybox:1.36"
    assert container["command"] == ["/bin/sh", "-c", "python train.py"]
    assert container["workingDir"] == "/work"
    assert {"name": "GRIDSHIFT_JOB_ID", "value": job.id} in container["env"]
    assert {"name": "EPOCHS", "value": "3"} in container["env"]
    assert container["resources"] == {
        "limits": {"nvidia.com/gpu": 2},
        "requests": {"cpu": "4", "memory": "16Gi"},
    }

    controller.sync()
    adapter.hold(job)
    assert state(adapter, job) == EngineState.HELD
    assert api_server.pods("ml", f"gridshift-{job.id}") == []  # suspended: no pods

    adapter.release(job)
    adapter.release(job)
    assert state(adapter, job) == EngineState.QUEUED  # released, no pod running yet
    controller.sync()
    assert state(adapter, job) == EngineState.RUNNING
    adapter.hold(job)  # started: hold does not stop it
    assert api_server.job("ml", f"gridshift-{job.id}")["spec"]["suspend"] is False
    controller.finish(f"gridshift-{job.id}", 0)
    st = adapter.status(job)
    assert st.state == EngineState.SUCCEEDED and st.exit_code == 0 and st.job_id == job.id
    assert controller.pods_made == 1


def test_a_failure_carries_the_exit_code_of_its_pod(api_server: ApiServer) -> None:
    adapter = make_adapter(api_server)
    controller = JobController(api_server, "ml")
    job = make_job("exit 3")
    adapter.submit(job)
    adapter.release(job)
    controller.sync()
    controller.finish(f"gridshift-{job.id}", 3)
    st = adapter.status(job)
    assert st.state == EngineState.FAILED and st.exit_code == 3
    assert "BackoffLimitExceeded" in st.message


def test_suspend_removes_the_pods_and_resume_starts_new_ones(api_server: ApiServer) -> None:
    adapter = make_adapter(api_server)
    controller = JobController(api_server, "ml")
    job = make_job(interruptible=True)
    adapter.submit(job)
    adapter.release(job)
    controller.sync()
    assert state(adapter, job) == EngineState.RUNNING
    adapter.suspend(job)
    adapter.suspend(job)
    controller.sync()
    assert api_server.pods("ml", f"gridshift-{job.id}") == []
    assert state(adapter, job) == EngineState.SUSPENDED  # not HELD: it ran before
    adapter.resume(job)
    adapter.resume(job)
    controller.sync()
    assert state(adapter, job) == EngineState.RUNNING
    assert controller.pods_made == 2
    adapter.cancel(job)
    adapter.cancel(job)
    controller.sync()
    assert state(adapter, job) == EngineState.CANCELLED
    assert api_server.pods("ml", f"gridshift-{job.id}") == []
    with pytest.raises(AdapterError, match="was cancelled"):
        adapter.resume(job)
    [managed] = [m for m in adapter.list_managed() if m.job_id == job.id]
    assert managed.state == EngineState.CANCELLED and managed.region == "east"


def test_a_held_job_moves_between_clusters_and_a_started_one_does_not(
    api_server: ApiServer,
) -> None:
    adapter = make_adapter(
        api_server,
        east={"api_url": api_server.url, "namespace": "east", "capacity_gpus": 8},
        west={"api_url": api_server.url, "namespace": "west"},
    )
    assert adapter.regions() == {"east": 8, "west": None}
    job = make_job(region="east")
    adapter.submit(job)
    moved = job.model_copy(update={"region": "west"})  # the agent records the region first
    adapter.relocate(moved, "west")
    adapter.relocate(moved, "west")
    assert api_server.jobs("east") == []
    assert [j["metadata"]["name"] for j in api_server.jobs("west")] == [f"gridshift-{job.id}"]
    assert state(adapter, moved) == EngineState.HELD
    adapter.release(moved)
    with pytest.raises(Conflict, match="already released in west"):
        adapter.relocate(job.model_copy(update={"region": "east"}), "east")
    with pytest.raises(ValidationError, match="region 'mars' has no Kubernetes cluster"):
        adapter.relocate(moved, "mars")


def test_bad_specs_are_refused_before_anything_is_created(api_server: ApiServer) -> None:
    adapter = make_adapter(api_server)
    no_image = KubernetesAdapter(
        KubernetesAdapterConfig(regions={"east": {"api_url": api_server.url}}), FakeClock(NOW)
    )
    with pytest.raises(ValidationError, match="needs a container image"):
        no_image.submit(make_job())
    with pytest.raises(ValidationError, match="unknown Kubernetes engine options colour"):
        adapter.submit(make_job(engine_options={"colour": "green"}))
    with pytest.raises(ValidationError, match="tolerations must be a list"):
        adapter.submit(make_job(engine_options={"tolerations": "all"}))
    with pytest.raises(ValidationError, match="has no Kubernetes cluster"):
        adapter.check_spec(make_job(allowed_regions=["mars"]).spec)
    assert api_server.jobs("ml") == []
    assert state(adapter, make_job()) == EngineState.MISSING


def test_unreachable_clusters_and_tokens(api_server: ApiServer, tmp_path: Path) -> None:
    down = make_adapter(
        api_server, east={"api_url": f"http://127.0.0.1:{free_port()}", "namespace": "ml"}
    )
    with pytest.raises(EngineUnavailable, match=r"cannot be reached at http://127\.0\.0\.1"):
        down.status(make_job())

    seen: list[dict[str, Any]] = []

    class Recording(requests.Session):
        def request(self, method: str, url: str, *args: Any, **kw: Any) -> Any:  # type: ignore[override]
            seen.append({"url": url, **kw})
            return super().request(method, url, *args, **kw)

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = KubernetesAdapterConfig(
        regions={"east": {"api_url": api_server.url, "namespace": "ml", "token_file": str(token)}},
        image="busybox:1.36",
    )
    adapter = KubernetesAdapter(config, FakeClock(NOW), session=Recording())
    adapter.submit(make_job())
    assert seen and all(s["headers"]["Authorization"] == "Bearer s3cret" for s in seen)
    assert all(s["timeout"] == config.timeout_s for s in seen)
    token.write_text("rotated")  # read at every request
    adapter.list_managed()
    assert seen[-1]["headers"]["Authorization"] == "Bearer rotated"

    in_cluster = KubernetesAdapter(
        KubernetesAdapterConfig(regions={"east": {}}, image="x"), FakeClock(NOW)
    )
    with pytest.raises(AdapterError, match="not running in a cluster"):
        in_cluster.status(make_job())


def test_a_job_whose_job_was_deleted_after_it_ran_is_cancelled_not_rerun(
    api_server: ApiServer,
) -> None:
    adapter = make_adapter(api_server)
    controller = JobController(api_server, "ml")
    held, ran = make_job(), make_job()
    for job in (held, ran):
        adapter.submit(job)
    adapter.release(ran)
    controller.sync()
    for job in (held, ran):  # kubectl delete job
        path = f"/apis/batch/v1/namespaces/ml/jobs/gridshift-{job.id}"
        requests.delete(api_server.url + path, timeout=5)
    assert state(adapter, held) == EngineState.MISSING  # the agent creates it again
    st = adapter.status(ran.model_copy(update={"state": JobState.RUNNING}))
    assert st.state == EngineState.CANCELLED and "deleted" in st.message
    native = make_job(engine_options={"native": True}).model_copy(
        update={"engine_ref": "ml/train-bert"}
    )
    with pytest.raises(NotFound, match="adopted from the Job ml/train-bert"):
        adapter.submit(native)
