"""The augment stage's detector calibration: where the first network's framing lies around each
photo face detector's output, measured on training images and added to ``meta.json``
(``crop_policy.detector`` for Haar boxes, ``crop_policy.yuface`` for YuNet's five landmarks).

It runs after ``facekeys.augment.dataset.augment_dataset`` has written the data, on the same
training rows (the same held-out split), so that augmentation does not depend on face detection;
the model card takes the framing from ``meta.json``, so photos are cropped as the training images
were.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facekeys.augment.dataset import Splits, held_out_parts
from facekeys.augment.settings import AugmentSettings
from facekeys.data.atomic_files import write_json
from facekeys.data.images import ImageLimits, load_image
from facekeys.data.keypoint_formats import FORMATS
from facekeys.data.labelled_splits import SplitRows, read_split
from facekeys.inference.detectors import DetectorSettings, calibrate
from facekeys.inference.landmark_detector import YuFaceSettings, calibrate_landmarks


def add_detector_framing(
    fmt_name: str,
    splits: Splits,
    out_dir: str | os.PathLike[str],
    settings: AugmentSettings,
    detector: DetectorSettings,
    log: Any,
    yuface: YuFaceSettings | None = None,
) -> None:
    """Calibrates ``detector`` (Haar) and ``yuface`` against the framing of ``out_dir`` (written
    by ``augment_dataset`` with the same arguments) and records each result, or null where too
    few faces were found, as ``crop_policy.detector`` and ``crop_policy.yuface`` in its
    ``meta.json``. Keypoint crops (refinement) have no detector framing: nothing is done for them.
    """
    if settings.face_box != "whole_image":
        return
    training = read_split(FORMATS[fmt_name], *splits["training"])
    train_idx = held_out_parts(fmt_name, splits, training, settings).indices["train"]
    framing = calibrate_detector(training, train_idx, settings, detector, log)
    meta_path = Path(out_dir) / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["crop_policy"]["detector"] = framing
    if yuface is not None:
        meta["crop_policy"]["yuface"] = calibrate_yuface(training, train_idx, settings, yuface, log)
    write_json(meta_path, meta)


def calibrate_detector(
    rows: SplitRows,
    train_idx: np.ndarray,
    settings: AugmentSettings,
    detector: DetectorSettings,
    log: Any,
) -> dict[str, Any] | None:
    """Measures where this framing lies around detector boxes (see facekeys.inference.detectors).

    Args:
        rows: The training CSV's rows.
        train_idx: The rows the network trains on; a seeded sample of them is searched.
        settings: The augment params (the label convention).
        detector: The detector to calibrate.
        log: Receives human-readable lines.

    Returns:
        ``DetectorFraming.to_dict()``, or None where the detector found too few faces.
    """
    chosen = _sample(train_idx, detector.calibration_images, detector.seed)
    count = len(chosen)
    framing = calibrate(_trained_squares(rows, chosen, settings), detector)
    if framing is None:
        log(
            f"detector: {detector.cascade} found the labelled face in too few of {count} "
            "training images; the model cannot be used with --detect haar"
        )
        return None
    log(
        f"detector: {detector.cascade} found the labelled face in {framing.calibrated_on} of "
        f"{framing.searched} training images; framing square = {framing.side:.2f} box widths, "
        f"centre shift ({framing.centre_dx:+.3f}, {framing.centre_dy:+.3f}) widths"
    )
    return framing.to_dict()


def calibrate_yuface(
    rows: SplitRows,
    train_idx: np.ndarray,
    settings: AugmentSettings,
    yuface: YuFaceSettings,
    log: Any,
) -> dict[str, Any] | None:
    """Measures where this framing lies in the frame of YuNet's five landmarks (see
    facekeys.inference.landmark_detector), like ``calibrate_detector`` for Haar."""
    chosen = _sample(train_idx, yuface.calibration_images, yuface.seed)
    count = len(chosen)
    framing = calibrate_landmarks(_trained_squares(rows, chosen, settings), yuface)
    if framing is None:
        log(
            f"detector: yuface found the labelled face in too few of {count} training images; "
            "the model cannot be used with --detect yuface"
        )
        return None
    log(
        f"detector: yuface found the labelled face in {framing.calibrated_on} of "
        f"{framing.searched} training images; framing square = {framing.side / 2:.2f} eye "
        f"distances a side, its centre ({framing.centre_x / 2:+.3f}, {framing.centre_y / 2:+.3f})"
        " eye distances from the eyes' midpoint"
    )
    return framing.to_dict()


def _sample(train_idx: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A seeded sample of ``count`` training rows (all where there are fewer), in row order."""
    count = min(count, len(train_idx))
    if not count:
        return train_idx
    return np.sort(np.random.default_rng(seed).choice(train_idx, count, replace=False))


def _trained_squares(
    rows: SplitRows, chosen: np.ndarray, settings: AugmentSettings
) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """``(image, labelled points, trained square)`` of each chosen row: the square is the whole
    image padded to a square, as the first network sees it."""
    for index in chosen:
        if rows.pixels is not None:
            image = rows.pixels[index]
        else:
            image = load_image(rows.images_dir, rows.names[index], ImageLimits())
        height, width = image.shape[:2]
        side = float(max(width, height))
        square = (width / 2.0 - side / 2.0, height / 2.0 - side / 2.0, side, side)
        yield image, rows.points[index] - settings.label_pixel_offset, square
