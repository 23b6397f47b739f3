"""MLflow tracking for training runs: one run per training (kept across a resume), explicit run
ids through ``MlflowClient`` (the fluent API is not thread-safe), the logged pyfunc model, and
what runs and versions are tagged with (weights hash, git and DVC state, flat metrics).

Bounded calls and one-line errors are ``facekeys.tracking.mlflow_errors``; which store a call
uses is ``facekeys.tracking.stores``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from facekeys.data.atomic_files import atomic_file, pid_alive, sha256_file
from facekeys.errors import FacekeysError
from facekeys.evaluation.plots import figure_png
from facekeys.model.training_log import EpochLogger
from facekeys.tracking.mlflow_errors import bound_mlflow_http, mlflow_cause


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
            if pid_alive(int(pid)):
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
    input example: encoded images in, keypoints in image pixels out
    (facekeys.tracking.pyfunc_model)."""
    import json
    import shutil
    import tempfile

    import cv2
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from facekeys.inference.predictor import prediction_columns
    from facekeys.tracking.stores import mlflow_uris

    card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    columns = prediction_columns(card["format"])
    signature = ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("double", c) for c in columns]),
    )
    size = card["input"]["size"]
    example_image = np.full((size, size), 128, np.uint8)
    example = pd.DataFrame({"image": [cv2.imencode(".png", example_image)[1].tobytes()] * 2})
    package = Path(__file__).resolve().parents[1]
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
                python_model=str(package / "tracking" / "pyfunc_model.py"),
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
