"""The `gridshift` command.

    gridshift agent [--config FILE]          run the agent (API, metrics, planning loop)
    gridshift submit [options] -- CMD ...    submit a deferrable job
    gridshift list | show ID | explain ID | cancel ID
    gridshift signals [REGION]               the grid signal per region, and its forecast
    gridshift gpus                           GPUs with power, energy and limits
    gridshift simulate ...                   replay a trace and a job trace through the planner

Client commands talk to the agent's HTTP API (--api, or GRIDSHIFT_API_URL; else the
address GRIDSHIFT_API__HOST and GRIDSHIFT_API__PORT give the agent; default
http://127.0.0.1:8787).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .config import default_api_url
from .errors import ConfigError, GridshiftError
from .models import parse_duration_s

HTTP_TIMEOUT_S = 30.0

# Subcommands implemented in their own modules: add_arguments(parser) and run(args).
EXTERNAL_COMMANDS = {
    "signals": ("gridshift.scheduler.signals.cli", "show the grid signal per region"),
    "gpus": ("gridshift.scheduler.telemetry.cli", "list GPUs with power, energy and limits"),
    "simulate": ("gridshift.scheduler.sim.cli", "replay a trace and jobs through the planner"),
}


class CliError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# agent


def cmd_agent(args: argparse.Namespace) -> int:
    import prometheus_client
    import uvicorn

    from .agent import Agent
    from .api import create_app
    from .config import load_settings, unknown_variables
    from .store import display_url

    settings = load_settings(args.config)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    log = logging.getLogger("gridshift")
    for warning in unknown_variables():
        log.warning(warning)
    # Before the store is opened: one agent per state folder, and the API port free (a
    # second agent would otherwise act on the same jobs before finding the port taken).
    lock = _lock_state_dir(settings.state_dir)
    sock = _listen(settings.api.host, settings.api.port)
    # Counters and histograms without their `_created` series (one more series each): the
    # agent's start time is in process_start_time_seconds already.
    prometheus_client.disable_created_metrics()
    agent = Agent.build(settings)
    log.info(
        "gridshift %s: store %s, engines %s, regions %s",
        __version__,
        display_url(settings.db_url),
        ", ".join(sorted(agent.adapters)),
        ", ".join(
            f"{r} <- {'/'.join(s.provider for s in c.sources)}" for r, c in settings.regions.items()
        ),
    )
    agent.startup()
    agent.start_background()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(agent),
            host=settings.api.host,
            port=settings.api.port,
            log_level="warning",
            access_log=False,
        )
    )
    log.info("API and /metrics on http://%s:%d", settings.api.host, settings.api.port)
    # uvicorn handles SIGTERM/SIGINT while it serves, then re-raises the signal to the
    # handler that was in place before: make that one a no-op, so the drain below runs.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run(sockets=[sock])  # returns on SIGTERM or SIGINT
    finally:
        log.info("stopping: draining periodic work, restoring power limits")
        agent.stop()
        log.info("stopped")
        lock.close()
    return 0


def _lock_state_dir(state_dir: Path) -> TextIO:
    """Hold `state_dir/agent.lock` while the agent runs; refuse if another agent holds it."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(state_dir / "agent.lock", "w")  # noqa: SIM115 (held until the agent stops)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise CliError(
            f"another gridshift agent is running on {state_dir} (it holds {state_dir}/agent.lock); "
            "stop it, or give this one its own state_dir"
        ) from None
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def _listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now, so a taken port stops the agent at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another agent running "
            "there? (set api.port, or GRIDSHIFT_API__PORT)"
        ) from None
    return sock


# ---------------------------------------------------------------------------------------------
# client commands


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import requests

    url = args.api.rstrip("/") + path
    try:
        resp = requests.request(method, url, json=body, timeout=HTTP_TIMEOUT_S)
    except requests.ConnectionError:
        raise CliError(
            f"cannot reach the gridshift agent at {args.api}; start it with `gridshift agent` "
            "or point --api / GRIDSHIFT_API_URL at it"
        ) from None
    except requests.Timeout:
        raise CliError(
            f"the agent at {args.api} did not answer within {HTTP_TIMEOUT_S:.0f}s"
        ) from None
    if resp.status_code >= 400:
        try:
            message = resp.json().get("error") or resp.text
        except ValueError:
            message = resp.text
        raise CliError(message)
    return resp.json()


def _parse_deadline(text: str) -> dict[str, Any]:
    """'8h' -> relative; '2024-05-01T06:00Z' -> absolute."""
    try:
        return {"deadline_in": parse_duration_s(text)}
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"--deadline {text!r}: use a duration (8h, 90m, 2d) or an ISO time with a zone"
        ) from None
    if when.tzinfo is None:
        raise CliError(f"--deadline {text!r} has no time zone; add Z for UTC")
    return {"deadline": when.isoformat()}


def cmd_submit(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError(
            "give the command after --, e.g. gridshift submit --duration 1h -- python train.py"
        )
    body: dict[str, Any] = {
        "name": args.name or os.path.basename(command[0]),
        "command": [" ".join(command)] if args.shell else command,
        "shell": args.shell,
        "expected_duration_s": parse_duration_s(args.duration),
        "gpus": args.gpus,
        "interruptible": args.interruptible,
        "engine": args.engine,
        "workdir": args.workdir or os.getcwd(),
    }
    if args.deadline:
        body.update(_parse_deadline(args.deadline))
    if args.max_delay:
        body["max_delay_s"] = parse_duration_s(args.max_delay)
    if args.region:
        body["allowed_regions"] = args.region
    if args.power_w:
        body["expected_power_w"] = args.power_w
    if args.env:
        body["env"] = dict(_split_kv(e) for e in args.env)
    if args.label:
        body["labels"] = dict(_split_kv(e) for e in args.label)
    job = _api(args, "POST", "/jobs", body)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    explained = _api(args, "GET", f"/jobs/{job['id']}/explain")
    print(job["id"])
    print(f"  {explained['summary']}")
    print(f"  deadline {_t(job['deadline'])}, latest start {_t(explained['latest_start'])}")
    return 0


def _split_kv(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise CliError(f"{text!r} must be KEY=VALUE")
    key, value = text.split("=", 1)
    return key, value


def _t(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M") + "Z"


def cmd_list(args: argparse.Namespace) -> int:
    jobs = _api(args, "GET", "/jobs" + (f"?state={args.state}" if args.state else ""))
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    if not jobs:
        print("no jobs")
        return 0
    header = (
        f"{'ID':<16} {'NAME':<18} {'STATE':<10} {'PLANNED START':<17} {'DEADLINE':<17} "
        f"{'CO2 g':>8}  WHY"
    )
    print(header)
    for j in jobs:
        print(
            f"{j['id']:<16} {j['spec']['name'][:18]:<18} {j['state']:<10} "
            f"{_t(j.get('planned_start')):<17} {_t(j['deadline']):<17} "
            f"{j['emissions_g']:>8.1f}  {j['reason'][:70]}"
        )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    data = _api(args, "GET", f"/jobs/{args.job_id}/explain")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    job = data["job"]
    print(f"{job['id']}  {job['spec']['name']}  [{job['state']}]")
    print(f"  {data['summary']}")
    print(
        f"  submitted {_t(job['submitted_at'])}, deadline {_t(job['deadline'])}, "
        f"latest start {_t(data['latest_start'])}"
    )
    sig = data.get("signal")
    if sig and sig.get("current"):
        age = sig.get("age_s")
        print(
            f"  grid {data['region']}: {sig['current']['intensity_g_per_kwh']:.0f} g/kWh from "
            f"{sig['provider']} ({age:.0f}s old{'' if sig['fresh'] else ', STALE'})"
        )
    if job.get("counterfactual_g") is not None:
        print(
            f"  emissions {job['emissions_g']:.1f} g so far; running at submission: "
            f"{job['counterfactual_g']:.1f} g (estimate from expected power)"
        )
    print("  history:")
    for e in data["events"]:
        print(f"    {_t(e['at'])}  {e['from_state'] or '-':>9} -> {e['to_state']:<9} {e['reason']}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _api(args, "POST", f"/jobs/{args.job_id}/cancel")
    print(f"{job['id']} {job['state']}")
    return 0


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridshift", description="Carbon-aware GPU job scheduler agent."
    )
    parser.add_argument("--version", action="version", version=f"gridshift {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")

    def client(name: str, help: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, aliases=list(aliases))
        p.add_argument(
            "--api", default=default_api_url(), help="agent URL (default: GRIDSHIFT_API_URL)"
        )
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    p = sub.add_parser("agent", help="run the agent")
    p.add_argument("--config", help="YAML config file (or GRIDSHIFT_CONFIG)")
    p.set_defaults(func=cmd_agent)

    p = client("submit", "submit a deferrable job")
    p.add_argument("--name")
    p.add_argument("--duration", required=True, help="expected run time: 90s, 45m, 8h")
    p.add_argument(
        "--deadline", help="finish by: a duration from now (8h) or an ISO time (2024-05-01T06:00Z)"
    )
    p.add_argument("--max-delay", help="latest start relative to now instead of a deadline")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--interruptible", action="store_true", help="may be suspended and resumed")
    p.add_argument("--region", action="append", help="allowed region (repeat for several)")
    p.add_argument("--engine", default="local")
    p.add_argument("--power-w", type=float, help="expected average power, for estimates")
    p.add_argument("--env", action="append", help="KEY=VALUE for the job's environment")
    p.add_argument("--label", action="append", help="KEY=VALUE label")
    p.add_argument("--workdir", help="working directory (default: the current one)")
    p.add_argument("--shell", action="store_true", help="run the command through /bin/sh -c")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    p.set_defaults(func=cmd_submit)

    p = client("list", "list jobs")
    p.add_argument(
        "--state",
        choices=["pending", "held", "running", "suspended", "succeeded", "failed", "cancelled"],
    )
    p.set_defaults(func=cmd_list)

    p = client("explain", "when and where a job runs, why, and what it saves", aliases=["show"])
    p.add_argument("job_id")
    p.set_defaults(func=cmd_explain)

    p = client("cancel", "cancel a job")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_cancel)

    for name, (module, help_text) in EXTERNAL_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(module=module)
        try:
            mod = importlib.import_module(module)
        except ImportError:
            p.set_defaults(func=None, missing=module)
            continue
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        rc = _run(argv)
        sys.stdout.flush()  # a pipe's buffer: its error belongs here, not at exit
        return rc
    except BrokenPipeError:
        # the reader went away (`gridshift list | head`): stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "cmd", None):
        parser.print_help()
        return 2
    if args.func is None:
        print(
            f"gridshift {args.cmd}: not available in this installation ({args.missing} missing)",
            file=sys.stderr,
        )
        return 2
    try:
        return int(args.func(args) or 0)
    except (CliError, ConfigError, GridshiftError) as exc:
        print(f"gridshift {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"gridshift {args.cmd}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
