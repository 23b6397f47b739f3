"""Which MLflow store a call uses: the workspace (also from a DVC experiment's temporary copy),
the default and local store URIs, the choice between a recorded server, the environment and the
local store, and MLflow's process-wide URIs set only for the duration of one call.

Some MLflow calls (``mlflow.start_run``, ``pyfunc.load_model`` on a ``models:/`` URI) read the
process-wide URIs, and setting them also exports ``MLFLOW_TRACKING_URI`` and
``MLFLOW_REGISTRY_URI`` to every later subprocess. Left set, one store's URI leaks into the
next call in the same process (or a DVC child), which then reads or registers in the wrong
store: ``mlflow_uris`` restores them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.tracking.mlflow_errors import bound_mlflow_http, check_reachable


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


_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def mlflow_uris(tracking: str, registry: str | None = None) -> Iterator[None]:
    """Points MLflow at ``tracking`` (and ``registry``, default the same store) inside the
    block, then restores the URIs and environment variables exactly as they were."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_tracking = tracking_utils._tracking_uri
    saved_registry = registry_utils._registry_uri
    saved_environment = {name: os.environ.get(name) for name in _VARIABLES}
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry or tracking)
    try:
        yield
    finally:
        restore_mlflow_uris(saved_tracking, saved_registry, saved_environment)


def restore_mlflow_uris(
    tracking: str | None, registry: str | None, environment: dict[str, str | None]
) -> None:
    """Sets MLflow's process-wide URIs (None: unset) and its environment variables back."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    mlflow.set_tracking_uri(tracking)
    registry_utils._registry_uri = registry
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
