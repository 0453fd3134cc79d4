"""The command line as a shell uses it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gridshift.scheduler.cli import build_parser


def test_a_reader_that_goes_away_stops_the_command_quietly(shared_carbon):
    # `gridshift simulate ... | head -1`: the pipe is closed before the command writes to it
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "gridshift.scheduler.cli", "simulate", "de"),
                *("--data-dir", str(shared_carbon), "--days", "3", "--quiet", "--no-oracle"),
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://127.0.0.1:8787"),
        ({"GRIDSHIFT_API__PORT": "9000"}, "http://127.0.0.1:9000"),
        (
            {"GRIDSHIFT_API__HOST": "0.0.0.0", "GRIDSHIFT_API__PORT": "9000"},
            "http://127.0.0.1:9000",
        ),
        ({"GRIDSHIFT_API__HOST": "::1"}, "http://[::1]:8787"),
        (
            {"GRIDSHIFT_API_URL": "http://gpu-box:8787", "GRIDSHIFT_API__PORT": "9000"},
            "http://gpu-box:8787",
        ),
    ],
)
def test_the_client_finds_the_agent_where_the_same_environment_put_it(monkeypatch, env, url):
    for name in ("GRIDSHIFT_API_URL", "GRIDSHIFT_API__HOST", "GRIDSHIFT_API__PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert build_parser().parse_args(["list"]).api == url


def test_show_is_explain_under_another_name():
    from gridshift.scheduler.cli import cmd_explain

    for name in ("explain", "show"):
        args = build_parser().parse_args([name, "j-1"])
        assert args.func is cmd_explain and args.job_id == "j-1"
    assert "explain (show)" in build_parser().format_help()
