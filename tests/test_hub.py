"""Offline detection: without a route to the Hub, a hub model or dataset fails at once, not after retries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from devtools.commands import TINY, pipeline_env
from devtools.services import free_port
from pipeline.runtime import startup


def closed_port_url() -> str:
    """An http URL on localhost where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


def test_reachable_tells_a_listening_port_from_a_closed_one():
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert startup.reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not startup.reachable(closed_port_url())
    assert not startup.reachable("https://no-such-host.invalid")


def test_an_unreachable_hub_switches_on_offline_mode(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "")  # so that teardown restores the original, set or unset
        monkeypatch.delenv(var)
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    startup.go_offline_if_unreachable()
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_users_setting_and_a_proxy_are_left_alone(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    startup.go_offline_if_unreachable()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # only the proxy can tell
    startup.go_offline_if_unreachable()
    assert "HF_HUB_OFFLINE" not in os.environ


def test_real_process_fails_at_once_when_the_hub_is_unreachable(tmp_path):
    """Before, huggingface_hub retried each file five times (about 25 s a file) before the one-line error.

    verbose=true keeps huggingface_hub's warnings, so each retry would print a 'Retrying in' line."""
    env = pipeline_env(HF_ENDPOINT=closed_port_url())
    del env["HF_HUB_OFFLINE"]  # the user's case: nothing says offline
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *TINY, "model=bert_base", "verbose=true"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "Hub is unreachable" in errors[0] and "model=minilm" in errors[0]
    assert "Retrying" not in result.stderr and "thrown while requesting" not in result.stderr
