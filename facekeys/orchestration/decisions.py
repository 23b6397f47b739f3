"""What the Prefect flows decide about a request, as plain functions: the ``orchestrate``
settings, the nightly schedule's check, the workspace's lock name, which DVC targets a request
names, which parameter overrides are valid, and whether a server answers.

Nothing here imports Prefect at module level; ``flows/`` wires these functions to Prefect
tasks, and DVC alone decides what is stale. What DVC's output says: ``dvc_output``; the data
check: ``data_check``; the report a run leaves behind: ``run_report``.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError


@dataclass(frozen=True)
class OrchestrateSettings:
    """The ``orchestrate`` section of params.yaml (read by no DVC stage).

    Attributes:
        prefect_port: Port of the local Prefect server (UI and API) on 127.0.0.1.
        mlflow_port: Port of the local MLflow tracking server on 127.0.0.1.
        nightly_cron: Cron string of the ``nightly`` deployment.
        nightly_timezone: IANA time zone the cron string is read in.
        nightly_active: Whether the nightly schedule creates runs.
        data_check_minutes: How often the data check compares the sources with their manifests.
        lock_lease_s: Lease of the workspace lock; a killed run holds it at most this long.
        on_demand_lock_wait_s: How long an on-demand run waits for a busy workspace before it
            is refused.
        retries: How often a transient failure (a server briefly away, a download timing out) is
            retried.
        retry_delays_s: Seconds before each retry (the last repeats).
        runner_poll_s: How often the serving process asks the server for new runs.
        heartbeat_s: How often a flow run tells the server it lives (Prefect's minimum: 30);
            after three missed heartbeats the server marks it Crashed.
    """

    prefect_port: int = 4200
    mlflow_port: int = 5000
    nightly_cron: str = "0 2 * * *"
    nightly_timezone: str = "UTC"
    nightly_active: bool = True
    data_check_minutes: float = 15.0
    lock_lease_s: float = 60.0
    on_demand_lock_wait_s: float = 5.0
    retries: int = 2
    retry_delays_s: tuple[float, ...] = (10.0, 60.0)
    runner_poll_s: float = 5.0
    heartbeat_s: float = 30.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> OrchestrateSettings:
        """Reads and checks the section.

        Raises:
            FacekeysError: an unknown key or a value of the wrong type, in one line.
        """
        section = params.get("orchestrate") or {}
        if not isinstance(section, dict):
            raise FacekeysError("params.yaml: orchestrate must be a mapping")
        for name in ("nightly", "data_check", "lock"):
            if not isinstance(section.get(name) or {}, dict):
                raise FacekeysError(f"params.yaml: orchestrate.{name} must be a mapping")
        nightly = section.get("nightly") or {}
        flat = {
            **{k: v for k, v in section.items() if k not in ("nightly", "data_check", "lock")},
            **{f"nightly_{k}": v for k, v in nightly.items()},
            **{f"data_check_{k}": v for k, v in (section.get("data_check") or {}).items()},
            **{f"lock_{k}": v for k, v in (section.get("lock") or {}).items()},
        }
        kwargs: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in cls.__dataclass_fields__:
                raise FacekeysError(f"params.yaml: orchestrate has no setting {key!r}")
            default = getattr(cls(), key)
            if isinstance(default, tuple):
                if not isinstance(value, list) or not all(_is_number(v) for v in value):
                    raise FacekeysError(f"params.yaml: orchestrate {key} must be a list of numbers")
                value = tuple(float(v) for v in value)
            elif not _same_kind(default, value):
                raise FacekeysError(
                    f"params.yaml: orchestrate {key} must be {_kind(default)}, got {value!r}"
                )
            kwargs[key] = value
        settings = cls(**kwargs)
        if settings.retries < 0 or not settings.retry_delays_s:
            raise FacekeysError("params.yaml: orchestrate retries >= 0 with at least one delay")
        if settings.data_check_minutes <= 0 or settings.runner_poll_s <= 0:
            raise FacekeysError("params.yaml: orchestrate data_check.minutes and runner_poll_s > 0")
        if settings.heartbeat_s < 30:
            raise FacekeysError("params.yaml: orchestrate heartbeat_s must be >= 30 (Prefect)")
        if settings.lock_lease_s < 60:
            raise FacekeysError("params.yaml: orchestrate lock lease_s must be >= 60 (Prefect)")
        return settings

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return self.retry_delays_s[min(attempt, len(self.retry_delays_s)) - 1]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _same_kind(reference: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``reference`` (an integer may stand for a number)."""
    if reference is None:
        return True
    if isinstance(reference, bool) or isinstance(value, bool):
        return isinstance(reference, bool) and isinstance(value, bool)
    if isinstance(reference, float):
        return _is_number(value)
    if isinstance(reference, int):
        return isinstance(value, int)
    if isinstance(reference, list | tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(reference))


def check_cron(cron: str, timezone: str) -> None:
    """Raises FacekeysError in one line when Prefect would not accept the nightly schedule."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except (ValidationError, ValueError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else []
        first = errors[0]["msg"] if errors else str(exc).splitlines()[0]
        raise FacekeysError(
            f"params.yaml: orchestrate.nightly cron {cron!r} / timezone {timezone!r} is not "
            f"valid: {first}"
        ) from None


def workspace_id(root: str | os.PathLike[str]) -> str:
    """A short stable id of a workspace (its real path): names its lock and its events."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]


def lock_name(root: str | os.PathLike[str]) -> str:
    """The Prefect global concurrency limit that serialises pipelines over one workspace."""
    return f"facekeys-workspace-{workspace_id(root)}"


def stage_names(root: str | os.PathLike[str]) -> list[str]:
    """Stage names of dvc.yaml (``foreach`` stages by their group name)."""
    import yaml

    path = Path(root) / "dvc.yaml"
    try:
        stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError) as exc:
        raise FacekeysError(f"{path}: cannot read the pipeline ({exc})") from None
    return list(stages)


def resolve_targets(targets: list[str] | None, stages: list[str], datasets: list[str]) -> list[str]:
    """DVC targets for a request: ``[]`` (all), a stage (``train``: every data set), a stage of
    one data set (``train@kaggle-15``) or a data set (``kaggle-15``: its every stage).

    Raises:
        FacekeysError: an unknown target, in one line that lists the known ones.
    """
    resolved: list[str] = []
    for target in targets or []:
        if not isinstance(target, str) or not target.strip():
            raise FacekeysError(f"targets: {target!r} is not a stage or data set name")
        target = target.strip()
        stage, _, dataset = target.partition("@")
        if target == "all":
            return []
        if target in datasets:
            resolved += [f"{s}@{target}" for s in stages]
        elif stage in stages and (not dataset or dataset in datasets):
            resolved.append(target)
        else:
            raise FacekeysError(
                f"targets: unknown target {target!r}; known: stages {', '.join(stages)} "
                f"(optionally @<data set>), data sets {', '.join(datasets)}, or all"
            )
    return list(dict.fromkeys(resolved))


def param_overrides(set_params: dict[str, Any] | None, params: dict[str, Any]) -> list[str]:
    """``-S key=value`` arguments of ``dvc exp run`` for ``set_params``, each checked against
    params.yaml: the key must exist and the value must have the type of the value there.

    Raises:
        FacekeysError: an unknown key or a value of the wrong type, in one line.
    """
    args: list[str] = []
    for key, value in (set_params or {}).items():
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise FacekeysError(f"set_params: unknown param {key!r} (not in params.yaml)")
            node = node[part]
        if isinstance(node, dict) and node and not isinstance(value, dict):
            raise FacekeysError(f"set_params: {key} is a section; set one of its keys")
        if not _same_kind(node, value):
            raise FacekeysError(
                f"set_params: {key} must be {_kind(node)} like {node!r}, got {value!r} "
                f"({type(value).__name__})"
            )
        # JSON is YAML: DVC reads the value with its type (30, 0.5, true, "text", [1, 2]).
        args += ["-S", f"{key}={json.dumps(value)}"]
    return args


def server_answers(url: str, timeout_s: float = 3.0) -> bool:
    """Whether an HTTP health address answers 200 within the timeout."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON file's mapping, or ``{}`` where it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
