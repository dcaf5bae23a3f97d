"""User-facing errors: printed as one line, with no traceback, before any training starts; Hydra and
OmegaConf composition errors put on one line that names the key or option and the fix."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable

from hydra.errors import MissingConfigException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

_MISSING_OPTION = re.compile(r"Could not find '([^/']+)/([^']+)'")
HINT_KEYS = "`python -m pipeline --cfg job` prints every key"


class PipelineError(Exception):
    """A problem the user can fix (bad input or config); the message names the key or file and the fix."""


def did_you_mean(name: str, options: Iterable[object]) -> str:
    """` (did you mean 'X'?)` for the option `name` almost is (letter case, surrounding spaces, a typo), or ''."""
    options = [str(o) for o in options]
    same = [o for o in options if o.strip().casefold() == name.strip().casefold()]
    close = same or difflib.get_close_matches(name, options, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def one_line(err: BaseException) -> str:
    """What Hydra says over several lines (message, cause, full_key, object_type), on one line."""
    if isinstance(err, MissingConfigException) and (found := _MISSING_OPTION.search(str(err))):
        group, option = found.groups()
        options = ", ".join(o for o in (err.options or []) if o != "schema")
        return f"{group}={option}: no such option; choose one of {options}"
    parts = [_first_line(err)]
    cause = err.__cause__
    if cause is not None and _first_line(cause) not in parts[0]:
        parts.append(_first_line(cause))
    root = cause if isinstance(cause, OmegaConfBaseException) else err
    if isinstance(root, MissingMandatoryValue):
        parts.append(f"set it: {getattr(root, 'full_key', 'KEY')}=VALUE")
    elif isinstance(root, (ConfigKeyError, ConfigAttributeError)):
        parts.append(f"check the spelling{_close_key(root)} ({HINT_KEYS}); prefix a new key with +")
    return "; ".join(p.rstrip(".") for p in parts if p)


def _close_key(err: OmegaConfBaseException) -> str:
    """The schema's key a misspelt one almost is: ` (did you mean 'dataset.max_length'?)`."""
    fields = dataclasses.fields(err.object_type) if dataclasses.is_dataclass(err.object_type) else ()
    prefix = str(err.full_key).rpartition(".")[0]
    return did_you_mean(str(err.full_key), [".".join(filter(None, (prefix, f.name))) for f in fields])


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__
