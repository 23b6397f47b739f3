"""What the Prefect flows decide, as plain functions: which DVC targets a request names, which
parameter overrides are valid, which data sources changed since their last fetch, what a
stage's failure said and whether it is worth a retry, and the report a run leaves behind.

Nothing here imports Prefect; ``flows/`` wires these functions to Prefect tasks, and DVC alone
decides what is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.source_fingerprint import fingerprints_differ, plan_fingerprint
from facekeys.source_plan import FetchSettings, plan_source

#: Event the data check emits when a data source changed since its last fetch.
DATA_CHANGED_EVENT = "facekeys.data.changed"


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


def stale_stages(status_json: str) -> list[str]:
    """Stage names in ``dvc status --json`` output (``{}``: nothing is stale)."""
    try:
        status = json.loads(status_json or "{}")
    except json.JSONDecodeError:
        raise FacekeysError(f"dvc status gave no JSON: {status_json.strip()[:200]}") from None
    return sorted(k.rsplit(":", 1)[-1] for k in status)


_RUNNING = re.compile(r"Running stage '([^']+)'")
_STAGE_ERROR = re.compile(r"^stage \S+: error: ")
_DVC_ERROR = re.compile(r"^ERROR: ")


def stages_run(lines: list[str]) -> list[str]:
    """Stages DVC ran, from its ``Running stage 'x':`` lines, in order."""
    return list(dict.fromkeys(m.group(1) for line in lines if (m := _RUNNING.search(line))))


_EXPERIMENT = re.compile(r"Ran experiment\(s\): (.+)$")


def experiment_names(lines: list[str]) -> list[str]:
    """Names of the experiments ``dvc exp run`` reports it ran."""
    names: list[str] = []
    for line in lines:
        if match := _EXPERIMENT.search(line.strip()):
            names += [n.strip() for n in match.group(1).split(",") if n.strip()]
    return names


def failure_line(lines: list[str]) -> str:
    """The one line that says why a DVC command failed: the stage's own error, else DVC's."""
    for pattern in (_STAGE_ERROR, _DVC_ERROR):
        found = [line.strip() for line in lines if pattern.search(line.strip())]
        if found:
            return found[-1]
    tail = [line.strip() for line in lines if line.strip()]
    return tail[-1] if tail else "dvc failed without a message"


_TRANSIENT = re.compile(
    r"unreachable|timed? ?out|download failed|broke off|connection (refused|reset|aborted)|"
    r"temporar(y|ily)|HTTP 5\d\d|service unavailable|bad gateway|database is locked",
    re.IGNORECASE,
)


def is_transient(message: str) -> bool:
    """Whether a failure may pass on its own (a server away, a network timeout): worth a retry.
    Errors in the user's params or data are not."""
    return bool(_TRANSIENT.search(message))


@dataclass
class SourceCheck:
    """One data set's source compared with what its last fetch recorded."""

    dataset: str
    source: str
    changed: bool | None  # None: cannot tell (a URL without validators, an old manifest)
    reason: str
    fingerprint: dict[str, Any] = field(default_factory=dict)


def check_sources(
    root: str | os.PathLike[str], params: dict[str, Any], timeout_s: float = 10.0
) -> list[SourceCheck]:
    """Compares each data set's configured source (``FACEKEYS_SOURCE_*`` first, as ``fetch``
    does) with what its last fetch recorded (``data/raw/<dataset>.source.json``, beside the
    manifest), reading only sizes, times and headers.

    Raises:
        FacekeysError: a source is unreachable or missing (one line naming it).
    """
    checks = []
    fetch = params.get("fetch") or {}
    settings = FetchSettings.from_params(fetch)
    for dataset in params.get("datasets") or []:
        plan = plan_source(dataset, fetch.get("sources") or {}, settings)
        source = plan.source
        current = plan_fingerprint(plan, timeout_s)
        record_path = Path(root) / "data" / "raw" / f"{dataset}.source.json"
        if not record_path.is_file():
            checks.append(SourceCheck(dataset, source, True, "never fetched", current))
            continue
        record = _read_json(record_path)
        if record.get("source") != source:
            reason = f"source moved: {record.get('source')} -> {source}"
            checks.append(SourceCheck(dataset, source, True, reason, current))
            continue
        differ = fingerprints_differ(record.get("fingerprint"), current)
        reason = {
            True: "source changed since the last fetch",
            False: "unchanged",
            None: "cannot tell (no fingerprint recorded or none offered by the server)",
        }[differ]
        checks.append(SourceCheck(dataset, source, differ, reason, current))
    return checks


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def metrics_snapshot(root: str | os.PathLike[str], datasets: list[str]) -> dict[str, Any]:
    """The key numbers of each data set from ``metrics/<dataset>/*.json`` (missing ones None)."""
    snapshot: dict[str, Any] = {}
    for dataset in datasets:
        folder = Path(root) / "metrics" / dataset
        evaluation = _read_json(folder / "eval.json")
        export = _read_json(folder / "export.json")
        register = _read_json(folder / "register.json")
        train = _read_json(folder / "train.json")
        test = evaluation.get("test") or {}
        new_people = evaluation.get("new_people") or {}
        snapshot[dataset] = {
            "test_nme": test.get("nme_mean"),
            "new_people_nme": new_people.get("nme_mean"),
            "kaggle_rmse_px": test.get("kaggle_rmse_96px"),
            "int8_ms_per_face": export.get("int8_ms_per_face"),
            "version": register.get("version"),
            "alias": register.get("alias"),
            "registered_model": register.get("registered_model"),
            "decision": register.get("reason"),
            "run_id": train.get("run_id"),
            "tracking_uri": train.get("tracking_uri"),
        }
    return snapshot


def _number(value: Any, scale: float = 1.0, unit: str = "") -> str:
    return "-" if value is None else f"{value * scale:.3f}{unit}"


_METRIC_ROWS = (
    ("test NME", "test_nme", 100.0, " %"),
    ("new-people NME", "new_people_nme", 100.0, " %"),
    ("Kaggle RMSE (96 px)", "kaggle_rmse_px", 1.0, " px"),
    ("int8 ms per face", "int8_ms_per_face", 1.0, " ms"),
)


def report_markdown(
    *,
    title: str,
    outcome: str,
    stages: list[str],
    before: dict[str, Any],
    after: dict[str, Any],
    command: list[str] | None = None,
    error: str | None = None,
    experiments: list[str] | None = None,
) -> str:
    """The run's Prefect artifact: what ran, the numbers before and after, the registry's
    decision and, for a failure, the one line that says why. An experiment's numbers live in
    DVC's experiment, not in the workspace: its report names it instead of a table."""
    lines = [f"# {title}", "", f"**{outcome}**", ""]
    if error:
        lines += ["Error:", "", f"    {error}", ""]
    if command:
        lines += [f"Command: `{' '.join(command)}`", ""]
    lines += [f"Stages run: {', '.join(f'`{s}`' for s in stages) if stages else 'none'}", ""]
    if experiments:
        names = ", ".join(f"`{name}`" for name in experiments)
        return "\n".join(
            [
                *lines,
                f"Experiment {names}: `dvc exp show` lists its params and metrics, `dvc exp apply "
                f"{experiments[0]}` brings it into the workspace; its model is registered in the "
                "MLflow registry like any other (the version's description says why it got its "
                "alias). The workspace's own numbers did not change.",
                "",
            ]
        )
    for dataset in after or before:
        old, new = before.get(dataset, {}), after.get(dataset, {})
        lines += [f"## {dataset}", "", "| metric | before | after |", "|---|---|---|"]
        for label, key, scale, unit in _METRIC_ROWS:
            if old.get(key) is None and new.get(key) is None:
                continue
            lines.append(
                f"| {label} | {_number(old.get(key), scale, unit)} | "
                f"{_number(new.get(key), scale, unit)} |"
            )
        if new.get("version") is not None:
            changed = (old.get("version"), old.get("alias")) != (new["version"], new["alias"])
            lines += [
                "",
                f"Registry: {new.get('registered_model')} version {new['version']} "
                f"-> @{new.get('alias')}{'' if changed else ' (unchanged by this run)'}: "
                f"{new.get('decision')}",
            ]
        lines.append("")
    return "\n".join(lines)


def mlflow_links(tracking_uri: str, snapshot: dict[str, Any]) -> dict[str, str]:
    """MLflow UI addresses of each data set's training run and registered version, where the
    tracking URI is a server ({key: url}; keys are artifact keys: lowercase, digits, dashes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return {}
    base = tracking_uri.rstrip("/")
    links: dict[str, str] = {}
    for dataset, numbers in snapshot.items():
        slug = re.sub(r"[^a-z0-9-]", "-", dataset.lower())
        run_id = numbers.get("run_id")
        if run_id:
            experiment = _experiment_of(base, run_id)
            if experiment is not None:
                links[f"mlflow-run-{slug}"] = f"{base}/#/experiments/{experiment}/runs/{run_id}"
        if numbers.get("registered_model") and numbers.get("version") is not None:
            name = urllib.parse.quote(str(numbers["registered_model"]))
            links[f"mlflow-model-{slug}"] = f"{base}/#/models/{name}/versions/{numbers['version']}"
    return links


def _experiment_of(base: str, run_id: str) -> str | None:
    url = f"{base}/api/2.0/mlflow/runs/get?run_id={urllib.parse.quote(run_id)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["run"]["info"]["experiment_id"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None


def server_answers(url: str, timeout_s: float = 3.0) -> bool:
    """Whether an HTTP health address answers 200 within the timeout."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def already_announced(
    state_file: Path, changed: dict[str, dict[str, Any]], max_age_s: float = 3600.0
) -> bool:
    """Whether the data check announced exactly these fingerprints less than ``max_age_s`` ago
    (the triggered run may still wait for the workspace), so it does not emit one per check;
    an older announcement is repeated, in case the run it triggered failed."""
    import time

    state = _read_json(state_file)
    fresh = time.time() - float(state.get("at", 0)) < max_age_s
    return fresh and state.get("announced") == changed


def remember_announced(state_file: Path, changed: dict[str, dict[str, Any]]) -> None:
    """Records the fingerprints an event was emitted for, and when."""
    import time

    from facekeys.atomic import write_json

    write_json(state_file, {"announced": changed, "at": time.time()})
