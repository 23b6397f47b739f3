"""The evaluate stage's work: which splits are scored, and scoring a model folder and a
mean-shape baseline on them into eval.json, CSV files and plots (in original image pixels).

The metrics themselves are in ``facekeys.evaluation.metrics``, reading labelled images in
``facekeys.data.labelled_images`` and the pictures in ``facekeys.evaluation.plots``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facekeys.data.dataset_layout import DATASETS
from facekeys.data.labelled_images import LabelledImages, labelled_sha256, load_labelled
from facekeys.data.labelled_splits import load_npz
from facekeys.evaluation.metrics import (
    OUTER_EYE_CORNERS,
    ced_curve,
    finite_or_none,
    nme_per_image,
    score,
)
from facekeys.evaluation.plots import draw_gallery, error_plots


def mean_shape(train_npz: str | os.PathLike[str]) -> np.ndarray:
    """The mean training shape in first-model input pixels, over plain (un-augmented) crops."""
    train = load_npz(train_npz)
    plain = train["copy"] == 0
    weight = train["mask"][plain][..., None]
    total = (train["points"][plain] * weight).sum(0)
    return (total / np.maximum(weight.sum(0), 1)).astype(np.float64)


@dataclass
class SplitSource:
    """Where one evaluated split comes from."""

    label: str  # a key of SPLIT_ROLES
    csv: Path
    images_dir: Path | None
    indices: np.ndarray | None = None  # rows of the CSV to use (validation rows of training)


# What each scored split of eval.json is, for readers of eval.json, MLflow and the README.
SPLIT_ROLES = {
    "selection": "selection (val.npz): early stopping, epoch choice, int8 checks and the "
    "registry gate read it, so its numbers are optimistic",
    "new_people": "reported: people in neither training nor selection, read by no choice: "
    "the estimate for new faces",
    "test": "reported: the data set's own test split, read by no choice",
}


def evaluation_splits(dataset: str, root: str | os.PathLike[str] = ".") -> dict[str, SplitSource]:
    """The splits the evaluate stage scores and the gate may compare on, by their eval.json
    name: ``test``, ``selection`` (the rows of ``val.npz``) and, where the data set names people,
    ``new_people`` (the rows of ``new_people.npz``)."""
    root = Path(root)
    layout = DATASETS[dataset]
    raw, validated = root / "data/raw" / dataset, root / "data/validated" / dataset
    augmented = root / "data/augmented" / dataset

    def source(label: str, split: str, indices: np.ndarray | None = None) -> SplitSource:
        images = layout.splits[split].images
        return SplitSource(
            label, validated / split / "valid.csv", raw / images if images else None, indices
        )

    found = {"test": source("test", "test")}
    for label, npz in (("selection", "val.npz"), ("new_people", "new_people.npz")):
        rows = load_npz(augmented / npz)["source_index"] if (augmented / npz).is_file() else []
        if len(rows):
            found[label] = source(label, "training", np.asarray(rows))
    return found


def score_model_on(model_dir: str | os.PathLike[str], split: SplitSource) -> dict[str, Any]:
    """One split's metrics for a model folder, as ``evaluate_model`` computes them (without the
    baseline, files or plots): what the registry gate needs to score a champion again."""
    from facekeys.inference.predictor import KeypointPredictor

    predictor = KeypointPredictor.from_dir(model_dir)
    fmt_name = predictor.card["format"]
    data = load_labelled(
        fmt_name, split.csv, split.images_dir, predictor.label_pixel_offset, split.indices
    )
    metrics = score(predictor.predict(data.images), data.points, fmt_name)
    if fmt_name == "kaggle15":
        metrics["kaggle_rmse_96px"] = metrics["rmse_px"]
    metrics["data_sha256"] = labelled_sha256(data)
    return metrics


def evaluate_model(
    model_dir: str | os.PathLike[str],
    splits: list[SplitSource],
    train_npz: str | os.PathLike[str],
    out: dict[str, Path],
    log: Any = None,
    model_identity: dict[str, Any] | None = None,
    test_people: str | None = None,
) -> dict[str, Any]:
    """Scores a model folder and a mean-shape baseline on each split.

    Predictions go through ``KeypointPredictor.predict`` (the path of ``facekeys predict``),
    the whole image as the face box, never reading labels before scoring.

    Args:
        out: Paths for ``eval_json``, ``ced_csv``, ``landmarks_csv``, ``plot_png``,
            ``gallery_png``; each written atomically.
        model_identity: Which model this is (MLflow run, logged model, weights hash), recorded
            as ``model`` so that ``register`` can refuse a score that belongs to another.
        test_people: Whether the test split's people are also in training, in words
            (``facekeys.data.dataset_layout.DatasetLayout.test_people``), recorded as
            ``test_people``.

    Returns:
        The content of ``eval.json``.
    """
    from facekeys.inference.predictor import KeypointPredictor

    log = log or (lambda line: None)
    predictor = KeypointPredictor.from_dir(model_dir)
    fmt_name = predictor.card["format"]
    shape = mean_shape(train_npz)
    results: dict[str, dict[str, Any]] = {}
    gallery = None
    for split in splits:
        split_gallery = _score_split(predictor, split, shape, results, log)
        gallery = split_gallery if split_gallery is not None else gallery
    report = {
        "format": fmt_name,
        "model": model_identity,
        "normaliser": "outer eye corners (subject's right, left): "
        + ", ".join(predictor.keypoint_names[i] for i in OUTER_EYE_CORNERS[fmt_name]),
        "refinement_model": predictor.refine is not None,
        "splits": {split.label: SPLIT_ROLES.get(split.label, "") for split in splits},
        **({"test_people": test_people} if test_people else {}),
        **{label: r["metrics"] for label, r in results.items()},
    }
    _write_outputs(out, report, results, predictor.keypoint_names, gallery)
    return report


def _score_split(
    predictor: Any,
    split: SplitSource,
    shape: np.ndarray,
    results: dict[str, dict[str, Any]],
    log: Any,
) -> np.ndarray | None:
    """Scores the model and its mean-shape baseline on one split into ``results`` (metrics and
    CED curve per label) and logs a line; returns the gallery where the split is ``test``."""
    fmt_name = predictor.card["format"]
    data = load_labelled(
        fmt_name, split.csv, split.images_dir, predictor.label_pixel_offset, split.indices
    )
    data_hash = labelled_sha256(data)
    pred = predictor.predict(data.images)
    baseline = _mean_shape_baseline(predictor, data, shape)
    gallery = None
    for label, points in (
        (split.label, pred),
        (f"{split.label}_mean_shape_baseline", baseline),
    ):
        metrics = score(points, data.points, fmt_name)
        metrics["data_sha256"] = data_hash
        nme = nme_per_image(points, data.points, OUTER_EYE_CORNERS[fmt_name])
        if fmt_name == "kaggle15":
            metrics.update(_kaggle_metrics(points, data.points, metrics))
        results[label] = {"metrics": metrics, "ced": ced_curve(nme)}
        if label == "test":
            gallery = draw_gallery(data.images, points, data.points, nme, data.names)
    log(
        f"{split.label}: {len(pred)} images, NME {_pct(results[split.label])} "
        f"(mean-shape baseline {_pct(results[split.label + '_mean_shape_baseline'])})"
    )
    return gallery


def _mean_shape_baseline(predictor: Any, data: LabelledImages, shape: np.ndarray) -> np.ndarray:
    """The mean training shape placed in each image through the first network's crop."""
    from facekeys.data.crop_geometry import apply_to_points

    return np.stack([
        apply_to_points(np.linalg.inv(predictor.first.crop_matrix(im.shape, None)), shape)
        for im in data.images
    ]) if data.images else np.zeros_like(data.points)  # fmt: skip


def _kaggle_metrics(
    points: np.ndarray, target: np.ndarray, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The Kaggle-only metrics: NME over the eye centres and Kaggle's own RMSE."""
    # Kaggle rows often lack the corners; the eye centres are always labelled.
    centres = nme_per_image(points, target, (1, 0))
    centres = centres[~np.isnan(centres)]
    return {
        "nme_eye_centres_mean": finite_or_none(centres.mean()) if len(centres) else None,
        # The images are Kaggle's 96x96 crops, so this is Kaggle's own metric.
        "kaggle_rmse_96px": metrics["rmse_px"],
    }


def _write_outputs(
    out: dict[str, Path],
    report: dict[str, Any],
    results: dict[str, dict[str, Any]],
    keypoint_names: list[str],
    gallery: np.ndarray | None,
) -> None:
    """Writes eval.json, the CED and per-landmark CSV files, the plots and the gallery."""
    import cv2

    from facekeys.data.atomic_files import atomic_file, write_json

    write_json(out["eval_json"], report)
    with atomic_file(out["ced_csv"], "w", encoding="utf-8") as handle:
        handle.write("split,nme_percent,share\n")
        for label, r in results.items():
            for p in r["ced"]:
                handle.write(f"{label},{100 * p['nme']:.3f},{p['share']:.5f}\n")
    with atomic_file(out["landmarks_csv"], "w", encoding="utf-8") as handle:
        handle.write("landmark,name,split,nme_percent\n")
        for label, r in results.items():
            if "baseline" in label:
                continue
            for j, value in enumerate(r["metrics"]["nme_by_landmark"]):
                cell = "" if value is None else f"{100 * value:.4f}"
                handle.write(f"{j},{keypoint_names[j]},{label},{cell}\n")
    with atomic_file(out["plot_png"], "wb") as handle:
        handle.write(error_plots(results, report["format"]))
    if gallery is not None:
        _ok, png = cv2.imencode(".png", gallery)
        with atomic_file(out["gallery_png"], "wb") as handle:
            handle.write(png.tobytes())


def _pct(result: dict[str, Any]) -> str:
    value = result["metrics"]["nme_mean"]
    return "n/a" if value is None else f"{100 * value:.2f}%"
