"""Scoring predictions against labelled images, in original image pixels.

Pure functions over arrays: points are ``(N, P, 2)`` with NaN where a keypoint is unlabelled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facekeys.datasets import DATASETS
from facekeys.images import ImageLimits, load_image
from facekeys.labelled_splits import load_npz, read_split
from facekeys.schemes import FORMATS


@dataclass
class LabelledImages:
    """Decoded images of one split with their labels (pixel centres on integers)."""

    names: list[str]
    images: list[np.ndarray]
    points: np.ndarray
    label_pixel_offset: float = 0.0  # subtracted from the source labels on reading
    source_points: np.ndarray | None = None  # the labels as the source has them


def load_labelled(
    fmt_name: str,
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None,
    label_pixel_offset: float,
    indices: np.ndarray | None = None,
) -> LabelledImages:
    """Reads a validated CSV and decodes its images (Kaggle: the ``Image`` column).

    Args:
        indices: Rows to keep (e.g. the validation rows of the training CSV); all by default.
    """
    rows = read_split(FORMATS[fmt_name], csv_path, os.fspath(images_dir) if images_dir else None)
    keep = np.arange(len(rows.names)) if indices is None else np.asarray(indices)
    images = []
    for i in keep:
        if rows.pixels is not None:
            images.append(rows.pixels[i])
        else:
            images.append(load_image(rows.images_dir, rows.names[i], ImageLimits()))
    return LabelledImages(
        names=[rows.names[i] for i in keep],
        images=images,
        points=rows.points[keep] - label_pixel_offset,
        label_pixel_offset=label_pixel_offset,
        source_points=rows.points[keep],
    )


def point_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Euclidean error of each point, ``(N, P)``.

    Only the labels decide which points count: NaN where the label is missing; +inf where the
    label is there but the prediction is not a finite number (a failure, never a free pass).
    """
    labelled = np.isfinite(target).all(axis=-1)
    predicted = np.isfinite(pred).all(axis=-1)
    with np.errstate(invalid="ignore"):
        err = np.linalg.norm(pred - target, axis=-1)
    return np.where(labelled, np.where(predicted, err, np.inf), np.nan)


def labelled_sha256(data: LabelledImages) -> str:
    """A hash of exactly what a split's score depends on: its labels and its pixels, in order.

    Two scores are comparable only when this matches (the registry gate checks it). The labels
    are hashed as the source has them, so models with other label conventions (whose errors
    are the same in the source's pixels) score the same data.
    """
    import hashlib

    digest = hashlib.sha256()
    labels = data.source_points if data.source_points is not None else data.points
    digest.update(np.ascontiguousarray(labels, dtype=np.float64).tobytes())
    for image in data.images:
        digest.update(repr((image.shape, str(image.dtype))).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def nme_per_image(pred: np.ndarray, target: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """Mean error over labelled points / distance between the ``pair`` points of the target.

    Returns ``(N,)``; NaN where either point of the pair is unlabelled or they coincide, +inf
    where a labelled point was predicted as NaN or infinity.
    """
    err = point_errors(pred, target)
    labelled = ~np.isnan(err)
    mean_err = np.where(labelled, err, 0.0).sum(-1) / np.maximum(labelled.sum(-1), 1)
    norm = np.linalg.norm(target[:, pair[0]] - target[:, pair[1]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isnan(norm) | (norm == 0), np.nan, mean_err / norm)


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared coordinate error over labelled points (Kaggle's metric); NaN if none,
    +inf if a labelled coordinate was predicted as NaN or infinity."""
    labelled = np.isfinite(target)
    with np.errstate(invalid="ignore"):
        sq = np.where(np.isfinite(pred), (pred - target) ** 2, np.inf)[labelled]
    return float(np.sqrt(sq.mean())) if len(sq) else float("nan")


def mean_point_error(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean Euclidean distance over labelled points, in the points' unit; NaN if none."""
    err = point_errors(pred, target).reshape(-1)
    err = err[~np.isnan(err)]
    return float(err.mean()) if len(err) else float("nan")


def non_finite_points(pred: np.ndarray, target: np.ndarray) -> int:
    """How many labelled points were predicted as NaN or infinity."""
    return int(np.isinf(point_errors(pred, target)).sum())


def _none_if_nan(value: float) -> float | None:
    # JSON holds no infinity: a non-finite metric is None, and ``non_finite_points`` says why.
    return float(value) if np.isfinite(value) else None


# Landmark groups for per-region errors. 68-pt: the iBUG index ranges.
REGIONS: dict[str, dict[str, list[int]]] = {
    "youtube68": {
        "jaw": list(range(0, 17)),
        "brows": list(range(17, 27)),
        "nose": list(range(27, 36)),
        "eyes": list(range(36, 48)),
        "mouth": list(range(48, 68)),
    },
    "kaggle15": {
        "brows": [6, 7, 8, 9],
        "nose": [10],
        "eyes": [0, 1, 2, 3, 4, 5],
        "mouth": [11, 12, 13, 14],
    },
}

# NME normaliser: the outer eye corners (the subject's right, then left) in both formats. Kaggle
# rows often miss the corners; those rows have no NME (counted in ``nme_images``).
OUTER_EYE_CORNERS: dict[str, tuple[int, int]] = {"youtube68": (36, 45), "kaggle15": (5, 3)}


def auc_at(nme: np.ndarray, threshold: float) -> float:
    """Area under the cumulative error distribution up to ``threshold``, scaled to [0, 1].

    For the empirical CDF this integral has a closed form: mean(max(0, T - e)) / T.
    """
    values = nme[~np.isnan(nme)]
    if len(values) == 0:
        return float("nan")
    return float(np.mean(np.maximum(0.0, threshold - values)) / threshold)


def ced_curve(nme: np.ndarray, threshold: float = 0.1, steps: int = 101) -> list[dict[str, float]]:
    """Share of images with NME at most x, for x from 0 to ``threshold`` (for plots)."""
    values = nme[~np.isnan(nme)]
    xs = np.linspace(0.0, threshold, steps)
    n = max(len(values), 1)
    return [{"nme": float(x), "share": float((values <= x).sum() / n)} for x in xs]


def score(pred: np.ndarray, target: np.ndarray, fmt_name: str) -> dict[str, object]:
    """Every metric of the evaluate stage for one split, in the points' unit (original pixels).

    Returns:
        ``nme_mean``/``nme_median`` (outer-eye-corner distance), ``failure_rate_8``/``_10``
        (share of images with NME above 8 % / 10 %), ``auc_10``, ``mean_error_px``, ``rmse_px``,
        ``nme_by_region`` and ``nme_by_landmark`` (mean over images of each point's error / the
        normaliser), and counts.
    """
    pair = OUTER_EYE_CORNERS[fmt_name]
    nme = nme_per_image(pred, target, pair)
    norm = np.linalg.norm(target[:, pair[0]] - target[:, pair[1]], axis=-1)
    usable_norm = np.where(np.isfinite(norm) & (norm > 0), norm, np.nan)
    per_point = point_errors(pred, target) / usable_norm[:, None]
    valid = nme[~np.isnan(nme)]

    def mean_of(values: np.ndarray) -> float | None:
        counted = values[~np.isnan(values)]
        return _none_if_nan(counted.mean()) if len(counted) else None

    return {
        "images": len(pred),
        "nme_images": len(valid),
        # Labelled points predicted as NaN or infinity: each counts as an infinite error, so a
        # model that has any scores None (not comparable) and fails every image it touched.
        "non_finite_points": non_finite_points(pred, target),
        "nme_mean": mean_of(valid) if len(valid) else None,
        "nme_median": _none_if_nan(np.median(valid)) if len(valid) else None,
        "failure_rate_8": float((valid > 0.08).mean()) if len(valid) else None,
        "failure_rate_10": float((valid > 0.10).mean()) if len(valid) else None,
        "auc_10": auc_at(nme, 0.10) if len(valid) else None,
        "mean_error_px": _none_if_nan(mean_point_error(pred, target)),
        "rmse_px": _none_if_nan(rmse(pred, target)),
        "nme_by_region": {
            region: mean_of(per_point[:, idx]) for region, idx in REGIONS[fmt_name].items()
        },
        "nme_by_landmark": [mean_of(per_point[:, j]) for j in range(pred.shape[1])],
    }


def mean_shape(train_npz: str | os.PathLike[str]) -> np.ndarray:
    """The mean training shape in first-model input pixels, over plain (un-augmented) crops."""
    from facekeys.labelled_splits import load_npz

    train = load_npz(train_npz)
    plain = train["copy"] == 0
    weight = train["mask"][plain][..., None]
    total = (train["points"][plain] * weight).sum(0)
    return (total / np.maximum(weight.sum(0), 1)).astype(np.float64)


def draw_gallery(
    images: list[np.ndarray],
    pred: np.ndarray,
    target: np.ndarray,
    nme: np.ndarray,
    names: list[str],
    tile: int = 256,
) -> np.ndarray:
    """A BGR row per group (best, median, worst NME): ground truth green, prediction red."""
    import cv2

    from facekeys.images import to_model_color

    order = np.argsort(np.where(np.isnan(nme), np.inf, nme))
    order = order[: int((~np.isnan(nme)).sum())]
    if len(order) == 0:
        return np.full((tile, tile, 3), 255, np.uint8)
    k = min(4, len(order))
    middle = len(order) // 2 - k // 2
    groups = {
        "best": order[:k],
        "median": order[middle : middle + k],
        "worst": order[::-1][:k],
    }
    rows = []
    for label, picks in groups.items():
        row = np.full((tile + 20, tile * k, 3), 255, np.uint8)
        cv2.putText(row, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for c, i in enumerate(picks):
            image = cv2.cvtColor(to_model_color(images[i], "gray"), cv2.COLOR_GRAY2BGR)
            scale = tile / max(image.shape[:2])
            image = cv2.resize(
                image, (round(image.shape[1] * scale), round(image.shape[0] * scale))
            )
            canvas = np.zeros((tile, tile, 3), np.uint8)
            canvas[: image.shape[0], : image.shape[1]] = image
            for points, color in ((target[i], (60, 200, 60)), (pred[i], (40, 40, 230))):
                for x, y in points:
                    if not np.isnan(x):
                        centre = (round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5))
                        cv2.circle(canvas, centre, 2, color, -1, cv2.LINE_AA)
            text = f"{Path(names[i]).name[:24]} {100 * nme[i]:.1f}%"
            cv2.putText(canvas, text, (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
            row[20:, c * tile : (c + 1) * tile] = canvas
        rows.append(row)
    legend = np.full((22, tile * k, 3), 255, np.uint8)
    cv2.putText(legend, "green: ground truth   red: prediction", (4, 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return np.vstack([legend, *rows])


def error_plots(results: dict[str, dict], fmt_name: str) -> bytes:
    """CED curves (model and mean-shape baseline, per split) and per-landmark NME: PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facekeys.tracking import figure_png

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, (label, result) in enumerate(results.items()):
        curve = result["ced"]
        style = "--" if "baseline" in label else "-"
        left.plot([100 * p["nme"] for p in curve], [p["share"] for p in curve], style,
                  color=f"C{k}", label=label)  # fmt: skip
    left.set_xlabel("NME (% of outer-eye-corner distance)")
    left.set_ylabel("share of images")
    left.set_title("cumulative error distribution")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    width = 0.4
    model_splits = [label for label in results if "baseline" not in label]
    for k, label in enumerate(model_splits):
        values = [100 * (v or 0.0) for v in results[label]["metrics"]["nme_by_landmark"]]
        xs = np.arange(len(values)) + (k - 0.5) * width
        right.bar(xs, values, width, label=label, color=f"C{k}")
    right.set_xlabel("landmark index")
    right.set_ylabel("NME (%)")
    right.set_title("error per landmark")
    right.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


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


def gate_metric_function(key: str, fmt_name: str) -> Any:
    """``metric(pred, target) -> float`` for a gate key of ``eval.json`` (None if not one)."""
    pair = OUTER_EYE_CORNERS[fmt_name]

    def nme_mean(pred: np.ndarray, target: np.ndarray) -> float:
        values = nme_per_image(pred, target, pair)
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else float("nan")

    return {
        "nme_mean": nme_mean,
        "rmse_px": rmse,
        "kaggle_rmse_96px": rmse,
        "mean_error_px": mean_point_error,
    }.get(key)


def paired_bootstrap_gain(
    metric: Any,
    champion: np.ndarray,
    candidate: np.ndarray,
    target: np.ndarray,
    clusters: list[str] | np.ndarray,
    draws: int = 2000,
    confidence: float = 0.95,
    seed: int = 2026,
) -> dict[str, Any]:
    """How much better a candidate is than the champion on the same images, with its noise.

    The gain is ``metric(champion) - metric(candidate)`` (lower metrics are better, so a positive
    gain favours the candidate). Whole clusters (a person's frames) are resampled together, since
    frames of one clip are not independent.

    Returns:
        ``gain`` on all images, ``low``/``high``: the one-sided ``confidence`` bounds (the gain
        is above ``low`` with that confidence), and ``draws``, ``clusters``, ``confidence``.
    """
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
    gains = np.empty(draws)
    for i in range(draws):
        pick = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        gains[i] = metric(champion[pick], target[pick]) - metric(candidate[pick], target[pick])
    with np.errstate(invalid="ignore"):
        gain = metric(champion, target) - metric(candidate, target)
    return {
        "gain": float(gain),
        "low": float(np.quantile(gains, 1 - confidence)),
        "high": float(np.quantile(gains, confidence)),
        "draws": draws,
        "clusters": len(members),
        "confidence": confidence,
    }


def score_model_on(model_dir: str | os.PathLike[str], split: SplitSource) -> dict[str, Any]:
    """One split's metrics for a model folder, as ``evaluate_model`` computes them (without the
    baseline, files or plots): what the registry gate needs to score a champion again."""
    from facekeys.predict import KeypointPredictor

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
            (``facekeys.datasets.DatasetLayout.test_people``), recorded as ``test_people``.

    Returns:
        The content of ``eval.json``.
    """
    import cv2

    from facekeys.atomic import atomic_file, write_json
    from facekeys.crop import apply_to_points
    from facekeys.predict import KeypointPredictor

    log = log or (lambda line: None)
    predictor = KeypointPredictor.from_dir(model_dir)
    fmt_name = predictor.card["format"]
    shape = mean_shape(train_npz)
    results: dict[str, dict[str, Any]] = {}
    gallery = None
    for split in splits:
        data = load_labelled(
            fmt_name, split.csv, split.images_dir, predictor.label_pixel_offset, split.indices
        )
        data_hash = labelled_sha256(data)
        pred = predictor.predict(data.images)
        baseline = np.stack([
            apply_to_points(np.linalg.inv(predictor.first.crop_matrix(im.shape, None)), shape)
            for im in data.images
        ]) if data.images else np.zeros_like(data.points)  # fmt: skip
        for label, points in (
            (split.label, pred),
            (f"{split.label}_mean_shape_baseline", baseline),
        ):
            metrics = score(points, data.points, fmt_name)
            metrics["data_sha256"] = data_hash
            nme = nme_per_image(points, data.points, OUTER_EYE_CORNERS[fmt_name])
            if fmt_name == "kaggle15":
                # Kaggle rows often lack the corners; the eye centres are always labelled.
                centres = nme_per_image(points, data.points, (1, 0))
                centres = centres[~np.isnan(centres)]
                metrics["nme_eye_centres_mean"] = (
                    _none_if_nan(centres.mean()) if len(centres) else None
                )
                # The images are Kaggle's 96x96 crops, so this is Kaggle's own metric.
                metrics["kaggle_rmse_96px"] = metrics["rmse_px"]
            results[label] = {"metrics": metrics, "ced": ced_curve(nme)}
            if label == "test":
                gallery = draw_gallery(data.images, points, data.points, nme, data.names)
        log(
            f"{split.label}: {len(pred)} images, NME {_pct(results[split.label])} "
            f"(mean-shape baseline {_pct(results[split.label + '_mean_shape_baseline'])})"
        )
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
                handle.write(f"{j},{predictor.keypoint_names[j]},{label},{cell}\n")
    with atomic_file(out["plot_png"], "wb") as handle:
        handle.write(error_plots(results, fmt_name))
    if gallery is not None:
        _ok, png = cv2.imencode(".png", gallery)
        with atomic_file(out["gallery_png"], "wb") as handle:
            handle.write(png.tobytes())
    return report


def _pct(result: dict[str, Any]) -> str:
    value = result["metrics"]["nme_mean"]
    return "n/a" if value is None else f"{100 * value:.2f}%"
