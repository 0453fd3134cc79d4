"""HTTP API (FastAPI; the OpenAPI schema is at /openapi.json, docs at /docs).

    POST   /jobs                 submit a job (JobSpec fields, plus deadline_in: "8h" or seconds)
    GET    /jobs[?state=held]    list jobs
    GET    /jobs/{id}            one job
    GET    /jobs/{id}/explain    when and where it runs, why, and the grams it saves
    POST   /jobs/{id}/cancel     cancel it
    GET    /signals              the signal in use per region: value, provider, age
    GET    /decisions            recent decisions
    GET    /healthz              liveness, the agent's clock and role (active or standby)
    GET    /metrics              Prometheus exposition

Bad input gets a 4xx with a message that says what is wrong, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field

from . import __version__
from .agent import Agent
from .errors import Conflict, GridshiftError, InvalidTransition, NotFound, ValidationError
from .models import Job, JobSpec, JobState, parse_duration_s


class SubmitRequest(JobSpec):
    deadline_in: str | float | None = Field(
        default=None, description="deadline relative to now: seconds, or '8h', '90m', '2d'"
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="gridshift", version=__version__)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{loc}: {msg}")
        return JSONResponse(
            status_code=422, content={"error": "invalid request: " + "; ".join(problems)}
        )

    @app.exception_handler(GridshiftError)
    async def _gridshift_error(_: Request, exc: GridshiftError) -> JSONResponse:
        if isinstance(exc, NotFound):
            return _error(404, str(exc))
        if isinstance(exc, Conflict | InvalidTransition):
            return _error(409, str(exc))
        if isinstance(exc, ValidationError):
            return _error(422, str(exc))
        return _error(500, str(exc))

    @app.post("/jobs", status_code=201)
    def submit(req: SubmitRequest) -> Job:
        data = req.model_dump(exclude={"deadline_in"}, exclude_unset=True)
        deadline_in_s = None
        if req.deadline_in is not None:
            try:
                deadline_in_s = parse_duration_s(req.deadline_in)
            except ValueError as exc:
                raise ValidationError(f"deadline_in: {exc}") from None
        return agent.submit(JobSpec.model_validate(data), deadline_in_s=deadline_in_s)

    @app.get("/jobs")
    def list_jobs(state: JobState | None = None) -> list[Job]:
        return agent.store.list_jobs([state] if state else None)

    @app.get("/jobs/{job_id}")
    def get_job(job_id: str) -> Job:
        return agent.store.get_job(job_id)

    @app.get("/jobs/{job_id}/explain")
    def explain(job_id: str) -> dict[str, Any]:
        return agent.explain(job_id)

    @app.post("/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> Job:
        return agent.cancel(job_id)

    @app.get("/signals")
    def signals() -> dict[str, Any]:
        return {region: sig.model_dump(mode="json") for region, sig in agent.hub.snapshot().items()}

    @app.get("/decisions")
    def decisions(limit: int = 100) -> list[dict[str, Any]]:
        return [d.model_dump(mode="json") for d in agent.store.decisions(limit=limit)]

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "now": agent.clock.now().isoformat(),
            # "standby" beside another agent acting on a shared database
            "role": "active" if agent.acting else "standby",
        }

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    return app
