"""Bounded, readable MLflow calls: HTTP timeouts and retries where the environment is silent,
a quick reachability check of a tracking server, and MLflow errors as one-line messages that
name the store and the real cause."""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from facekeys.errors import FacekeysError

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
    cause = None
    if "unable to open database file" in str(exc).lower():
        cause = _unopenable_store(uri)
    return f"MLflow store {uri}: {cause or mlflow_cause(exc)}"


def _unopenable_store(uri: str) -> str | None:
    """Why SQLite cannot open a local store's database file where its folder tells: no file can
    be created in it (a read-only folder or mount: SQLite needs its journal beside the
    database); None otherwise (MLflow creates a missing folder itself)."""
    path = local_store_path(uri)
    if path is None or not path.parent.is_dir():
        return None
    folder = path.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return (
            f"the store's folder {folder} is read-only or not writable ({exc.strerror}); SQLite "
            "needs to create its journal there"
        )
    return None


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


def local_store_path(uri: str) -> Path | None:
    """The file or folder of a local MLflow store URI (``sqlite:///``, ``file:``, a plain path);
    None for a server or an in-memory database."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:///"):
        return Path(unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (or a drive letter)
        return Path(uri)
    return None
