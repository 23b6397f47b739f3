"""Metric functions for keypoint predictions, in the points' unit (original image pixels).

Pure functions over arrays: points are ``(N, P, 2)`` with NaN where a keypoint is unlabelled.
This module owns point errors, NME, RMSE, AUC, the CED curve, ``score`` (every metric of the
evaluate stage for one split), the gate's metric functions and the paired bootstrap.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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


def finite_or_none(value: float) -> float | None:
    """The value as a float where it is finite, else None.

    JSON holds no infinity: a non-finite metric is None, and ``non_finite_points`` says why.
    """
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
        return finite_or_none(counted.mean()) if len(counted) else None

    return {
        "images": len(pred),
        "nme_images": len(valid),
        # Labelled points predicted as NaN or infinity: each counts as an infinite error, so a
        # model that has any scores None (not comparable) and fails every image it touched.
        "non_finite_points": non_finite_points(pred, target),
        "nme_mean": mean_of(valid) if len(valid) else None,
        "nme_median": finite_or_none(np.median(valid)) if len(valid) else None,
        "failure_rate_8": float((valid > 0.08).mean()) if len(valid) else None,
        "failure_rate_10": float((valid > 0.10).mean()) if len(valid) else None,
        "auc_10": auc_at(nme, 0.10) if len(valid) else None,
        "mean_error_px": finite_or_none(mean_point_error(pred, target)),
        "rmse_px": finite_or_none(rmse(pred, target)),
        "nme_by_region": {
            region: mean_of(per_point[:, idx]) for region, idx in REGIONS[fmt_name].items()
        },
        "nme_by_landmark": [mean_of(per_point[:, j]) for j in range(pred.shape[1])],
    }


# The keys of eval.json that the gate can decide on: those with a function that a paired
# bootstrap can recompute on resampled images (``gate_metric_function``).
GATE_METRIC_KEYS = ("nme_mean", "rmse_px", "kaggle_rmse_96px", "mean_error_px")


def gate_metric_function(key: str, fmt_name: str) -> Any:
    """``metric(pred, target) -> float`` for a gate key of ``eval.json`` (None if not one of
    ``GATE_METRIC_KEYS``)."""
    pair = OUTER_EYE_CORNERS[fmt_name]

    def nme_mean(pred: np.ndarray, target: np.ndarray) -> float:
        values = nme_per_image(pred, target, pair)
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else float("nan")

    functions = (nme_mean, rmse, rmse, mean_point_error)
    return dict(zip(GATE_METRIC_KEYS, functions, strict=True)).get(key)


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
