"""Loading a predictor from what a user names: a trained model folder, an export folder, an
exported ``.onnx`` file or an MLflow model URI (``facekeys predict --model``)."""

from __future__ import annotations

import os
from pathlib import Path

from facekeys.inference.predictor import KeypointPredictor


def load_any_model(spec: str) -> KeypointPredictor:
    """A predictor from a trained model folder, an export folder, an exported ``.onnx`` file, or
    an MLflow model URI (``models:/NAME@ALIAS``, ``runs:/RUN/model``) in the tracking store of
    ``MLFLOW_TRACKING_URI`` (default: the project's ``mlflow.db``).

    Raises:
        FacekeysError: ``spec`` is none of those.
    """
    from facekeys.errors import FacekeysError

    if spec.startswith(("models:/", "runs:/")):
        return _load_registered(spec)
    path = Path(spec)
    if path.is_file() and path.suffix == ".onnx":
        from facekeys.inference.exported_runtimes import load_exported

        runtime = "onnx_int8" if path.name.endswith(".int8.onnx") else "onnx"
        return load_exported(path.parent, runtime)
    if (path / "model.pt").is_file() and (path / "model.json").is_file():
        return KeypointPredictor.from_dir(path)
    if (path / "model.json").is_file() and any(path.glob("*.onnx")):
        from facekeys.inference.exported_runtimes import load_exported

        return load_exported(path, "onnx")
    raise FacekeysError(
        f"{spec}: not a model (a folder with model.pt and model.json, an export folder, or "
        "an .onnx file)"
    )


def _load_registered(uri: str) -> KeypointPredictor:
    """The predictor inside a logged facekeys MLflow model (same networks, same path)."""
    from facekeys.errors import FacekeysError
    from facekeys.tracking.mlflow_errors import bound_mlflow_http, local_store_path, mlflow_cause
    from facekeys.tracking.stores import default_tracking_uri

    tracking = default_tracking_uri(".")
    registry = os.environ.get("MLFLOW_REGISTRY_URI", tracking)
    for store in dict.fromkeys((tracking, registry)):
        # MLflow creates a missing local store (an empty mlflow.db in the current folder) and
        # then reports the model as not found; say what is missing instead, creating nothing.
        local = local_store_path(store)
        if local is not None and not local.exists():
            raise FacekeysError(
                f"{uri}: no MLflow store at {local} (run in the project folder, or set "
                "MLFLOW_TRACKING_URI)"
            )
    # A server that accepts connections but never answers fails within the bound instead of
    # MLflow's own 120 s per try; no retries, as one user waits on one command.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    bound_mlflow_http()
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    from facekeys.tracking.stores import mlflow_uris

    # Only the logged networks are read (weights_only), with this installation's code: the code
    # logged beside them is never run here, so models logged by older versions of facekeys (or
    # with another package layout) load the same way.
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with mlflow_uris(tracking, registry):
                root = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            cause = mlflow_cause(exc)
            raise FacekeysError(f"{uri}: cannot load from {tracking}: {cause}") from None
        networks = _logged_networks(root)
        if networks is None:
            raise FacekeysError(f"{uri}: not a facekeys keypoint model")
        return KeypointPredictor.from_dir(networks)


def _logged_networks(root: Path) -> Path | None:
    """The model folder (model.pt, model.json, refine/) among a logged pyfunc model's artifacts,
    as its MLmodel file names it."""
    import yaml

    try:
        mlmodel = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8"))
        relative = mlmodel["flavors"]["python_function"]["artifacts"]["model"]["path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    folder = (root / str(relative)).resolve()
    inside = folder.is_relative_to(root.resolve())
    return folder if inside and (folder / "model.pt").is_file() else None
