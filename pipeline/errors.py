"""User-facing errors: printed as one line, with no traceback, before any training starts."""


class PipelineError(Exception):
    """A problem the user can fix (bad input or config); the message names the key or file and the fix."""
