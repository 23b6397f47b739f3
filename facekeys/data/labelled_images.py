"""Reading labelled images for scoring: a split's decoded images with their labels, and the hash
of exactly what its score depends on."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from facekeys.data.images import ImageLimits, load_image
from facekeys.data.labelled_splits import read_split
from facekeys.data.keypoint_formats import FORMATS


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
