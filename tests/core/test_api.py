"""The HTTP API: what it accepts, and that bad input gets a clear 4xx and changes nothing."""

import pytest
from fastapi.testclient import TestClient

from gridshift.scheduler.api import create_app

from .agent_helpers import make_agent


@pytest.fixture
def client(tmp_path):
    agent = make_agent(tmp_path)
    agent.startup()
    with TestClient(create_app(agent)) as c:
        c.agent = agent
        yield c


def job_count(client):
    return len(client.get("/jobs").json())


def test_submit_list_explain_cancel(client):
    resp = client.post(
        "/jobs",
        json={"command": ["sleep", "60"], "expected_duration_s": 3600, "deadline_in": "12h"},
    )
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["state"] in ("held", "running")
    assert client.get(f"/jobs/{job['id']}").json()["id"] == job["id"]
    explained = client.get(f"/jobs/{job['id']}/explain").json()
    assert explained["summary"] and explained["latest_start"]
    assert explained["signal"]["provider"] == "replay"
    assert client.post(f"/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 422
    assert [j["id"] for j in client.get("/jobs?state=cancelled").json()] == [job["id"]]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"command": ["x"], "expected_duration_s": 60, "gpu": 1}, 422, "gpu: unknown field"),
        ({"command": ["x"], "expected_duration_s": 60, "gpus": -1}, 422, "gpus"),
        ({"command": ["x"], "expected_duration_s": -5}, 422, "expected_duration_s"),
        ({"command": [], "expected_duration_s": 60}, 422, "command"),
        (
            {"command": ["x"], "expected_duration_s": 60, "deadline": "2001-01-01T00:00:00Z"},
            422,
            "in the past",
        ),
        (
            {"command": ["x"], "expected_duration_s": 7200, "deadline_in": "1h"},
            422,
            "remain before its deadline",
        ),
        ({"command": ["x"], "expected_duration_s": 60, "deadline_in": "soon"}, 422, "duration"),
        ({"command": ["x"], "expected_duration_s": 60, "engine": "nope"}, 422, "engine"),
        (
            {"command": ["x"], "expected_duration_s": 60, "deadline": "2030-01-01T00:00:00"},
            422,
            "timezone",
        ),
    ],
)
def test_bad_input_is_rejected_clearly(client, body, status, message):
    resp = client.post("/jobs", json=body)
    assert resp.status_code == status
    assert message in resp.json()["error"]
    assert job_count(client) == 0


def test_malformed_json_and_unknown_ids(client):
    resp = client.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "invalid request" in resp.json()["error"]
    assert client.get("/jobs/j-nope").status_code == 404
    assert client.post("/jobs/j-nope/cancel").status_code == 404
    assert job_count(client) == 0


def test_signals_health_metrics_and_openapi(client):
    sig = client.get("/signals").json()["local"]
    assert sig["fresh"] and sig["provider"] == "replay" and sig["current"]
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["role"] == "active"
    text = client.get("/metrics").text
    assert (
        'gridshift_grid_carbon_intensity_grams_per_kwh{kind="average",provider="replay",region="local"}'
        in text
    )
    assert 'gridshift_jobs{state="held"}' in text
    assert "/jobs" in client.get("/openapi.json").json()["paths"]
