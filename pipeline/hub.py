"""Hub reachability: without a route to the Hugging Face Hub, run its libraries in their offline mode."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

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
