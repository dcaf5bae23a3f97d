"""Passwords in URLs (`scheme://user:PASSWORD@host`) shown as `***` wherever the pipeline writes or prints."""
from __future__ import annotations

import re
from typing import Any

# user:password@ right after a scheme's `//`; the password runs to the last @ before the host part.
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@'\"]*:)(?P<secret>[^\s/'\"]*)(?P<at>@)")
MASK = "***"


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}" if m["secret"] else m[0], text)


def redact_all(value: Any) -> Any:
    """Every string in a nest of dicts and lists, redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(v) for v in value)
    return value
