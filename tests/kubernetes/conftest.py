"""A Kubernetes API for the tests: kmock's in-memory emulator (create, get, list, merge
patch, delete of any resource) on a loopback port, and `JobController`, which does to Jobs
and pods what a real cluster's Job controller does, as far as gridshift can see it.

No real API server can run on this machine kind; the adapter's requests are the real ones,
the controller's effects are played by `JobController.sync` and `finish`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.conftest import require

MERGE = {"Content-Type": "application/merge-patch+json"}


class ApiServer:
    def __init__(self, url: str) -> None:
        self.url = url

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/apis/batch/v1/namespaces/{namespace}/jobs", timeout=5)
        if r.status_code == 404:  # kmock: nothing of that kind stored yet
            return []
        r.raise_for_status()
        return list(r.json().get("items") or [])

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        r = requests.get(f"{self.url}/apis/batch/v1/namespaces/{namespace}/jobs/{name}", timeout=5)
        return None if r.status_code == 404 else dict(r.json())

    def pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        r = requests.get(f"{self.url}/api/v1/namespaces/{namespace}/pods", timeout=5)
        if r.status_code == 404:  # kmock: nothing of that kind stored yet
            return []
        r.raise_for_status()
        return [
            p for p in r.json().get("items") or []
            if (p["metadata"].get("labels") or {}).get("job-name") == job_name
        ]  # fmt: skip

    def patch(self, path: str, body: dict[str, Any]) -> None:
        requests.patch(self.url + path, json=body, headers=MERGE, timeout=5).raise_for_status()


class JobController:
    """Plays the Job controller of one namespace: a Job that is not suspended and has not
    ended gets a running pod (status.active and ready 1); a suspended Job loses its pods
    (active 0, condition Suspended); `finish` ends a Job's pod with an exit code and marks
    the Job Complete or Failed (backoffLimit 0)."""

    def __init__(self, api: ApiServer, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.pods_made = 0

    def _job_path(self, name: str) -> str:
        return f"/apis/batch/v1/namespaces/{self.ns}/jobs/{name}"

    def sync(self) -> None:
        now = _now()
        for job in self.api.jobs(self.ns):
            name = job["metadata"]["name"]
            conditions = (job.get("status") or {}).get("conditions") or []
            if any(c["type"] in ("Complete", "Failed") for c in conditions):
                continue
            pods = self.api.pods(self.ns, name)
            if job["spec"].get("suspend"):
                for pod in pods:
                    path = f"/api/v1/namespaces/{self.ns}/pods/{pod['metadata']['name']}"
                    requests.delete(self.api.url + path, timeout=5)
                status = {"active": 0, "ready": 0, "startTime": None}
                if pods or (job.get("status") or {}).get("active"):
                    status["conditions"] = [{"type": "Suspended", "status": "True"}]
                self.api.patch(self._job_path(name) + "/status", {"status": status})
            elif not pods:
                self.pods_made += 1
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{name}-{self.pods_made}",
                        "namespace": self.ns,
                        "labels": {"job-name": name, "batch.kubernetes.io/job-name": name},
                    },
                    "spec": job["spec"]["template"]["spec"],
                    "status": {
                        "phase": "Running",
                        "containerStatuses": [
                            {"name": "job", "ready": True, "state": {"running": {"startedAt": now}}}
                        ],
                    },
                }
                path = f"/api/v1/namespaces/{self.ns}/pods"
                requests.post(self.api.url + path, json=pod, timeout=5).raise_for_status()
                status = {"active": 1, "ready": 1, "startTime": now, "conditions": []}
                self.api.patch(self._job_path(name) + "/status", {"status": status})

    def finish(self, name: str, exit_code: int) -> None:
        now = _now()
        [pod] = self.api.pods(self.ns, name)
        terminated = {"exitCode": exit_code, "finishedAt": now, "reason": "Completed"}
        self.api.patch(
            f"/api/v1/namespaces/{self.ns}/pods/{pod['metadata']['name']}",
            {"status": {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [{"name": "job", "state": {"terminated": terminated}}],
            }},
        )  # fmt: skip
        if exit_code == 0:
            status = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
            status["completionTime"] = now
        else:
            status = {
                "failed": 1,
                "conditions": [{
                    "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }],
            }  # fmt: skip
        self.api.patch(
            self._job_path(name) + "/status", {"status": {**status, "active": 0, "ready": 0}}
        )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    try:
        import kmock
    except ImportError:
        kmock = None  # type: ignore[assignment]
    require("kmock", kmock is not None, "pip install -e '.[test]' (kmock, an in-memory API server)")
    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        try:
            async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
                box["url"] = str(server.url).rstrip("/")
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.05)
        except BaseException as exc:  # reported to the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(30), "kmock did not start"
    assert "error" not in box, box.get("error")
    yield ApiServer(box["url"])
    stop.set()
    thread.join(10)
