"""The command line as a shell uses it."""

from __future__ import annotations

import os
import subprocess
import sys


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
