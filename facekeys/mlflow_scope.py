"""MLflow's process-wide tracking and registry URIs, set only for the duration of one call.

Some MLflow calls (``mlflow.start_run``, ``pyfunc.load_model`` on a ``models:/`` URI) read the
process-wide URIs, and setting them also exports ``MLFLOW_TRACKING_URI`` and
``MLFLOW_REGISTRY_URI`` to every later subprocess. Left set, one store's URI leaks into the
next call in the same process (or a DVC child), which then reads or registers in the wrong
store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
