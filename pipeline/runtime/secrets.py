"""Passwords in URLs (`scheme://user:PASSWORD@host`) shown as `***` wherever the pipeline writes or prints."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

# user:password@ right after a scheme's `//`; the password runs to the last @ before the host part.
# Hydra's launch lines escape the colons (`http\://user\:pw@host`).
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*\\?://[^/\s:@'\"\\]*\\?:)(?P<secret>[^\s/'\"]*)(?P<at>@)")
MASK = "***"


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}" if m["secret"] else m[0], text)


class RedactingStream:
    """A text stream that writes what it is given with passwords in URLs masked."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self._stream, name)


def guard_process() -> None:
    """Mask URL passwords in everything this process prints (the pipeline's lines, MLflow's "View run",
    Hydra's launch lines, tracebacks) and in every log record, also those Hydra writes to its log files."""
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts", False):
        return

    def redacting_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return record
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        return record

    redacting_record.redacts = True
    logging.setLogRecordFactory(redacting_record)


def redact_files(paths: Iterable[Path]) -> None:
    """Rewrite files that libraries wrote with the config in them (Hydra's .hydra/*.yaml, multirun.yaml)."""
    for path in paths:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if redact(text) != text:
                path.write_text(redact(text), encoding="utf-8")
