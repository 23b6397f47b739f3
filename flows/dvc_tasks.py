"""Prefect tasks that run DVC in the workspace for the pipeline flow: which stages are stale
and a DVC command with its output streamed line by line into the run's log. Each DVC process
gets the tracking URI the stages log and register to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from facekeys.errors import FacekeysError
from facekeys.orchestration import dvc_output


def _dvc_env(uri: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        # Every stage, also in an experiment's temporary copy, logs and registers here.
        "MLFLOW_TRACKING_URI": uri,
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
    }


@task(cache_policy=NO_CACHE)
def dvc_stale(root: Path, targets: list[str]) -> list[str]:
    """Stages DVC reports as stale: what ``dvc status --json`` prints, asked of DVC's Python API
    in this process (a second interpreter and DVC import per run cost about a second, a tenth of
    the tiny pipeline's orchestration overhead)."""
    import contextlib
    import json

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        # Targets are stage names, which DVC resolves against the working directory (as the
        # command line, run in the workspace, would).
        with contextlib.chdir(root), Repo(str(root)) as repo:
            # with_deps: a target is stale when anything it depends on is.
            status = repo.status(targets=targets or None, with_deps=bool(targets))
    except DvcException as exc:
        raise FacekeysError(
            f"dvc status: {str(exc).splitlines()[0] if str(exc) else exc}"
        ) from None
    return dvc_output.stale_stages(json.dumps(status))


@task(cache_policy=NO_CACHE)
def dvc_run(root: Path, command: list[str], uri: str) -> tuple[int, list[str]]:
    """Runs a DVC command, logging every line of its output as it comes; returns the exit
    status and the lines."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(command))
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=root,
        env=_dvc_env(uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        assert process.stdout is not None
        for line in dvc_output.shown_lines(process.stdout):
            lines.append(line)
            logger.info(line)
    return process.returncode, lines
