"""MLflow tracking for training runs: one run per training (kept across a resume), explicit run
ids through ``MlflowClient`` (the fluent API is not thread-safe), fast failure when a tracking
server cannot be reached."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facekeys.atomic import atomic_file, sha256_file
from facekeys.errors import FacekeysError
from facekeys.evaluation_plots import figure_png
from facekeys.train import EpochLogger


def workspace_root(folder: str | os.PathLike[str] = ".") -> Path:
    """The DVC workspace a folder belongs to: itself, or, inside the temporary copy of a DVC
    experiment (``<workspace>/.dvc/tmp/exps/<run>/``, what ``dvc exp run --temp`` and queued
    experiments run in), the workspace that made the copy."""
    path = Path(folder).resolve()
    parts = path.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


def default_tracking_uri(project_root: str | os.PathLike[str]) -> str:
    """``MLFLOW_TRACKING_URI``, else the SQLite store ``mlflow.db`` of the workspace (also from
    an experiment's temporary copy, whose own store DVC would delete with it)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return local_store_uri(project_root)


def local_store_uri(project_root: str | os.PathLike[str] = ".") -> str:
    """The workspace's own SQLite store, ``<workspace>/mlflow.db``."""
    return f"sqlite:///{workspace_root(project_root) / 'mlflow.db'}"


def local_artifact_root(project_root: str | os.PathLike[str] = ".") -> str:
    """Where the local store keeps artifacts: ``<workspace>/mlartifacts``."""
    return (workspace_root(project_root) / "mlartifacts").as_uri()


def relative_store_uri(uri: str, project_root: str | os.PathLike[str] = ".") -> str:
    """A store inside the workspace written relative to it (``sqlite:///mlflow.db``), so that
    files in git name no machine path; other URIs unchanged."""
    return uri.replace(f"sqlite:///{workspace_root(project_root)}/", "sqlite:///")


# Every MLflow HTTP call is bounded by MLflow's own settings; these defaults apply where the
# environment does not set them (a server that accepts connections but never answers would
# otherwise hold a stage for MLflow's 120 s timeout times its 7 retries).
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def bound_mlflow_http() -> None:
    """Applies ``MLFLOW_HTTP_DEFAULTS`` (and no telemetry) where the environment is silent."""
    for key, value in {**MLFLOW_HTTP_DEFAULTS, "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
        os.environ.setdefault(key, value)


def check_reachable(
    uri: str, timeout_s: float = 3.0, setting: str = "train.mlflow.required"
) -> None:
    """Raises FacekeysError at once when an http(s) tracking server does not answer; the
    message names ``setting``, the key that lets the caller log locally instead."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FacekeysError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it, fix "
            f"MLFLOW_TRACKING_URI, or set {setting}: false to log locally"
        ) from None


def mlflow_failure(uri: str, exc: BaseException) -> str | None:
    """One line for an error from MLflow (or the HTTP or database layer under it) that names
    the store and the real cause; None when ``exc`` is not such an error."""
    module = type(exc).__module__
    if not module.startswith(("mlflow", "requests", "urllib3", "sqlalchemy", "sqlite3")):
        return None
    return f"MLflow store {uri}: {mlflow_cause(exc)}"


def mlflow_cause(exc: BaseException) -> str:
    """The real cause of an MLflow error in a few words (one line): a locked or read-only
    store, a server that hangs or stopped, else the error's first line."""
    lowered = f"{type(exc).__name__}: {exc}".lower()
    if "database is locked" in lowered:
        cause = "the store is locked by another process (database is locked); try again"
    elif "readonly database" in lowered or "read-only file system" in lowered:
        cause = "the store is read-only (attempt to write a readonly database)"
    elif "unable to open database file" in lowered:
        cause = "the store's database file cannot be opened (missing folder or permissions)"
    elif "timed out" in lowered or "timeout" in lowered:
        cause = (
            f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '120')} s after "
            f"{os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '7')} retries (the server "
            "accepts connections but hangs; MLFLOW_HTTP_REQUEST_TIMEOUT and "
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES bound the wait)"
        )
    elif "max retries exceeded" in lowered or "connection refused" in lowered:
        cause = "the server stopped answering (connection refused or reset)"
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        cause = lines[0] if lines else type(exc).__name__
    return cause


@contextlib.contextmanager
def mlflow_errors(uri: str) -> Iterator[None]:
    """Turns errors from MLflow calls inside the block into one-line FacekeysErrors."""
    try:
        yield
    except FacekeysError:
        raise
    except Exception as exc:
        line = mlflow_failure(uri, exc)
        if line is None:
            raise
        raise FacekeysError(line) from None


def model_weights_sha256(model_dir: str | os.PathLike[str]) -> str:
    """One hash over a model folder's weights and cards (both networks where there are two)."""
    import hashlib

    digest = hashlib.sha256()
    folder = Path(model_dir)
    for name in ("model.pt", "model.json", "refine/model.pt", "refine/model.json"):
        path = folder / name
        if path.is_file():
            digest.update(f"{name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def git_state(root: str | os.PathLike[str]) -> dict[str, str]:
    """Commit and whether the work tree differs from it ('unknown' outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def dvc_lock_hashes(root: str | os.PathLike[str], stage: str) -> dict[str, str]:
    """md5 of every dependency and output DVC recorded for ``stage`` in dvc.lock."""
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.is_file():
        return {}
    data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    entry = data.get("stages", {}).get(stage, {})
    hashes = {}
    for kind in ("deps", "outs"):
        for item in entry.get(kind, []):
            if "md5" in item:
                hashes[f"dvc.{item['path']}"] = item["md5"]
    return hashes


# Which process of which machine owns a training run (to end the runs of killed processes).
HOST_TAG, PID_TAG = "facekeys.host", "facekeys.pid"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)


class MlflowRun(EpochLogger):
    """Logs one training to MLflow: params and tags at start, metrics per epoch, then the model."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        params: dict[str, Any],
        tags: dict[str, str],
        artifact_root: str | None = None,
    ) -> None:
        bound_mlflow_http()
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_root
            )
        else:
            self.experiment_id = found.experiment_id
            served = (found.artifact_location or "").startswith("mlflow-artifacts:")
            if served and not uri.startswith(("http://", "https://")):
                # Found before training, not after it: this store's artifacts go through a
                # server (the experiment was made by `scripts/orchestrate`'s MLflow server).
                raise FacekeysError(
                    f"MLflow experiment {experiment!r} in {uri} keeps its artifacts on an MLflow "
                    "server (mlflow-artifacts:/); start it (scripts/orchestrate start) and set "
                    "MLFLOW_TRACKING_URI to its address (scripts/orchestrate env)"
                )
        self.params = params
        self.tags = tags
        self.run_id: str | None = None

    def start(self, resumed_run_id: str | None) -> str | None:
        self.end_dead_runs(keep=resumed_run_id)
        if resumed_run_id:
            try:
                self.client.get_run(resumed_run_id)
                self.run_id = resumed_run_id
                self.client.set_tag(self.run_id, "resumed", "true")
                self.client.set_tag(self.run_id, PID_TAG, str(os.getpid()))
                return self.run_id
            except Exception:  # the store was reset: start a new run
                pass
        owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
        run = self.client.create_run(self.experiment_id, tags={**self.tags, **owner})
        self.run_id = run.info.run_id
        flat: dict[str, str] = {}
        _flatten("", self.params, flat)
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        return self.run_id

    def end_dead_runs(self, keep: str | None = None) -> list[str]:
        """Marks ``KILLED`` the runs of this experiment left ``RUNNING`` by a training process
        of this machine that no longer exists (a kill -9 never ends its run); ``keep`` (the run
        being resumed) is left as it is. Returns the run ids it ended."""
        ended = []
        host = socket.gethostname()
        running = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'"
        )
        for found in running:
            tags = found.data.tags
            pid = tags.get(PID_TAG, "")
            if found.info.run_id == keep or tags.get(HOST_TAG) != host or not pid.isdigit():
                continue
            if _process_alive(int(pid)):
                continue
            self.client.set_tag(found.info.run_id, "ended_by", "its process was gone")
            self.client.set_terminated(found.info.run_id, status="KILLED")
            ended.append(found.info.run_id)
        return ended

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, summary: dict[str, Any], model_dir: Path, plot: Path, history: Path) -> str:
        """Logs final metrics, the plot, history and model card, and the model itself.

        Returns:
            The logged model's URI (what the register stage registers).
        """
        from mlflow.entities import Metric

        now = 0
        final = {
            k: float(v)
            for k, v in summary.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.client.log_batch(
            self.run_id, metrics=[Metric(f"final.{k}", v, now, 0) for k, v in final.items()]
        )
        for path in (plot, history, model_dir / "model.json"):
            self.client.log_artifact(self.run_id, str(path))
        info = log_pyfunc_model(self.uri, self.run_id, model_dir)
        self.client.set_terminated(self.run_id)
        return str(info.model_uri)


def log_pyfunc_model(uri: str, run_id: str, model_dir: Path) -> Any:
    """Logs the model (from code; the model folder as an artifact) with a signature and an
    input example: encoded images in, keypoints in image pixels out (facekeys.mlflow_model)."""
    import json
    import shutil
    import tempfile

    import cv2
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from facekeys.mlflow_scope import mlflow_uris
    from facekeys.predict import prediction_columns

    card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    columns = prediction_columns(card["format"])
    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("double", c) for c in columns]),
    )
    size = card["input"]["size"]
    example_image = np.full((size, size), 128, np.uint8)
    example = pd.DataFrame({"image": [cv2.imencode(".png", example_image)[1].tobytes()] * 2})
    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        # Only the networks: the folder may also hold exports and plots from other stages.
        bundle = Path(tmp) / "model"
        bundle.mkdir()
        for name in ("model.pt", "model.json"):
            shutil.copy2(model_dir / name, bundle / name)
        if (model_dir / "refine" / "model.pt").is_file():
            (bundle / "refine").mkdir()
            for name in ("model.pt", "model.json"):
                shutil.copy2(model_dir / "refine" / name, bundle / "refine" / name)
        with mlflow_uris(uri), mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=str(package / "mlflow_model.py"),
                artifacts={"model": str(bundle)},
                code_paths=[str(package)],
                signature=signature,
                input_example=example,
                # Explicit requirements: inferring them costs 8-13 s per model.
                pip_requirements=_requirements(),
            )


def _requirements() -> list[str]:
    from importlib.metadata import version

    pins = []
    for name in ("torch", "numpy", "pandas", "mlflow", "pyyaml", "opencv-python-headless"):
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except Exception:
            pins.append(name)
    return pins


def loss_plot(history: list[dict[str, Any]], path: Path) -> None:
    """Loss curves and validation NME per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    stages = list(dict.fromkeys(h.get("stage", "first") for h in history))
    for k, stage in enumerate(stages):
        rows = [h for h in history if h.get("stage", "first") == stage]
        epochs = [h["epoch"] for h in rows]
        suffix = "" if len(stages) == 1 else f" ({stage})"
        left.plot(epochs, [h["train_loss"] for h in rows], f"C{2 * k}-", label="train" + suffix)
        left.plot(epochs, [h["val_loss"] for h in rows], f"C{2 * k}--", label="val" + suffix)
        right.plot(epochs, [100 * h["val_nme"] for h in rows], f"C{2 * k + 1}", label=stage)
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.set_yscale("log")
    left.legend()
    if len(stages) > 1:
        right.legend(title="model (refine: on crops around labelled points)")
    right.set_xlabel("epoch")
    right.set_ylabel("val NME (% of outer-eye distance)")
    right.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        handle.write(figure_png(fig))


def recorded_server(uri: str | None) -> str | None:
    """The store training logged to (train.json's ``tracking_uri``), when it is a server; a local
    store path is that machine's own and is found again from MLFLOW_TRACKING_URI or the project
    default."""
    return uri if uri and uri.startswith(("http://", "https://")) else None


def resolve_tracking_uri(
    required: bool, log: Any = None, recorded: str | None = None, setting: str = ""
) -> str:
    """The tracking URI to use: ``recorded`` (the store training logged to, from train.json), else
    ``MLFLOW_TRACKING_URI`` (or the project store), checked within 3 s; an unreachable server is
    an error naming ``setting`` (the caller's ``mlflow_required`` key), or, when not
    ``required``, the local store."""
    bound_mlflow_http()
    uri = recorded or default_tracking_uri(".")
    try:
        check_reachable(uri, setting=setting or "train.mlflow.required")
    except FacekeysError as exc:
        if required:
            raise
        if log:
            log(f"warning: {exc}; logging to the local store instead")
        uri = local_store_uri()
    return uri


def log_to_run(uri: str, run_id: str, metrics: dict[str, float], artifacts: list[Path]) -> None:
    """Adds metrics (step 0) and artifact files to an existing run (the training run)."""
    import time

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    bound_mlflow_http()
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())]
    try:
        for start in range(0, len(items), 500):
            client.log_batch(run_id, metrics=items[start : start + 500])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
    except MlflowException as exc:
        raise FacekeysError(
            f"MLflow {uri}: cannot log to run {run_id}: {mlflow_cause(exc)}"
        ) from None


def flat_metrics(prefix: str, value: Any) -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b.c`` keys (lists and None skipped)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, inner in value.items():
            out.update(flat_metrics(f"{prefix}.{key}" if prefix else str(key), inner))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out
