"""Every directory a command will write, checked by trying before anything trains or is recorded: one
`error:` line naming the key, the path and why, instead of an OSError from deep inside a library later."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.runtime import sqlite


def check_directory(key: str, directory: str | Path, where: str | None = None) -> None:
    """`directory` can be created (where it is missing) and written: tried inside a directory of its own,
    made in the nearest existing parent and removed, so the check leaves nothing behind and two workers
    checking at the same instant cannot disturb each other. `where`: what the error names, if not `key=directory`."""
    path = Path(directory).expanduser()
    where = where or f"{key}={directory}"
    try:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
    except OSError as err:  # a name longer than the filesystem allows
        raise PipelineError(f"{where}: cannot be created ({_reason(err)}); choose another path") from None
    if existing is None:  # a relative path below the working directory, which exists: only on a vanished one
        raise PipelineError(f"{where}: the working directory is gone; run from an existing directory")
    if not existing.is_dir():
        raise PipelineError(f"{where}: {existing} is a file, not a directory; choose another path")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".pipeline-write-check-", dir=existing))
    except OSError as err:
        raise PipelineError(f"{where}: cannot write in {existing} ({_reason(err)}); choose another path") from None
    try:
        if path != existing:
            (probe / path.relative_to(existing)).mkdir(parents=True)  # the missing part: names too long, say
    except OSError as err:
        raise PipelineError(f"{where}: cannot be created ({_reason(err)}); choose another path") from None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def check_database(key: str, url: str) -> None:
    """A `sqlite:///PATH` store: its directory writable, and PATH a file it can write (other URLs: a server's)."""
    path = sqlite.path_of(url)
    if path is None:
        return
    if path.is_dir():
        raise PipelineError(f"{key}={url}: {path} is a directory; name a database file, e.g. {path}/store.db")
    check_directory(key, path.parent)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise PipelineError(f"{key}={url}: {path} cannot be written (its permissions); choose another file")


def _reason(err: OSError) -> str:
    return (err.strerror or type(err).__name__).lower()
