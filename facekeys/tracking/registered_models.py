"""Model versions in the MLflow registry, apart from the gate: creating the registered model and
a version, finding the version that already holds a run's model, downloading a version's model
folder and hashing the code logged with a model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.tracking.stores import mlflow_uris


def ensure_registered_model(client: Any, name: str) -> None:
    """Creates the registered model ``name`` where it does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="facekeys keypoint model; aliases champion/challenger"
        )


def create_version(
    client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str
) -> Any:
    """Creates a version of ``name`` from a logged model; the new ModelVersion."""
    # A tracking server refuses a logged model's URI (models:/m-<id>) as the source unless the
    # request names the model too; a local store accepts either.
    logged_model = (
        model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    )
    # MLflow resolves the models:/ source through the process-wide URIs, not the client's.
    with mlflow_uris(client.tracking_uri):
        return client.create_model_version(
            name, model_uri, run_id=run_id, model_id=logged_model, tags=tags,
            description=description,
        )  # fmt: skip


def version_of(
    client: Any, name: str, model_uri: str, run_id: str, scored: dict[str, str]
) -> str | None:
    """The version that already holds this run's logged model scored exactly so (``scored``:
    gate metric and value tags), if any: what a rerun of an interrupted registration finds."""
    logged_model = model_uri.removeprefix("models:/")
    for found in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        same_model = found.source == model_uri or getattr(found, "model_id", None) == logged_model
        tags = found.tags or {}
        if same_model and all(tags.get(k) == v for k, v in scored.items()):
            return str(found.version)
    return None


def registered_model_dir(uri: str, version_uri: str, dest: str | os.PathLike[str]) -> Path:
    """Downloads a registered version's model folder (weights and cards) into ``dest``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    # The registry named here, not a process-wide one that another caller may have set.
    name, _, version = version_uri.removeprefix("models:/").rpartition("/")
    location = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_download_uri(
        name, version
    )
    root = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(dest), tracking_uri=uri
        )
    )
    found = [p.parent for p in root.rglob("model.json") if p.parent.name == "model"]
    if not found:
        raise FacekeysError(f"{version_uri}: no model folder among its artifacts")
    return found[0]


def logged_code_sha256(uri: str, model_uri: str) -> str:
    """A hash of the code logged with a model (``*.py`` among its artifacts), recorded on its
    version so that a user can check what they trust.

    ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` run that code (MLflow's models from
    code); ``facekeys predict --model models:/...`` never does: it reads only the logged networks
    with this installation's code (``facekeys.tracking.model_specs``).
    """
    import hashlib
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    # A models:/m-<id> URI is resolved through the process-wide tracking and registry URIs,
    # which otherwise default to an mlflow.db in the current folder (another store inside a DVC
    # experiment's temporary copy).
    with mlflow_uris(uri), tempfile.TemporaryDirectory() as tmp:
        try:
            root = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=model_uri, dst_path=tmp, tracking_uri=uri
                )
            )
        except (MlflowException, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FacekeysError(f"{model_uri}: cannot read its logged code: {reason}") from None
        digest = hashlib.sha256()
        files = sorted(p for p in root.rglob("*.py") if p.is_file())
        if not files:
            raise FacekeysError(f"{model_uri}: no code among its artifacts")
        for path in files:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()
