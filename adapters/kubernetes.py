"""Kubernetes: gridshift jobs as batch/v1 Jobs, held and paused with `spec.suspend`.

A job is created as a suspended Job as soon as it is planned, so `kubectl get jobs` shows
it waiting; the Job controller creates no pods until gridshift releases it:

    release   patch spec.suspend=false (and annotate it as started)
    hold      patch spec.suspend=true, if it has not started
    suspend   patch spec.suspend=true: the controller deletes the Job's pods (SIGTERM, then
              SIGKILL after the grace period); the job resumes from its own checkpoint
    resume    patch spec.suspend=false: the controller creates new pods
    cancel    annotate it as cancelled and suspend it (its pods go, the Job stays as a
              record until `kubectl delete job`)
    relocate  a job not yet started is created in the new region's cluster and deleted
              from the old one

A Job created directly (`kubectl apply`) opts in with the label `gridshift.io/opt-in: "true"`,
annotations saying what it needs (`gridshift.io/deadline`, `max-delay`, `duration`,
`interruptible`) and `spec.suspend: true`; the agent adopts it, and the adapter acts on it
in place (it stays in its cluster).

Every action is a merge patch to the wanted state, so doing it twice has the effect of once.
The Job is named `gridshift-<job id>` and labelled `gridshift.io/job-id`; its state is read
from what the Job controller records (`status.active`, `ready`, the Complete and Failed
conditions) and, for a failure's exit code, from the terminated container of its last pod.
The API is reached over HTTPS with the pod's service-account token (or a token file), with
the Python `requests` library: no Kubernetes client library is needed.
"""

from __future__ import annotations

import logging
import os
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from gridshift.scheduler.clock import Clock
from gridshift.scheduler.config import KubernetesAdapterConfig, KubernetesRegionConfig, Settings
from gridshift.scheduler.errors import (
    AdapterError,
    Conflict,
    EngineUnavailable,
    NotFound,
    ValidationError,
)
from gridshift.scheduler.interfaces import EngineState, EngineStatus
from gridshift.scheduler.models import Job, JobSpec, JobState

from ._common import Clusters, check_option_names, opt_in_spec

log = logging.getLogger(__name__)

PREFIX = "gridshift-"
JOB_ID_LABEL = "gridshift.io/job-id"
MANAGED = ("app.kubernetes.io/managed-by", "gridshift")
STARTED = "gridshift.io/started"  # annotation: when gridshift first released it
CANCELLED = "gridshift.io/cancelled"
OPT_IN_LABEL = "gridshift.io/opt-in"  # a Job created directly asks gridshift to plan it
ANNOTATION = "gridshift.io/"  # its wishes: gridshift.io/deadline, max-delay, duration, ...
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_OPTIONS = {"image", "cpu", "memory", "node_selector", "tolerations", "service_account"}
_MERGE = {"Content-Type": "application/merge-patch+json"}


class KubernetesAdapter:
    """Adapter + Suspendable + Relocatable + ChecksSpecs over the Kubernetes API."""

    name = "kubernetes"

    def __init__(
        self,
        config: KubernetesAdapterConfig,
        clock: Clock,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.clusters = Clusters("Kubernetes", "kubernetes", config.regions, config.default_region)
        self.http = session or requests.Session()
        self._warned: set[tuple[str, str]] = set()  # opt-in Jobs already reported as unreadable

    # -- required interface

    def submit(self, job: Job) -> str:
        if job.spec.engine_options.get("native"):
            raise NotFound(
                f"job {job.id} was adopted from the Job {job.engine_ref}, which Kubernetes no "
                "longer has; it cannot be created again"
            )
        self.check_spec(job.spec)
        region = self._region(job)
        self._create(job, region)
        return f"{self._cfg(region).namespace}/{PREFIX}{job.id}"

    def release(self, job: Job) -> None:
        region = self._region(job)
        found = self._require(job, region, "release")
        if _is_started(found) and not found["spec"].get("suspend"):
            return
        self._patch(job, region, {"spec": {"suspend": False}}, started=True)
        log.info("job %s released in Kubernetes (%s)", job.id, region)

    def hold(self, job: Job) -> None:
        region = self._region(job)
        found = self._require(job, region, "hold")
        if not _is_started(found) and not found["spec"].get("suspend"):
            self._patch(job, region, {"spec": {"suspend": True}})

    def cancel(self, job: Job) -> None:
        region = self._region(job)
        found = self._get_job(job, region)
        if found is None or _finished(found) or _annotations(found).get(CANCELLED):
            return
        patch = {"metadata": {"annotations": {CANCELLED: self._now()}}, "spec": {"suspend": True}}
        self._patch(job, region, patch)
        log.info("job %s cancelled in Kubernetes (%s)", job.id, region)

    def status(self, job: Job) -> EngineStatus:
        region = self._region(job)
        found = self._get_job(job, region)
        if found is None:
            ran = job.state in (JobState.RUNNING, JobState.SUSPENDED)
            return EngineStatus(
                ref="/".join(self._locate(job, region)),
                job_id=job.id,
                # a Job that ran and is gone was deleted (kubectl delete job): not to be rerun
                state=EngineState.CANCELLED if ran else EngineState.MISSING,
                region=region,
                message="its Job was deleted from Kubernetes" if ran else "",
            )
        return self._status(found, region)

    def list_managed(self) -> list[EngineStatus]:
        """gridshift's Jobs, and the Jobs created directly that opt in (label
        gridshift.io/opt-in=true), in every region's namespace."""
        out: list[EngineStatus] = []
        for region, cfg in self.config.regions.items():
            path = f"/apis/batch/v1/namespaces/{cfg.namespace}/jobs"
            seen: set[str] = set()
            for selector in ("=".join(MANAGED), f"{OPT_IN_LABEL}=true"):
                params = {"labelSelector": selector}
                listing = self._request("GET", region, path, missing_ok=True, params=params)
                for item in (listing or {}).get("items") or []:
                    name = (item.get("metadata") or {}).get("name", "")
                    if name in seen:  # each Job once, whichever listings return it
                        continue
                    seen.add(name)
                    labels = item.get("metadata", {}).get("labels") or {}
                    if labels.get(JOB_ID_LABEL):  # created by gridshift, or adopted and claimed
                        out.append(self._status(item, region, with_exit_code=False))
                    elif labels.get(OPT_IN_LABEL) == "true":
                        out.append(self._adoption(item, region))
        return out

    def _adoption(self, item: dict[str, Any], region: str) -> EngineStatus:
        """A Job created directly that opts in: what it asks for, if it waits suspended."""
        st = self._status(item, region, with_exit_code=False)
        meta = item.get("metadata") or {}
        ref = st.ref
        if st.state != EngineState.HELD:
            if st.state not in (EngineState.SUCCEEDED, EngineState.FAILED):
                self._warn_once(
                    ref, "it is not suspended; create it with spec.suspend: true so it waits"
                )
            return st
        annotations = _annotations(item)
        fields = {
            key[len(ANNOTATION) :].replace("-", "_"): value
            for key, value in annotations.items()
            if key.startswith(ANNOTATION)
        }
        if "regions" in fields:
            self._warn_once(ref, "gridshift.io/regions is ignored: an adopted Job stays put")
            del fields["regions"]
        created = _time(meta.get("creationTimestamp"))
        age_s = (self.clock.now() - created).total_seconds() if created else 0.0
        pod = ((item.get("spec") or {}).get("template") or {}).get("spec") or {}
        gpus = sum(
            int(((c.get("resources") or {}).get("limits") or {}).get(self.config.gpu_resource, 0))
            for c in pod.get("containers") or []
        )
        try:
            spec: dict[str, Any] = {
                "name": meta.get("name") or ref,
                "command": [f"kubernetes:{ref}"],
                "engine": "kubernetes",
                "engine_options": {"native": True},
                "gpus": gpus,
                "labels": {"kubernetes_job": ref},
            }
            spec.update(
                opt_in_spec(
                    fields,
                    fallback_duration_s=float(
                        (item.get("spec") or {}).get("activeDeadlineSeconds")
                        or self.config.default_duration_s
                    ),
                    submitted_age_s=age_s,
                    current_region=region,
                    key=lambda k: f"annotation {ANNOTATION}{k.replace('_', '-')}",
                )
            )
        except (ValidationError, ValueError) as exc:
            self._warn_once(ref, f"{exc}; left alone")
            return st
        return st.model_copy(update={"adopt_spec": spec})

    def _warn_once(self, ref: str, why: str) -> None:
        if (ref, why) not in self._warned:
            self._warned.add((ref, why))
            log.warning("kubernetes: Job %s opts in to gridshift, but %s", ref, why)

    # -- optional capabilities

    def suspend(self, job: Job) -> None:
        region = self._region(job)
        found = self._require(job, region, "suspend")
        if _finished(found) or found["spec"].get("suspend"):
            return
        self._patch(job, region, {"spec": {"suspend": True}})
        log.info("job %s suspended in Kubernetes (%s)", job.id, region)

    def resume(self, job: Job) -> None:
        region = self._region(job)
        found = self._require(job, region, "resume")
        if _annotations(found).get(CANCELLED):
            raise AdapterError(f"job {job.id} was cancelled in Kubernetes: it cannot resume")
        if _finished(found) or not found["spec"].get("suspend"):
            return
        self._patch(job, region, {"spec": {"suspend": False}}, started=True)
        log.info("job %s resumed in Kubernetes (%s)", job.id, region)

    def regions(self) -> dict[str, int | None]:
        return self.clusters.capacities()

    def relocate(self, job: Job, region: str) -> None:
        self._cfg(region)
        if job.spec.engine_options.get("native"):
            raise Conflict(f"job {job.id} is a Job adopted from {job.engine_ref}: it stays there")
        here = self._get_job(job, region)
        if here is not None and _released(here):
            return  # already there (and released there)
        elsewhere = {r: self._get_job(job, r) for r in self.config.regions if r != region}
        for other, found in elsewhere.items():
            if found is not None and _released(found):
                raise Conflict(
                    f"job {job.id} was already released in {other}; only a job not yet "
                    "started can move"
                )
        if here is None:
            self._create(job, region)
        for other, found in elsewhere.items():
            if found is not None:
                self._request("DELETE", other, self._job_path(job, other), missing_ok=True)
        log.info("job %s moved to %s in Kubernetes", job.id, region)

    def check_spec(self, spec: JobSpec) -> None:
        """Refuse, at submission, a job Kubernetes could not run: a region without a cluster,
        no image, engine options it would not take."""
        self.clusters.check_allowed(spec)
        opts = spec.engine_options
        check_option_names("Kubernetes", opts, _OPTIONS)
        if not (opts.get("image") or self.config.image):
            raise ValidationError(
                "a Kubernetes job needs a container image: engine_options.image, or "
                "kubernetes.image in the agent's settings"
            )
        for key in ("image", "cpu", "memory", "service_account"):
            if key in opts and not isinstance(opts[key], str | int | float):
                raise ValidationError(f"engine_options.{key} must be a string")
        if not isinstance(opts.get("node_selector", {}), dict):
            raise ValidationError("engine_options.node_selector must be a mapping")
        if not isinstance(opts.get("tolerations", []), list):
            raise ValidationError("engine_options.tolerations must be a list")

    # -- internals

    def _cfg(self, region: str | None) -> KubernetesRegionConfig:
        return self.clusters.get(region)

    def _region(self, job: Job) -> str:
        return self.clusters.of(job)

    def _now(self) -> str:
        return self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _locate(self, job: Job, region: str) -> tuple[str, str]:
        """(namespace, name) of the job's Job in `region`: an adopted Job keeps its own."""
        if job.spec.engine_options.get("native") and job.engine_ref and "/" in job.engine_ref:
            namespace, name = job.engine_ref.split("/", 1)
            return namespace, name
        return self._cfg(region).namespace, PREFIX + job.id

    def _job_path(self, job: Job, region: str) -> str:
        namespace, name = self._locate(job, region)
        return f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"

    def _get_job(self, job: Job, region: str) -> dict[str, Any] | None:
        found = self._request("GET", region, self._job_path(job, region), missing_ok=True)
        return dict(found) if found is not None else None

    def _require(self, job: Job, region: str, action: str) -> dict[str, Any]:
        found = self._get_job(job, region)
        if found is None:
            namespace, name = self._locate(job, region)
            raise AdapterError(
                f"cannot {action} job {job.id}: Kubernetes has no Job {name} in {region} "
                f"(namespace {namespace})"
            )
        return found

    def _patch(self, job: Job, region: str, patch: dict[str, Any], started: bool = False) -> None:
        meta = patch.setdefault("metadata", {})
        if started:
            meta.setdefault("annotations", {})[STARTED] = self._now()
        if job.spec.engine_options.get("native"):
            meta.setdefault("labels", {})[JOB_ID_LABEL] = job.id  # claimed: no longer an offer
        path = self._job_path(job, region)
        self._request("PATCH", region, path, json=patch, headers=_MERGE)

    def _create(self, job: Job, region: str) -> None:
        if self._get_job(job, region) is not None:
            return  # created by an earlier call whose answer was lost
        spec = job.spec
        opts = spec.engine_options
        command = ["/bin/sh", "-c", spec.command[0]] if spec.shell else list(spec.command)
        env = {**spec.env, "GRIDSHIFT_JOB_ID": job.id}
        container: dict[str, Any] = {
            "name": "job",
            "image": opts.get("image") or self.config.image,
            "command": command,
            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        }
        if spec.workdir:
            container["workingDir"] = spec.workdir
        limits: dict[str, Any] = {}
        if spec.gpus:
            limits[self.config.gpu_resource] = spec.gpus
        requests_: dict[str, Any] = {}
        for key in ("cpu", "memory"):
            if key in opts:
                requests_[key] = str(opts[key])
        if limits or requests_:
            container["resources"] = {
                k: v for k, v in (("limits", limits), ("requests", requests_)) if v
            }
        pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if opts.get("node_selector"):
            pod["nodeSelector"] = opts["node_selector"]
        if opts.get("tolerations"):
            pod["tolerations"] = opts["tolerations"]
        if opts.get("service_account"):
            pod["serviceAccountName"] = opts["service_account"]
        labels = {MANAGED[0]: MANAGED[1], JOB_ID_LABEL: job.id}
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": PREFIX + job.id,
                "namespace": self._cfg(region).namespace,
                "labels": labels,
                "annotations": {
                    "gridshift.io/name": spec.name,
                    "gridshift.io/command": shlex.join(command)[:1000],
                },
            },
            "spec": {
                "suspend": True,
                "backoffLimit": 0,
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }
        path = f"/apis/batch/v1/namespaces/{self._cfg(region).namespace}/jobs"
        try:
            self._request("POST", region, path, json=body)
        except Conflict:
            return  # created meanwhile
        log.info("job %s created in Kubernetes (%s), suspended until released", job.id, region)

    def _status(
        self, item: dict[str, Any], region: str, with_exit_code: bool = True
    ) -> EngineStatus:
        meta = item.get("metadata") or {}
        status = item.get("status") or {}
        job_id = (meta.get("labels") or {}).get(JOB_ID_LABEL)
        conditions = {
            c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
        }
        exit_code: int | None = None
        message = ""
        if "Complete" in conditions:
            state, exit_code = EngineState.SUCCEEDED, 0
        elif "Failed" in conditions:
            state = EngineState.FAILED
            cond = conditions["Failed"]
            message = f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip(": ")
            if with_exit_code:
                exit_code = self._exit_code(meta.get("name", ""), region)
        elif _annotations(item).get(CANCELLED):
            state = EngineState.CANCELLED
            message = "cancelled"
        elif (item.get("spec") or {}).get("suspend"):
            state = EngineState.SUSPENDED if _is_started(item) else EngineState.HELD
        elif int(status.get("ready") or 0) > 0 or (
            "ready" not in status and int(status.get("active") or 0) > 0
        ):
            state = EngineState.RUNNING
        else:
            state = EngineState.QUEUED  # released; its pods are not running (yet)
        return EngineStatus(
            ref=f"{meta.get('namespace', self._cfg(region).namespace)}/{meta.get('name', '')}",
            job_id=job_id or None,
            state=state,
            exit_code=exit_code,
            started_at=_time(status.get("startTime")),
            ended_at=_time(status.get("completionTime")),
            region=region,
            message=message,
        )

    def _exit_code(self, name: str, region: str) -> int | None:
        """The exit code of the job's container in its most recent pod, where one ended."""
        path = f"/api/v1/namespaces/{self._cfg(region).namespace}/pods"
        selector = {"labelSelector": f"job-name={name}"}
        pods = self._request("GET", region, path, missing_ok=True, params=selector)
        best: tuple[str, int] | None = None
        for pod in (pods or {}).get("items") or []:
            if (pod.get("metadata", {}).get("labels") or {}).get("job-name") != name:
                continue
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                term = (cs.get("state") or {}).get("terminated")
                if term and term.get("exitCode") is not None:
                    key = (str(term.get("finishedAt") or ""), int(term["exitCode"]))
                    best = max(best, key) if best else key
        return best[1] if best else None

    def _request(
        self,
        method: str,
        region: str,
        path: str,
        missing_ok: bool = False,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        cfg = self._cfg(region)
        base, verify, token = _connection(cfg)
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        try:
            resp = self.http.request(
                method,
                base + path,
                headers=all_headers,
                verify=verify,
                timeout=self.config.timeout_s,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise EngineUnavailable(
                f"Kubernetes in {region} cannot be reached at {base} ({type(exc).__name__}); "
                "check kubernetes.regions.<region>.api_url and the network"
            ) from exc
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 400:
            text = _k8s_message(resp)
            what = f"Kubernetes in {region}: {method} {path} answered {resp.status_code}: {text}"
            if resp.status_code == 409:
                raise Conflict(what)
            if resp.status_code in (401, 403):
                raise AdapterError(
                    what + " (give the agent's service account the chart's role on batch "
                    "Jobs and Pods in this namespace)"
                )
            if resp.status_code in (429, 500, 502, 503, 504):
                raise EngineUnavailable(what)
            raise AdapterError(what)
        try:
            return resp.json()
        except ValueError as exc:
            raise AdapterError(
                f"Kubernetes in {region}: {method} {path} answered with no JSON"
            ) from exc


def _connection(cfg: KubernetesRegionConfig) -> tuple[str, bool | str, str | None]:
    """API base URL, TLS verification and bearer token for a region (in-cluster defaults)."""
    base = cfg.api_url
    if base is None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise AdapterError(
                "kubernetes: no api_url and not running in a cluster (KUBERNETES_SERVICE_HOST "
                "is unset); set kubernetes.regions.<region>.api_url"
            )
        base = f"https://{host}:{port}"
    token_file = cfg.token_file or (str(SA_DIR / "token") if cfg.api_url is None else None)
    token = None
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AdapterError(f"kubernetes: cannot read the token {token_file}: {exc}") from exc
    in_cluster_ca = SA_DIR / "ca.crt"
    ca = cfg.ca_file or (
        str(in_cluster_ca) if cfg.api_url is None and in_cluster_ca.exists() else None
    )
    return base.rstrip("/"), ca or True, token


def _annotations(item: dict[str, Any]) -> dict[str, str]:
    return dict((item.get("metadata") or {}).get("annotations") or {})


def _is_started(item: dict[str, Any]) -> bool:
    return bool(_annotations(item).get(STARTED))


def _released(item: dict[str, Any]) -> bool:
    """Started by gridshift, or not suspended (so its pods may run)."""
    return _is_started(item) or not (item.get("spec") or {}).get("suspend")


def _finished(item: dict[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (item.get("status") or {}).get("conditions") or []
    )


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _k8s_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or "(no text)"
    return str(body.get("message") or body.get("reason") or body)[:300]


def build(settings: Settings, clock: Clock) -> KubernetesAdapter | None:
    """The adapter for `settings.kubernetes`, or None when Kubernetes is not configured."""
    if settings.kubernetes is None:
        return None
    return KubernetesAdapter(settings.kubernetes, clock)
