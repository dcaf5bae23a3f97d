"""User-facing errors: printed as one line, with no traceback, before any training starts; Hydra and
OmegaConf composition errors put on one line that names the key or option and the fix."""

from __future__ import annotations

import re

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
        parts.append(f"check the spelling ({HINT_KEYS}); prefix a new key with +")
    return "; ".join(p.rstrip(".") for p in parts if p)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__
