"""Headless Chromium for UI checks: render a page after its scripts ran, or take a screenshot.

Uses Debian's ``chromium`` package (installed on demand where we are root), never a browser
download. Single-page apps such as the Prefect UI (Vue) and the MLflow UI (React) need
``--virtual-time-budget`` so that their scripts and data fetches finish before the dump.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

INSTALL_LOG = Path(tempfile.gettempdir()) / "facekeys-chromium-install.log"
INSTALL_TIMEOUT_S = 600

# The machines that run these checks have no internet, and Chromium otherwise phones home
# (updates, sync, QUIC probes) and waits on it. --no-sandbox: we run as root in a container.
# --disable-dev-shm-usage: Docker's 64 MB /dev/shm crashes the renderer.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _run(cmd: list[str], timeout_s: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs ``cmd`` in its own process group, killing the whole group on timeout.

    ``subprocess.run(timeout=...)`` only kills the direct child; Chromium's renderers and
    apt's dpkg would outlive it.

    Raises:
        TimeoutError: ``cmd`` ran longer than ``timeout_s``.
    """
    with subprocess.Popen(cmd, start_new_session=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutError(f"{cmd[0]} ran longer than {timeout_s} s") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# Cached: where an install fails, one failed attempt per session is enough.
@functools.cache
def ensure_chromium() -> str | None:
    """Finds Chromium, installing Debian's ``chromium`` package with apt-get if it is missing.

    Installs only as root where apt-get exists; apt's output goes to ``INSTALL_LOG``.

    Returns:
        The path of the chromium binary, or None where it is missing and cannot be installed.
    """
    found = shutil.which("chromium")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    script = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium"
    with open(INSTALL_LOG, "w") as log, contextlib.suppress(TimeoutError):
        _run(["sh", "-c", script], INSTALL_TIMEOUT_S, stdout=log, stderr=subprocess.STDOUT)
    return shutil.which("chromium")


def _chromium(url: str, extra: list[str], wait_ms: int, timeout_s: float) -> str:
    """Runs headless Chromium on ``url`` with a fresh profile and returns its stdout.

    Raises:
        RuntimeError: Chromium is missing or exited with an error.
        TimeoutError: Chromium ran longer than ``timeout_s`` (its process group is killed).
    """
    binary = ensure_chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed and cannot be installed here")
    # A fresh profile each time: a reused one carries state between checks and triggers
    # first-run network requests of its own.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        cmd = [
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            # A budget of 0 makes Chromium hang instead of dumping at once.
            *([f"--virtual-time-budget={wait_ms}"] if wait_ms > 0 else []),
            *extra,
            url,
        ]
        result = _run(cmd, timeout_s, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"chromium exited with {result.returncode} on {url}:\n{result.stderr[-2000:]}"
        )
    return result.stdout


def render_dom(url: str, *, wait_ms: int = 8000, timeout_s: float = 90) -> str:
    """Returns the DOM of ``url`` as serialized after its scripts ran.

    Args:
        url: The page to load.
        wait_ms: Virtual time the page gets to run scripts and fetch data before the dump;
            0 dumps as soon as the page has loaded.
        timeout_s: Wall-clock limit for the whole browser run.

    Raises:
        RuntimeError: Chromium is missing or failed.
        TimeoutError: The browser ran longer than ``timeout_s``.
    """
    return _chromium(url, ["--dump-dom"], wait_ms, timeout_s)


def screenshot(
    url: str,
    path: Path,
    *,
    size: tuple[int, int] = (1400, 900),
    wait_ms: int = 8000,
    timeout_s: float = 90,
) -> Path:
    """Saves a PNG screenshot of ``url`` to ``path``.

    Args:
        url: The page to load.
        path: Where the PNG goes; missing folders are created.
        size: Window width and height in pixels.
        wait_ms: Virtual time the page gets before the screenshot.
        timeout_s: Wall-clock limit for the whole browser run.

    Returns:
        ``path``.

    Raises:
        RuntimeError: Chromium is missing, failed, or wrote no file.
        TimeoutError: The browser ran longer than ``timeout_s``.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    width, height = size
    _chromium(url, [f"--screenshot={path}", f"--window-size={width},{height}"], wait_ms, timeout_s)
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url} to {path}")
    return path


def wait_for_text(
    url: str,
    needles: list[str],
    attempts: int = 3,
    *,
    wait_ms: int = 8000,
    timeout_s: float = 90,
) -> str:
    """Renders ``url`` until every needle is in the DOM, waiting longer each attempt.

    Single-page apps fill in data from asynchronous requests, which a slow server may not answer
    within the first budget. Missing needles do not fail here: the caller asserts on the DOM.

    Args:
        url: The page to load.
        needles: Strings that must all appear in the DOM.
        attempts: How many renders at most; attempt k gets ``k * wait_ms`` of virtual time.
        wait_ms: Virtual time for the first attempt.
        timeout_s: Wall-clock limit for each browser run.

    Returns:
        The DOM of the last render.

    Raises:
        RuntimeError: Chromium is missing or failed.
        TimeoutError: A browser run took longer than ``timeout_s``.
    """
    dom = ""
    for attempt in range(1, attempts + 1):
        dom = render_dom(url, wait_ms=attempt * wait_ms, timeout_s=timeout_s)
        if all(needle in dom for needle in needles):
            break
    return dom
