"""What every command does as its process starts and ends: URL passwords masked in all it prints, SIGTERM
stopping it like Ctrl-C, the Hugging Face libraries offline when the Hub cannot be reached, and bad input or
an interrupt told in one line with its exit code (2, 130)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from urllib.parse import urlparse

from pipeline.errors import PipelineError
from pipeline.runtime import interrupts, secrets

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

OFFLINE_ENV = "HF_HUB_OFFLINE"
PROBE_TIMEOUT_S = 3.0
_PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the endpoint's host opens within `timeout` seconds."""
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def go_offline_if_unreachable() -> None:
    """Set HF_HUB_OFFLINE=1 when the Hub cannot be reached.

    Call before transformers, datasets or huggingface_hub is imported: they read the variable once, at
    import. Offline, huggingface_hub retries every file five times with backoff (about 25 s each), so an
    uncached hub model or dataset took up to a minute to fail; in offline mode a cached one still loads
    and an uncached one fails at once, with the same one-line error. A user's own setting is left alone,
    and so is a proxied network, which a direct connection cannot judge.
    """
    if OFFLINE_ENV in os.environ or any(os.environ.get(var) for var in _PROXY_ENV):
        return
    if not reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co")):  # huggingface_hub's default
        os.environ[OFFLINE_ENV] = "1"


def begin() -> None:
    """First thing in a command: before it prints or logs anything (its --help shows the default tracking
    URI, which may hold a password), and before any library can swallow an interrupt."""
    secrets.guard_process()
    interrupts.redeliver_swallowed()


def exit_code(work: Callable[[], object], again: str) -> int:
    """Run `work`: 0 when it returns; bad input is one `error:` line (2); an interrupt one line saying what
    stopped it and `again`, what to do next (130)."""
    try:
        work()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:
        print(f"interrupted ({interrupts.what(err)}): {again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def command(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object], argv: list[str] | None
) -> int:
    """A command that is not Hydra's (`pipeline.predict`, `pipeline.evaluate`): its arguments, run."""
    begin()
    interrupts.stop_on_sigterm()
    args = parser.parse_args(argv)
    return exit_code(lambda: run(args), "run the same command again")
