"""DVC stage train@<dataset>: data/augmented/<dataset> -> models/<dataset>/{model.pt,model.json}
(and models/<dataset>/refine/ where the data set has refinement data), metrics/<dataset>/
train.json and train_history.csv, one MLflow run."""

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from facekeys.atomic import atomic_file, sha256_file, write_json
from facekeys.errors import FacekeysError
from facekeys.stagekit import dataset_arg, run_stage
from facekeys.tracking import (
    MlflowRun,
    check_reachable,
    default_tracking_uri,
    dvc_lock_hashes,
    git_state,
    loss_plot,
)
from facekeys.train import PrefixedLogger, TrainSettings, train, write_history_csv


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    section = params.get("train", {})
    settings = TrainSettings.from_params(section)
    mlflow_params = section.get("mlflow", {})
    data_dir = Path("data/augmented") / dataset
    refine_dir = data_dir / "refine"
    has_refine = (refine_dir / "meta.json").is_file()
    refine_settings = TrainSettings.refine_from_params(section) if has_refine else None
    model_dir, metrics_dir = Path("models") / dataset, Path("metrics") / dataset
    checkpoints = Path("checkpoints") / dataset

    uri = default_tracking_uri(".")
    try:
        check_reachable(uri)
    except FacekeysError as exc:
        if mlflow_params.get("required", True):
            raise
        print(f"warning: {exc}; logging to the local store instead", file=sys.stderr)
        uri = f"sqlite:///{Path('mlflow.db').resolve()}"
    local = uri.startswith("sqlite:")
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
    run = MlflowRun(
        uri,
        f"{mlflow_params.get('experiment_prefix', 'facekeys')}-{dataset}",
        params={"train": section, "augment_meta": str(data_dir / "meta.json")},
        tags=tags,
        artifact_root=(Path("mlartifacts").resolve().as_uri() if local else None),
    )
    summary = train(
        data_dir,
        model_dir,
        checkpoints / "last.pt",
        settings,
        logger=run,
        keep_finished_checkpoint=has_refine,
    )
    history = [row | {"stage": "first"} for row in summary.pop("history")]
    # A refinement network left from an earlier run outside DVC must never be picked up.
    shutil.rmtree(model_dir / "refine", ignore_errors=True)
    if refine_settings is not None:
        # The second model re-crops around the first one's keypoints (see facekeys.predict).
        refine = train(
            refine_dir,
            model_dir / "refine",
            checkpoints / "refine" / "last.pt",
            refine_settings,
            logger=PrefixedLogger(run, "refine.", summary["run_id"]),
        )
        offset = len(history)
        history += [
            row | {"epoch": row["epoch"] + offset, "stage": "refine"}
            for row in refine.pop("history")
        ]
        summary["refine"] = refine
        summary["train_seconds_total"] = summary["train_seconds"] + refine["train_seconds"]
        shutil.rmtree(checkpoints, ignore_errors=True)
    else:
        with atomic_file(model_dir / "refine" / "NO_REFINEMENT.txt", "w", encoding="utf-8") as f:
            f.write(
                f"No refinement network for {dataset}: augment.refine.{dataset} is null in "
                "params.yaml. Predictions come from the first network alone.\n"
            )
    loss_plot(history, model_dir / "loss_curves.png")
    write_history_csv(metrics_dir / "train_history.csv", history)
    summary["model_uri"] = run.finish(
        summary, model_dir, model_dir / "loss_curves.png", metrics_dir / "train_history.csv"
    )
    # Where this run was logged; a store inside the project is written relative to it, so the
    # file names no machine path.
    summary["tracking_uri"] = uri.replace(f"sqlite:///{Path.cwd().resolve()}/", "sqlite:///")
    write_json(metrics_dir / "train.json", summary)
    line = f"best val NME {100 * summary['best_val_nme']:.2f}% at epoch {summary['best_epoch']}"
    if "refine" in summary:
        line += (
            f"; refinement: {100 * summary['refine']['best_val_nme']:.2f}% on crops around the "
            f"labelled keypoints"
        )
    print(
        f"models/{dataset}: {line}; {summary['images_per_s']:.0f} images/s; MLflow run "
        f"{summary['run_id']} in {uri}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_stage("train", main)
