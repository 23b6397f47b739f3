"""User-facing errors: one line, naming the file and the problem, never a traceback."""

from __future__ import annotations

import errno
import os


class FacekeysError(Exception):
    """An error caused by input or configuration, reported to the user as one line."""


class DataUnusableError(FacekeysError):
    """A data set (or one of its files) cannot be used by the pipeline."""


class OutputError(FacekeysError):
    """An output file or folder cannot be written (read-only, full disk, not a folder, ...)."""


# Causes that can only come from writing; for the others (permission denied, ...) the line names
# the file and the cause without guessing whether it was being read or written.
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: ``<file>: <cause>`` (both files of a failed rename).

    Args:
        exc: The error as the operating system reported it.

    Returns:
        E.g. ``metrics/x/eval.json: cannot write: No space left on device``; just the cause where
        the error names no file.
    """
    if exc.strerror:
        verb = "cannot write: " if exc.errno in _WRITE_ERRNOS else ""
        cause = f"{verb}{exc.strerror}"
    else:  # raised with a message of its own, not by the operating system
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if exc.filename is None:
        return cause
    name = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        name += f" -> {os.fsdecode(exc.filename2)}"
    return f"{name}: {cause}"
