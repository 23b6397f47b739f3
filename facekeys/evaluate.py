"""Scoring predictions against labelled images, in original image pixels.

Pure functions over arrays: points are ``(N, P, 2)`` with NaN where a keypoint is unlabelled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from facekeys.augment import read_split
from facekeys.images import ImageLimits, load_image
from facekeys.schemes import FORMATS


@dataclass
class LabelledImages:
    """Decoded images of one split with their labels (pixel centres on integers)."""

    names: list[str]
    images: list[np.ndarray]
    points: np.ndarray


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
    )


def nme_per_image(pred: np.ndarray, target: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """Mean error over labelled points / distance between the ``pair`` points of the target.

    Returns ``(N,)``; NaN where either point of the pair is unlabelled or they coincide.
    """
    err = np.linalg.norm(pred - target, axis=-1)
    labelled = ~np.isnan(err)
    mean_err = np.where(labelled, err, 0.0).sum(-1) / np.maximum(labelled.sum(-1), 1)
    norm = np.linalg.norm(target[:, pair[0]] - target[:, pair[1]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isnan(norm) | (norm == 0), np.nan, mean_err / norm)


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared coordinate error over labelled points (Kaggle's metric)."""
    sq = (pred - target) ** 2
    return float(np.sqrt(np.nanmean(sq)))


def mean_point_error(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean Euclidean distance over labelled points, in the points' unit."""
    return float(np.nanmean(np.linalg.norm(pred - target, axis=-1)))


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
    with np.errstate(invalid="ignore", divide="ignore"):
        per_point = np.linalg.norm(pred - target, axis=-1) / norm[:, None]
    per_point[~np.isfinite(per_point)] = np.nan
    valid = nme[~np.isnan(nme)]

    def mean_of(values: np.ndarray) -> float | None:
        finite = values[~np.isnan(values)]
        return float(finite.mean()) if len(finite) else None

    return {
        "images": len(pred),
        "nme_images": len(valid),
        "nme_mean": float(valid.mean()) if len(valid) else None,
        "nme_median": float(np.median(valid)) if len(valid) else None,
        "failure_rate_8": float((valid > 0.08).mean()) if len(valid) else None,
        "failure_rate_10": float((valid > 0.10).mean()) if len(valid) else None,
        "auc_10": auc_at(nme, 0.10) if len(valid) else None,
        "mean_error_px": mean_point_error(pred, target),
        "rmse_px": rmse(pred, target),
        "nme_by_region": {
            region: mean_of(per_point[:, idx]) for region, idx in REGIONS[fmt_name].items()
        },
        "nme_by_landmark": [mean_of(per_point[:, j]) for j in range(pred.shape[1])],
    }
