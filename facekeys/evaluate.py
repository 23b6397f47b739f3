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
