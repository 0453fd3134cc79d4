"""Supervisor for one local job: `python -m gridshift.adapters.local_runner RUN_DIR -- ARGV...`.

It runs in the job's own process group (the adapter starts it in a new session), starts the
command with stdout/stderr going to files in RUN_DIR, and records, atomically:

- `pid`: its own pid, which is also the process group id of the job;
- `exit.json`: the command's exit code when it ends (128+N when killed by signal N).

Because the outcome is written to disk by this supervisor, not collected by the agent, an
agent that crashes and restarts still learns how a job ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(
            "usage: python -m gridshift.adapters.local_runner RUN_DIR -- ARGV...", file=sys.stderr
        )
        return 2
    run_dir = Path(argv[0])
    command = argv[2:]
    spec = json.loads((run_dir / "launch.json").read_text(encoding="utf-8"))
    write_atomic(run_dir / "pid", str(os.getpid()))

    # SIGTERM reaches the whole group (the command included); the supervisor outlives the
    # command so that it can record the exit code.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    env = dict(os.environ)
    env.update(spec.get("env", {}))
    with (
        open(run_dir / "stdout.log", "ab") as out,
        open(run_dir / "stderr.log", "ab") as err,
    ):
        try:
            child = subprocess.Popen(
                command,
                cwd=spec.get("workdir") or None,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=_default_signals,
            )
        except OSError as exc:
            err.write(f"gridshift: cannot start {command[0]!r}: {exc}\n".encode())
            write_atomic(run_dir / "exit.json", json.dumps({"exit_code": 127, "error": str(exc)}))
            return 127
        write_atomic(run_dir / "child_pid", str(child.pid))
        rc = child.wait()
    exit_code = rc if rc >= 0 else 128 - rc
    write_atomic(run_dir / "exit.json", json.dumps({"exit_code": exit_code}))
    return 0


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
