"""Real services for the tests and benchmarks: throwaway PostgreSQL databases on
127.0.0.1:5432 and an `mlflow server` subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

POSTGRES = "postgres@127.0.0.1:5432"
# One epoch per trial, so that several worker processes finish within a minute or two on 2 cores.
ONE_EPOCH_SPACE = """
num_train_epochs: {type: int, low: 1, high: 1}
per_device_train_batch_size: {type: categorical, choices: [16, 32]}
learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
"""


def free_port() -> int:
    """A loopback port nothing listens on (until something binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(sql: str) -> None:
    with psycopg.connect(f"postgresql://{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new database, dropped afterwards; yields its SQLAlchemy URL (psycopg 3 driver)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{POSTGRES}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str, artifacts: Path, log: Path, timeout: float = 120, port: int | None = None
) -> Iterator[str]:
    """`mlflow server` with `backend_uri` and proxied artifacts in `artifacts`; yields its URL."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    with open(log, "a") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, log, timeout)
        yield url
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    """The server and its uvicorn workers (its own process group); killed if not gone in a few seconds."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited {server.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} not healthy after {timeout}s: {log.read_text()[-2000:]}")


SLURM_CONF = """\
ClusterName=pipeline
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.socket
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait={kill_wait}
MinJobAge=600
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(frozen=True)
class Slurm:
    """A running one-node SLURM: its config file (SLURM_CONF for sbatch, squeue, scontrol)."""

    conf: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        """A SLURM command's output (sbatch, squeue, scontrol, scancel); its error raises."""
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
        return done.stdout


@contextlib.contextmanager
def slurm_cluster(directory: Path, cpus: int = 8, kill_wait: int = 60, timeout: float = 60) -> Iterator[Slurm]:
    """A real one-node SLURM (Debian's slurm-wlm and munge) in `directory`: munged on its own socket,
    slurmctld and slurmd as this user's subprocesses, stopped by PID afterwards. `cpus` may exceed the
    machine's: jobs of one CPU each then run side by side (SlurmdParameters=config_overrides)."""
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (directory / sub).mkdir(exist_ok=True)
    key = directory / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    os.chmod(directory, 0o755)  # munged refuses a socket directory others may write
    host = socket.gethostname().split(".")[0]
    conf = directory / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=host, dir=directory, ctld_port=free_port(), d_port=free_port(), cpus=cpus, kill_wait=kill_wait
        )
    )
    slurm, started = Slurm(conf), []
    try:
        munge = [
            "munged", "--force", f"--socket={directory}/munge.socket", f"--key-file={key}",
            f"--pid-file={directory}/munged.pid", f"--log-file={directory}/munged.log",
            f"--seed-file={directory}/munged.seed",
        ]  # fmt: skip
        subprocess.run(munge, check=True, capture_output=True, timeout=30)  # forks; its PID file says where
        started.append(directory / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=slurm.env(), check=True, capture_output=True, timeout=30)
            started.append(directory / f"{daemon}.pid")
        _wait_idle(slurm, host, timeout, directory)
        yield slurm
    finally:
        for pid_file in reversed(started):
            _kill_pid_file(pid_file)


def _wait_idle(slurm: Slurm, host: str, timeout: float, directory: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if slurm.run("sinfo", "-h", "-n", host, "-o", "%t").strip() == "idle":
                return
        time.sleep(0.5)
    logs = "".join(
        (directory / log).read_text()[-1500:] for log in ("slurmctld.log", "slurmd.log") if (directory / log).is_file()
    )
    raise RuntimeError(f"SLURM node {host} not idle after {timeout}s: {logs}")


def _kill_pid_file(pid_file: Path, grace: float = 10) -> None:
    """SIGTERM to the daemon a PID file names, SIGKILL if it is still there after `grace` seconds."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
