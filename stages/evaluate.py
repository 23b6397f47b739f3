"""DVC stage evaluate@<dataset>: models/<dataset> scored once on each held-out split: the
data set's test split, the new people (identities in no other split, where the data set names
people) and the selection rows (val.npz, which chose the epoch: optimistic) ->
metrics/<dataset>/eval.json, eval_ced.csv, eval_landmarks.csv, eval_errors.png,
eval_gallery.png; the metrics and plots are also added to the model's MLflow training run.
The few headline numbers (test and new-people NME, test RMSE) also go to
metrics/<dataset>/headline/evaluate.json, the file DVC shows as this stage's metrics."""

import json
import sys
from pathlib import Path
from typing import Any

from facekeys.data.atomic_files import check_writable, write_json
from facekeys.data.dataset_layout import DATASETS
from facekeys.evaluation.evaluate import evaluate_model, evaluation_splits
from facekeys.stage_runner import dataset_arg, run_stage
from facekeys.tracking.mlflow_errors import mlflow_errors
from facekeys.tracking.runs import flat_metrics, log_to_run, model_weights_sha256
from facekeys.tracking.stores import recorded_server, resolve_tracking_uri


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``dvc metrics show`` and ``dvc exp show`` compare runs by (the rest stays in
    eval.json, which DVC keeps as a plain output: hundreds of keys make both tables unreadable).

    Args:
        report: the evaluation report (eval.json's content).

    Returns:
        Short keys: ``test_nme``, ``rmse_px`` (on the test split) and, where the data set names
        people, ``new_nme``.
    """
    test = report.get("test") or {}
    numbers = {"test_nme": test.get("nme_mean"), "rmse_px": test.get("rmse_px")}
    if "new_people" in report:
        numbers["new_nme"] = (report.get("new_people") or {}).get("nme_mean")
    return numbers


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    section = params.get("evaluate", {})
    augmented, metrics = Path("data/augmented") / dataset, Path("metrics") / dataset
    out = {
        "eval_json": metrics / "eval.json",
        "ced_csv": metrics / "eval_ced.csv",
        "landmarks_csv": metrics / "eval_landmarks.csv",
        "plot_png": metrics / "eval_errors.png",
        "gallery_png": metrics / "eval_gallery.png",
    }
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    # The evaluation must not end on an output that cannot be written or a server that is
    # not there: both are found now, before the model is run on every split.
    for path in [*out.values(), metrics / "headline" / "evaluate.json"]:
        check_writable(path)
    trained = json.loads((metrics / "train.json").read_text(encoding="utf-8"))
    run_id = trained.get("run_id")
    uri = None
    if run_id and section.get("log_to_mlflow", True):
        uri = resolve_tracking_uri(
            section.get("mlflow_required", True),
            log,
            recorded_server(trained.get("tracking_uri")),
            setting="evaluate.mlflow_required",
        )
    report = evaluate_model(
        Path("models") / dataset,
        list(evaluation_splits(dataset).values()),
        augmented / "train.npz",
        out,
        log=log,
        model_identity={
            "run_id": run_id,
            "model_uri": trained.get("model_uri"),
            "weights_sha256": model_weights_sha256(Path("models") / dataset),
        },
        test_people=DATASETS[dataset].test_people,
    )
    write_json(metrics / "headline" / "evaluate.json", headline(report))
    if uri is not None:
        numbers = flat_metrics("eval", {k: v for k, v in report.items() if isinstance(v, dict)})
        with mlflow_errors(uri):
            log_to_run(uri, run_id, numbers, [p for p in out.values() if p.is_file()])


if __name__ == "__main__":
    run_stage("evaluate", main)
