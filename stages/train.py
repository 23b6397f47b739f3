"""DVC stage train@<dataset>: data/augmented/<dataset> -> models/<dataset>/{model.pt,model.json}
(and models/<dataset>/refine/ where the data set has refinement data), metrics/<dataset>/
train.json and train_history.csv, one MLflow run. DVC shows metrics/<dataset>/headline/train.json.
"""

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from facekeys.data.atomic_files import atomic_file, check_writable, sha256_file, write_json
from facekeys.errors import FacekeysError
from facekeys.model.checkpoints import name_partner, publish_model
from facekeys.model.settings import TrainSettings
from facekeys.model.training import train
from facekeys.model.training_log import PrefixedLogger, write_history_csv
from facekeys.stage_runner import dataset_arg, run_stage
from facekeys.tracking.mlflow_errors import check_reachable, mlflow_errors
from facekeys.tracking.runs import MlflowRun, dvc_lock_hashes, git_state, loss_plot
from facekeys.tracking.stores import (
    default_tracking_uri,
    local_artifact_root,
    local_store_uri,
    relative_store_uri,
)


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The number DVC's tables show for this stage (train.json keeps the rest): the best epoch's
    NME on the selection split, the one that chose it, of the last network trained (the
    refinement network where there is one: its crops are the whole model's last step)."""
    last = summary.get("refine") or summary
    return {"selection_nme": last.get("best_val_nme")}


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    section = params.get("train", {})
    settings = TrainSettings.from_params(section)
    mlflow_params = section.get("mlflow", {})
    data_dir = Path("data/augmented") / dataset
    refine_dir = data_dir / "refine"
    has_refine = (refine_dir / "meta.json").is_file()
    refine_settings = TrainSettings.refine_from_params(section) if has_refine else None

    # Minutes of training must not end on a folder that cannot be written.
    for path in ("metrics/{}/train.json", "metrics/{}/headline/train.json", "models/{}/model.pt"):
        check_writable(path.format(dataset))
    uri = default_tracking_uri(".")
    try:
        check_reachable(uri, setting="train.mlflow.required")
    except FacekeysError as exc:
        if mlflow_params.get("required", True):
            raise
        print(f"warning: {exc}; logging to the local store instead", file=sys.stderr)
        uri = local_store_uri()
    arrays = [Path(n) for n in ("train.npz", "val.npz")]
    arrays += [Path("refine") / n for n in arrays] if has_refine else []
    data_source = json.loads((data_dir / "meta.json").read_text()).get("data_source") or {}
    tags = {
        "dataset": dataset,
        "data.source": str(data_source.get("source")),
        "data.source_origin": str(data_source.get("origin")),
        **git_state("."),
        **dvc_lock_hashes(".", f"augment@{dataset}"),
        **{f"data.sha256.{n}": sha256_file(data_dir / n) for n in arrays},
    }
    with mlflow_errors(uri):
        _train_and_log(dataset, section, settings, refine_settings, uri, tags)


def _train_and_log(
    dataset: str,
    section: dict[str, Any],
    settings: TrainSettings,
    refine_settings: TrainSettings | None,
    uri: str,
    tags: dict[str, str],
) -> None:
    """Trains the networks into a staging folder, logs them as one MLflow run, then publishes
    them to ``models/<dataset>`` and writes the metrics."""
    data_dir = Path("data/augmented") / dataset
    model_dir, metrics_dir = Path("models") / dataset, Path("metrics") / dataset
    checkpoints = Path("checkpoints") / dataset
    run = _mlflow_run(dataset, data_dir, section, uri, tags)
    # Both networks are trained into a hidden staging folder and published together at the
    # end, so a killed stage never leaves a new first network beside an old (or no) refinement
    # network; the checkpoints go only once everything is written, so a kill in the last
    # seconds costs no retraining (finished checkpoints write the same model again).
    staging = model_dir.parent / f".{dataset}.training"
    shutil.rmtree(staging, ignore_errors=True)
    summary, history = _train_networks(
        dataset, data_dir, staging, checkpoints, settings, refine_settings, run
    )
    loss_plot(history, staging / "loss_curves.png")
    write_history_csv(metrics_dir / "train_history.csv", history)
    summary["model_uri"] = run.finish(
        summary, staging, staging / "loss_curves.png", metrics_dir / "train_history.csv"
    )
    # Where this run was logged; a store inside the project is written relative to it, so the
    # file names no machine path.
    summary["tracking_uri"] = relative_store_uri(uri)
    publish_model(staging, model_dir)
    write_json(metrics_dir / "train.json", summary)
    write_json(metrics_dir / "headline" / "train.json", headline(summary))
    shutil.rmtree(checkpoints, ignore_errors=True)
    print(_result_line(dataset, summary, uri), file=sys.stderr)


def _mlflow_run(
    dataset: str, data_dir: Path, section: dict[str, Any], uri: str, tags: dict[str, str]
) -> MlflowRun:
    """The MLflow run of this training, in the data set's experiment (a local SQLite store keeps
    its artifacts in ``<workspace>/mlartifacts``)."""
    mlflow_params = section.get("mlflow", {})
    local = uri.startswith("sqlite:")
    return MlflowRun(
        uri,
        f"{mlflow_params.get('experiment_prefix', 'facekeys')}-{dataset}",
        params={"train": section, "augment_meta": str(data_dir / "meta.json")},
        tags=tags,
        artifact_root=(local_artifact_root() if local else None),
    )


def _train_networks(
    dataset: str,
    data_dir: Path,
    staging: Path,
    checkpoints: Path,
    settings: TrainSettings,
    refine_settings: TrainSettings | None,
    run: MlflowRun,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Trains the first network, then the refinement network where there is one (or writes a
    note saying why there is none), both into ``staging``.

    Returns:
        The first network's summary (the refinement's under ``refine``) and the history of
        both, the refinement's epochs numbered on from the first's.
    """
    summary = train(
        data_dir,
        staging,
        checkpoints / "last.pt",
        settings,
        logger=run,
        keep_finished_checkpoint=True,
    )
    history = [row | {"stage": "first"} for row in summary.pop("history")]
    if refine_settings is None:
        with atomic_file(staging / "refine" / "NO_REFINEMENT.txt", "w", encoding="utf-8") as f:
            f.write(
                f"No refinement network for {dataset}: augment.refine.{dataset} is null in "
                "params.yaml. Predictions come from the first network alone.\n"
            )
        return summary, history
    # The second model re-crops around the first one's keypoints (see facekeys.inference.predictor).
    refine = train(
        data_dir / "refine",
        staging / "refine",
        checkpoints / "refine" / "last.pt",
        refine_settings,
        logger=PrefixedLogger(run, "refine.", summary["run_id"]),
        keep_finished_checkpoint=True,
    )
    name_partner(staging)
    offset = len(history)
    history += [
        row | {"epoch": row["epoch"] + offset, "stage": "refine"} for row in refine.pop("history")
    ]
    summary["refine"] = refine
    summary["train_seconds_total"] = summary["train_seconds"] + refine["train_seconds"]
    return summary, history


def _result_line(dataset: str, summary: dict[str, Any], uri: str) -> str:
    """The stage's last line: best NME (and the refinement's), speed, and where it was logged."""
    line = f"best val NME {100 * summary['best_val_nme']:.2f}% at epoch {summary['best_epoch']}"
    if "refine" in summary:
        line += (
            f"; refinement: {100 * summary['refine']['best_val_nme']:.2f}% on crops around the "
            f"labelled keypoints"
        )
    return (
        f"models/{dataset}: {line}; {summary['images_per_s']:.0f} images/s; MLflow run "
        f"{summary['run_id']} in {uri}"
    )


if __name__ == "__main__":
    run_stage("train", main)
