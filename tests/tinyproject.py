"""A tiny copy of the project on generated data: the whole DVC pipeline runs in seconds.

Used by the pipeline, flow and orchestration tests and by ``bench/bench_orchestrate.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import (
    HEADER68,
    KAGGLE_HEADER,
    REPO,
    face_points_68,
    kaggle_row,
    png_bytes,
    row68,
    write_csv,
)


def make_sources(root: Path) -> dict[str, str]:
    """Tiny data sets in both formats; returns the FACEKEYS_SOURCE_* variables naming them."""
    yt = root / "yt"
    for split, csv_name in (("training", "training"), ("test", "test")):
        (yt / split).mkdir(parents=True)
        names = [f"{split}_person{i}_00.jpg" for i in range(4)]
        for name in names:
            (yt / split / name).write_bytes(png_bytes())
        write_csv(
            yt / f"{csv_name}_frames_keypoints.csv",
            HEADER68,
            [row68(n, face_points_68()) for n in names],
        )
    kaggle = root / "kaggle"
    kaggle.mkdir()
    for name in ("training", "test"):
        rows = []
        for k in range(3):
            row = kaggle_row(missing_optional=k == 0)
            row["Image"] = " ".join(str((i + k) % 256) for i in range(9216))
            rows.append([row[c] for c in KAGGLE_HEADER])
        csv_path = write_csv(root / f"{name}.csv", KAGGLE_HEADER, rows)
        with zipfile.ZipFile(kaggle / f"{name}.zip", "w") as zf:
            zf.write(csv_path, f"{name}.csv")
    return {
        "FACEKEYS_SOURCE_YOUTUBE_FACES_68": str(yt),
        "FACEKEYS_SOURCE_KAGGLE_15": str(kaggle),
    }


def tiny_params(edit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The shipped params.yaml with a training run of seconds on the tiny data."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=2, batch_size=4, width=8)
    params["train"]["refine"]["epochs"] = 2
    params["augment"]["image_size"]["youtube-faces-68"] = 32
    params["augment"]["refine"]["youtube-faces-68"]["image_size"] = 32
    if edit:
        edit(params)
    return params


def make_project(
    tmp_path: Path,
    edit: Callable[[dict[str, Any]], None] | None = None,
    *,
    tracking_uri: str | None = None,
    commit: bool = False,
) -> tuple[Path, dict[str, str]]:
    """A git + DVC workspace in ``tmp_path/project`` with tiny params and sources.

    Returns:
        The workspace and the environment to run DVC, the flows or the services in.
    """
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params(edit), sort_keys=False))
    for name in ("stages", "facekeys", "flows"):
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    (work / ".gitignore").write_text(
        "\n".join(["/data/", "/models/", "/mlflow.db", "/mlartifacts/", "/.orchestrate/", ""])
    )
    env = {
        **os.environ,
        **make_sources(tmp_path),
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": tracking_uri or f"sqlite:///{work / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        # The copy's own package, not whichever checkout the environment has installed.
        "PYTHONPATH": str(work),
    }
    if tracking_uri == "":
        del env["MLFLOW_TRACKING_URI"]
    # A local identity: `dvc exp run` commits, and a fresh machine may have no global one.
    commands = [
        ["git", "init", "-q"],
        ["git", "config", "user.name", "facekeys tests"],
        ["git", "config", "user.email", "tests@facekeys.invalid"],
        [sys.executable, "-m", "dvc", "init", "-q"],
    ]
    if commit:
        commands += [["git", "add", "-A"], ["git", "commit", "-qm", "tiny project"]]
    for cmd in commands:
        subprocess.run(cmd, cwd=work, check=True, env=env, capture_output=True)
    return work, env


def free_port() -> int:
    """A TCP port nobody listens on at the moment, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _python_module(
    module: str, cwd: Path, args: tuple[str, ...], env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def orchestrate(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Runs ``scripts/orchestrate``'s command (``python -m facekeys.orchestration.services``)
    in ``cwd``."""
    return _python_module("facekeys.orchestration.services", cwd, args, env, timeout)


def exported(stdout: str) -> dict[str, str]:
    """The variables of the ``export K=V`` lines that ``start`` and ``env`` print."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            found[key] = value
    return found


def dvc(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Runs ``dvc ARGS`` in ``work`` with this interpreter's DVC."""
    return _python_module("dvc", work, args, env, 600)


def kill_when(
    command: list[str], work: Path, env: dict[str, str], marker: Path, timeout: float = 300
) -> str:
    """Runs ``command`` in ``work`` and kills it with SIGKILL as soon as ``marker`` exists (or
    when it ended by itself, or after ``timeout`` seconds).

    Returns:
        Its stderr, for the message of a test whose kill point was never reached.
    """
    process = subprocess.Popen(command, cwd=work, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    return process.communicate()[1]
