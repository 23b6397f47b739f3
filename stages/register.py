"""DVC stage register@<dataset>: the trained model -> a new version of the registered model
<prefix>-<dataset> in the MLflow Model Registry, @champion only if it beats the current champion
on the gate's split (register.gate_metric: the selection rows, never a reported split) beyond
the noise of a paired bootstrap; metrics/<dataset>/register.json says which and why, and
metrics/<dataset>/headline/register.json holds the decision in short (version, alias) for DVC's
metrics views."""

import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facekeys.augment.identity_split import held_out_split, identity_of
from facekeys.data.atomic_files import atomic_file, check_writable, write_json
from facekeys.data.labelled_images import load_labelled
from facekeys.errors import FacekeysError
from facekeys.evaluation.evaluate import SplitSource, evaluation_splits, score_model_on
from facekeys.evaluation.metrics import gate_metric_function, paired_bootstrap_gain
from facekeys.inference.predictor import KeypointPredictor, read_card
from facekeys.stage_runner import dataset_arg, run_stage
from facekeys.tracking.gate import (
    GATE_DATA_TAG,
    Incomparable,
    check_scored_model,
    gate_setting,
)
from facekeys.tracking.mlflow_errors import mlflow_errors
from facekeys.tracking.registered_models import logged_code_sha256, registered_model_dir
from facekeys.tracking.registry import register_version
from facekeys.tracking.runs import dvc_lock_hashes, flat_metrics, git_state, model_weights_sha256
from facekeys.tracking.stores import recorded_server, relative_store_uri, resolve_tracking_uri


def _per_dataset(section: dict[str, Any], key: str, dataset: str) -> Any:
    value = section.get(key)
    if isinstance(value, dict):
        if dataset not in value:
            raise FacekeysError(f"params.yaml: register.{key} has no entry for {dataset}")
        return value[dataset]
    return value


def split_digest(dataset: str) -> str:
    """A short hash of the held-out split settings on this data set's trained model card."""
    split = held_out_split(read_card(Path("models") / dataset))
    return hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()[:16]


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    section = params.get("register", {})
    gate = str(_per_dataset(section, "gate_metric", dataset))
    split, key = gate_setting(gate, dataset)
    metrics = Path("metrics") / dataset
    # The registry changes before these are written: a folder that cannot take them is found
    # now, not after a version was registered that no file then records.
    for name in ("register.json", "headline/register.json", "register.log"):
        check_writable(metrics / name)
    train = json.loads((metrics / "train.json").read_text(encoding="utf-8"))
    report = json.loads((metrics / "eval.json").read_text(encoding="utf-8"))
    if not train.get("model_uri") or not train.get("run_id"):
        raise FacekeysError(f"metrics/{dataset}/train.json names no logged model; rerun train")
    check_scored_model(report, train, model_weights_sha256(Path("models") / dataset), dataset)
    scored = report.get(split) or {}
    if scored.get("non_finite_points"):
        raise FacekeysError(
            f"metrics/{dataset}/eval.json: the model predicts {scored['non_finite_points']} "
            f"labelled points of {split} as NaN or infinity; not registered"
        )
    found = scored.get(key)
    if found is None:
        raise FacekeysError(f"metrics/{dataset}/eval.json has no value for {gate}")
    value = float(found)
    params_used = {k: params.get(k) for k in ("augment", "train")}
    tags = {
        "dataset": dataset,
        # The rows and the split that made them held-out: a version trained with another split
        # is never compared by its tags, only after the gate checked its card.
        GATE_DATA_TAG: f"{scored.get('data_sha256')};split:{split_digest(dataset)}",
        **git_state("."),
        **dvc_lock_hashes(".", f"augment@{dataset}"),
        "params_sha256": hashlib.sha256(
            json.dumps(params_used, sort_keys=True, default=str).encode()
        ).hexdigest(),
        **{k: f"{v:.6g}" for k, v in flat_metrics("eval", report).items()},
    }
    uri = resolve_tracking_uri(
        section.get("mlflow_required", True),
        lambda line: print(line, file=sys.stderr),
        recorded_server(train.get("tracking_uri")),
        setting="register.mlflow_required",
    )
    with mlflow_errors(uri):
        _register(dataset, section, train, report, gate, value, tags, uri)


def _register(
    dataset: str,
    section: dict[str, Any],
    train: dict[str, Any],
    report: dict[str, Any],
    gate: str,
    value: float,
    tags: dict[str, str],
    uri: str,
) -> None:
    split, _, key = gate.partition(".")
    # mlflow.pyfunc.load_model and `mlflow models serve` run the code logged with the model
    # (`facekeys predict --model models:/...` reads only its networks): its hash goes on the
    # version, so that a user of the former can check what they will run.
    tags["code_sha256"] = logged_code_sha256(uri, train["model_uri"])
    gate_data = evaluation_splits(dataset).get(split)
    own_split = held_out_split(read_card(Path("models") / dataset))
    scored = report.get(split) or {}
    rescore = (
        _rescorer(uri, gate_data, own_split, split, key, scored.get("data_sha256"))
        if gate_data is not None
        else None
    )
    record = register_version(
        uri,
        f"{section.get('model_name_prefix', 'facekeys')}-{dataset}",
        train["model_uri"],
        train["run_id"],
        gate,
        value,
        float(_per_dataset(section, "min_improvement", dataset)),
        tags,
        rescore=rescore,
        paired=_paired_comparison(uri, dataset, report, gate_data, own_split, key),
    )
    _write_outcome(dataset, record, uri)


def _rescorer(
    uri: str,
    gate_data: SplitSource,
    own_split: dict[str, Any],
    split: str,
    key: str,
    data_sha256: str | None,
) -> Callable[[str], float | Incomparable]:
    """How to score a champion again on the gate's data (see ``register_version``)."""

    def rescore(version_uri: str) -> float | Incomparable:
        # The champion was scored on other data (or with another metric): score it again
        # here, on exactly the data the new version was scored on, if it never trained on it.
        with tempfile.TemporaryDirectory() as tmp:
            folder = registered_model_dir(uri, version_uri, tmp)
            if held_out_split(read_card(folder)) != own_split:
                return Incomparable(
                    "was trained with another held-out split (augment seed, val_fraction, "
                    f"new_people_fraction), so its training rows may include these {split} "
                    "rows",
                    new_line=True,
                )
            print(f"scoring the champion {version_uri} on this {split} data", file=sys.stderr)
            metrics = score_model_on(folder, gate_data)
        if metrics.get("data_sha256") != data_sha256:
            return Incomparable("scores other labels or pixels for these rows")
        found = metrics.get(key)
        return math.inf if found is None else float(found)

    return rescore


def _paired_comparison(
    uri: str,
    dataset: str,
    report: dict[str, Any],
    gate_data: SplitSource | None,
    own_split: dict[str, Any],
    key: str,
) -> Callable[[str], dict[str, Any] | None]:
    """How to compare a champion with this model on the same images (a paired bootstrap)."""

    def paired(version_uri: str) -> dict[str, Any] | None:
        # Champion and candidate on the same images, person by person: is the gain more
        # than the noise of which faces happen to be in the split?
        metric = gate_metric_function(key, report.get("format", ""))
        if metric is None or gate_data is None:
            return None
        candidate = KeypointPredictor.from_dir(Path("models") / dataset)
        fmt = candidate.card["format"]
        data = load_labelled(
            fmt,
            gate_data.csv,
            gate_data.images_dir,
            candidate.label_pixel_offset,
            gate_data.indices,
        )
        with tempfile.TemporaryDirectory() as tmp:
            champion = KeypointPredictor.from_dir(registered_model_dir(uri, version_uri, tmp))
            if held_out_split(champion.card) != own_split:
                return None  # it may have trained on these rows: no fair comparison
            champion_points = champion.to_label_convention(champion.predict(data.images))
        # Compared in the source's label convention: each model's own offset applied.
        candidate_points = candidate.to_label_convention(candidate.predict(data.images))
        target = candidate.to_label_convention(data.points)
        groups = (
            [identity_of(n) for n in data.names] if fmt == "youtube68" else range(len(data.names))
        )
        return paired_bootstrap_gain(
            metric, champion_points, candidate_points, target, list(groups)
        )

    return paired


def _write_outcome(dataset: str, record: dict[str, Any], uri: str) -> None:
    """register.json (the decision in detail), its headline file, register.log, and the
    decision's one line on stderr."""
    line = (
        f"{record['registered_model']} version {record['version']} -> "
        f"{'@' + record['alias'] if record['alias'] else 'no alias'}: {record['reason']}"
    )
    out = Path("metrics") / dataset
    write_json(out / "register.json", record)
    write_json(
        out / "headline" / "register.json",
        {"version": record["version"], "alias": record["alias"]},
    )
    # A plain, uncached output: DVC then never restores this stage from its run cache, which
    # would bring back an old register.json that the registry has since moved past.
    with atomic_file(out / "register.log", "w", encoding="utf-8") as handle:
        handle.write(
            f"{line}\nregistry: {relative_store_uri(uri)}\nload with: {record['load_with']}\n"
        )
    print(line, file=sys.stderr)


if __name__ == "__main__":
    run_stage("register", main)
