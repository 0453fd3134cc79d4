"""A real single-node Slurm started for the test session (root only).

The bed is fully private: its own munged (own key and socket), its own slurm.conf in a
temporary directory, free ports, fake GPU device files. Two partitions on one node stand
for two regions. Daemons are stopped by pid file, never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo", "scancel")
GPUS_PER_NODE = 4
PARTITIONS = {"green": "gpu-green", "brown": "gpu-brown"}


def missing_binaries() -> list[str]:
    found = []
    for name in BINARIES:
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists():
            found.append(name)
    return found


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class SlurmBed:
    root: Path
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    ctld_port: int = field(default_factory=_free_port)
    slurmd_port: int = field(default_factory=_free_port)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.sock"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["TZ"] = "UTC"
        return env

    def pidfile(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    # ---------------------------------------------------------------------------- config

    def write_config(self) -> None:
        for sub in ("etc", "run", "log", "ctld", "spool", "dev", "munge", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "munge", 0o755)
        os.chmod(self.root / "jobs", 0o777)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))
        os.chmod(key, 0o600)
        for i in range(GPUS_PER_NODE):
            dev = self.root / "dev" / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a char device like /dev/null
        h = self.hostname
        r = self.root
        partitions = "\n".join(
            f"PartitionName={part} Nodes={h} Default={'YES' if i == 0 else 'NO'} "
            "MaxTime=INFINITE State=UP OverSubscribe=NO"
            for i, part in enumerate(PARTITIONS.values())
        )
        self.conf.write_text(
            f"""# generated for the gridshift test session
ClusterName=gsci
SlurmctldHost={h}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
SlurmdParameters=config_overrides
StateSaveLocation={r}/ctld
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={self.pidfile("slurmctld")}
SlurmdPidFile={self.pidfile("slurmd")}
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
MinJobAge=3600
MessageTimeout=5
NodeName={h} NodeAddr=127.0.0.1 CPUs=8 RealMemory=1024 Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN
{partitions}
"""
        )
        (self.root / "etc" / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={h} Name=gpu File={r}/dev/nvidia[0-{GPUS_PER_NODE - 1}]\n"
        )

    # ---------------------------------------------------------------------------- daemons

    def run(self, *argv: str, check: bool = True, timeout_s: float = 20.0) -> str:
        out = subprocess.run(
            [_binary(argv[0]), *argv[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def start_munged(self) -> None:
        m = self.root / "munge"
        self.run(
            "munged",
            f"--socket={self.munge_socket}",
            f"--key-file={m / 'munge.key'}",
            f"--pid-file={self.pidfile('munged')}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={m / 'munged.seed'}",
            "--force",
        )

    def start_slurmctld(self) -> None:
        self.run("slurmctld", "-f", str(self.conf))
        self.wait_controller()

    def start_slurmd(self) -> None:
        self.run("slurmd", "-f", str(self.conf))

    def wait_controller(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(
                [_binary("scontrol"), "ping"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if "is UP" in out.stdout:
                return
            time.sleep(0.2)
        raise RuntimeError(f"slurmctld did not come up; see {self.root}/log/slurmctld.log")

    def wait_node_idle(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).strip()
            if state and all(s.rstrip("*") in ("idle", "mix", "alloc") for s in state.split()):
                return
            if "drain" in state or "inval" in state:
                self.run(
                    "scontrol", "update", f"NodeName={self.hostname}", "State=RESUME", check=False
                )
            time.sleep(0.2)
        raise RuntimeError(f"node not ready ({state!r}); see {self.root}/log/slurmd.log")

    def start(self) -> None:
        self.write_config()
        self.start_munged()
        self.start_slurmctld()
        self.start_slurmd()
        self.wait_node_idle()

    def stop_daemon(self, daemon: str, timeout_s: float = 15.0) -> None:
        pid = _read_pid(self.pidfile(daemon))
        if pid is None or not _pid_alive(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)

    def restart_slurmctld(self) -> None:
        self.stop_daemon("slurmctld")
        self.start_slurmctld()

    def stop(self) -> None:
        # Cancel whatever is left so that no job step outlives the bed.
        if _read_pid(self.pidfile("slurmctld")):
            subprocess.run(
                [_binary("scancel"), "--full", "-u", "root"],
                env=self.env,
                capture_output=True,
                timeout=10,
                check=False,
            )
        # slurmd and slurmctld stop together (each takes a second or two); munged last.
        pids = [_read_pid(self.pidfile(d)) for d in ("slurmd", "slurmctld")]
        live = [pid for pid in pids if pid is not None and _pid_alive(pid)]
        for pid in live:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_pid_alive(pid) for pid in live):
            time.sleep(0.1)
        for pid in live:
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.stop_daemon("munged")


def new_bed() -> SlurmBed:
    root = Path(tempfile.mkdtemp(prefix="gridshift-slurm-"))
    return SlurmBed(root=root)
