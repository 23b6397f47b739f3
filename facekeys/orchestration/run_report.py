"""The report a pipeline run leaves behind: each data set's headline numbers read from
``metrics/<dataset>/``, the Markdown artifact comparing them before and after, and the MLflow UI
links of the runs and registered versions they came from."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from facekeys.orchestration.decisions import read_json_or_empty


def metrics_snapshot(
    root: str | os.PathLike[str], datasets: list[str], experiment: str | None = None
) -> dict[str, Any]:
    """The key numbers of each data set from ``metrics/<dataset>/*.json`` (missing ones None):
    the workspace's, or those a DVC ``experiment`` committed (its git ref under refs/exps)."""
    read = _experiment_reader(Path(root), experiment) if experiment else _workspace_reader(root)
    snapshot: dict[str, Any] = {}
    for dataset in datasets:
        folder = f"metrics/{dataset}"
        evaluation = read(f"{folder}/eval.json")
        export = read(f"{folder}/export.json")
        register = read(f"{folder}/register.json")
        train = read(f"{folder}/train.json")
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


def _workspace_reader(root: str | os.PathLike[str]):
    return lambda path: read_json_or_empty(Path(root) / path)


def _experiment_reader(root: Path, experiment: str):
    """Reads JSON files as the experiment's commit holds them, DVC-cached outputs included
    ({} where it has none): one DVC file system at the experiment (DVC resolves its name)."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    try:
        fs = DVCFileSystem(str(root), rev=experiment)
    except DvcException:
        return lambda path: {}

    def read(path: str) -> dict[str, Any]:
        try:
            return json.loads(fs.read_text(path))
        except (DvcException, OSError, ValueError):
            return {}

    return read


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
    decision and, for a failure, the one line that says why. For an experiment ``after`` holds
    the experiment's numbers (its commit's, the workspace keeps its own) and the report says
    how to list and apply it."""
    lines = [f"# {title}", "", f"**{outcome}**", ""]
    if error:
        lines += ["Error:", "", f"    {error}", ""]
    if command:
        lines += [f"Command: `{' '.join(command)}`", ""]
    lines += [f"Stages run: {', '.join(f'`{s}`' for s in stages) if stages else 'none'}", ""]
    if experiments:
        names = ", ".join(f"`{name}`" for name in experiments)
        lines += [
            f"Experiment {names}: `dvc exp show` lists its params and metrics, `dvc exp apply "
            f"{experiments[0]}` brings it into the workspace; its model is registered in the "
            "MLflow registry like any other (the version's description says why it got its "
            "alias). The workspace's own numbers did not change: \"after\" is the experiment's.",
            "",
        ]
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
