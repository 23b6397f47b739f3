"""The background processes of the local services, by pid file: recording a started process
with its kernel start time, reading back only that very process (never a reused pid), and
ending a process together with every process group it started."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat), None when gone or
    a zombie: with the pid it names one process, even after the pid was reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def write_pid(path: Path, pid: int) -> None:
    """Records a process as ``pid start-time``."""
    path.write_text(f"{pid} {_start_time(pid) or ''}\n")


def read_pid(path: Path) -> int | None:
    """The process id in ``path`` when that very process is alive (a stale file is removed)."""
    try:
        pid_text, _, started = path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = _start_time(pid)
    if now is None or (started and now != started):
        path.unlink(missing_ok=True)
        return None
    return pid


def end_process_groups(pid: int, grace_s: float) -> None:
    """Ends the process group of ``pid`` and every group its descendants started: SIGTERM, then
    SIGKILL to whatever still lives after ``grace_s`` seconds."""
    # Prefect starts each flow run in a process group of its own: end those with it.
    groups = [pid, *_descendant_groups(pid)]
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
        time.sleep(0.2)
    for group in groups:
        if _group_alive(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, state) of every process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            found.append((int(stat.parent.name), int(fields[1]), int(fields[2]), fields[0]))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _descendant_groups(pid: int) -> list[int]:
    """Process groups of ``pid``'s descendants that differ from its own."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for child, parent, _, _ in processes:
        children.setdefault(parent, []).append(child)
    group_of = {p: g for p, _, g, _ in processes}
    seen, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return sorted({group_of[p] for p in seen} - {group_of.get(pid, pid)})


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is alive (zombies do not count)."""
    return any(group == pgid and state != "Z" for _, _, group, state in _processes())
