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
