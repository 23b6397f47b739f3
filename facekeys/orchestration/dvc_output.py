"""What DVC's output says, for the flows: its lines as a person would see them, which stages are
stale (``dvc status --json``), which ran, which experiments, the one line that says why a
command failed, and whether that failure is worth a retry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import BinaryIO

from facekeys.errors import FacekeysError


def shown_lines(stream: BinaryIO) -> Iterator[str]:
    """The non-blank lines of a command's output as a terminal would leave them, each as soon as
    it ends: a progress bar redrawn with carriage returns gives its last state only.

    Reads bytes on purpose: a text stream would turn every carriage return into a line break
    (universal newlines), one line per redraw (a model download logged 226 of them).
    """
    for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1].rstrip()
        if line:
            yield line


def stale_stages(status_json: str) -> list[str]:
    """Stage names in ``dvc status --json`` output (``{}``: nothing is stale)."""
    try:
        status = json.loads(status_json or "{}")
    except json.JSONDecodeError:
        raise FacekeysError(f"dvc status gave no JSON: {status_json.strip()[:200]}") from None
    return sorted(k.rsplit(":", 1)[-1] for k in status)


_RUNNING = re.compile(r"Running stage '([^']+)'")
_STAGE_ERROR = re.compile(r"^stage \S+: error: ")
_DVC_ERROR = re.compile(r"^ERROR: ")


def stages_run(lines: list[str]) -> list[str]:
    """Stages DVC ran, from its ``Running stage 'x':`` lines, in order."""
    return list(dict.fromkeys(m.group(1) for line in lines if (m := _RUNNING.search(line))))


_EXPERIMENT = re.compile(r"Ran experiment\(s\): (.+)$")


def experiment_names(lines: list[str]) -> list[str]:
    """Names of the experiments ``dvc exp run`` reports it ran."""
    names: list[str] = []
    for line in lines:
        if match := _EXPERIMENT.search(line.strip()):
            names += [n.strip() for n in match.group(1).split(",") if n.strip()]
    return names


def failure_line(lines: list[str]) -> str:
    """The one line that says why a DVC command failed: the stage's own error, else DVC's."""
    for pattern in (_STAGE_ERROR, _DVC_ERROR):
        found = [line.strip() for line in lines if pattern.search(line.strip())]
        if found:
            return found[-1]
    tail = [line.strip() for line in lines if line.strip()]
    return tail[-1] if tail else "dvc failed without a message"


_TRANSIENT = re.compile(
    r"unreachable|timed? ?out|download failed|broke off|connection (refused|reset|aborted)|"
    r"temporar(y|ily)|HTTP 5\d\d|service unavailable|bad gateway|database is locked",
    re.IGNORECASE,
)


def is_transient(message: str) -> bool:
    """Whether a failure may pass on its own (a server away, a network timeout): worth a retry.
    Errors in the user's params or data are not."""
    return bool(_TRANSIENT.search(message))
