"""Helpers for the ops tests: finding the external tools, running a real agent and a real
Prometheus as subprocesses, and pulling PromQL out of the dashboard and the rule files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.conftest import REPO_ROOT, free_port, require

DEPLOY = REPO_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "gridshift.json"
RULES = DEPLOY / "prometheus" / "gridshift-alerts.yml"
RULES_TEST = DEPLOY / "prometheus" / "gridshift-alerts.test.yml"
CHART = DEPLOY / "helm" / "gridshift"
HTTP_TIMEOUT_S = 5.0

# How a test stands in for Grafana's built-in variables when it runs a dashboard query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "10s",
    "$__interval": "2s",
    "$__range": "15m",
}


def tool(name: str, hint: str) -> str:
    """Path of an executable on PATH or beside this Python (the project's venv); require()s it."""
    found = shutil.which(name)
    if found is None:
        candidate = Path(sys.executable).parent / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = str(candidate)
    require(name, found is not None, hint)
    assert found is not None
    return found


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# PromQL in the deployment files


@dataclass(frozen=True)
class Query:
    where: str  # "panel 'GPU power' A" or "alert GridshiftAgentDown"
    expr: str


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def iter_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[Query]:
    out = []
    for panel in iter_panels(dashboard()):
        for target in panel.get("targets", []):
            out.append(Query(f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    return out


def rule_queries() -> list[Query]:
    rules = yaml.safe_load(RULES.read_text())
    out = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            out.append(Query(f"rule {name}", rule["expr"]))
    return out


def substitute(expr: str, region: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    return expr.replace("$region", region)


_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "offset", "rate", "increase", "irate", "time",
    "vector", "absent", "histogram_quantile", "bool", "le", "topk", "bottomk", "label_replace",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label names and functions left out)."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_matchers = re.sub(r"\{[^}]*\}", "{}", no_strings)
    no_grouping = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", no_matchers
    )
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", no_grouping):
        word = match.group(0)
        end = match.end()
        if word in _PROMQL_WORDS:
            continue
        if end < len(no_grouping) and no_grouping[end] == "(":
            continue  # a function
        before = no_grouping[: match.start()]
        if before.endswith("$"):
            continue  # a Grafana variable
        if re.search(r"\[\s*[\d.]*$", before) or re.search(r"\d$", before):
            continue  # a duration like 15m or a number like 1e3
        names.add(word)
    return names


# ---------------------------------------------------------------------------------------------
# Processes


def wait_until(what: str, check: Any, timeout_s: float, interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # keep polling; report the last failure
            last_exc = exc
            result = None
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(
        f"timed out after {timeout_s} s waiting for {what} (last error: {last_exc})"
    )


class Process:
    """A subprocess in its own session, logging to a file, stopped by its pid."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:  # fmt: skip
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
            start_new_session=True,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def gridshift_argv() -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from gridshift.scheduler.cli import main; sys.exit(main())",
    ]


class Agent(Process):
    def __init__(
        self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        config = {**config, "api": {"host": "127.0.0.1", "port": self.port}}
        config.setdefault("state_dir", str(workdir / "state"))
        self.config_path = workdir / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [*gridshift_argv(), "agent", "--config", str(self.config_path)],
            workdir / "agent.log",
            env=env,
            cwd=workdir,
        )

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        def healthy() -> bool:
            if not self.alive():
                raise AssertionError(f"the agent exited:\n{self.log()}")
            return requests.get(self.url + "/healthz", timeout=HTTP_TIMEOUT_S).status_code == 200

        wait_until("the agent's /healthz", healthy, timeout_s)

    def metrics_text(self) -> str:
        resp = requests.get(self.url + "/metrics", timeout=HTTP_TIMEOUT_S)
        resp.raise_for_status()
        return resp.text


class Prometheus(Process):
    def __init__(
        self, binary: str, workdir: Path, targets: list[str], rule_files: list[Path]
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": "gridshift", "static_configs": [{"targets": targets}]},
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        super().__init__(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            workdir / "prometheus.log",
        )

    def api(self, path: str, **params: Any) -> Any:
        resp = requests.get(self.url + "/api/v1/" + path, params=params, timeout=HTTP_TIMEOUT_S)
        body = resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def wait_target_up(self, timeout_s: float = 30.0) -> None:
        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            targets = self.api("targets")["activeTargets"]
            return bool(targets) and all(t["health"] == "up" for t in targets)

        wait_until("the scrape target to be up", up, timeout_s)
