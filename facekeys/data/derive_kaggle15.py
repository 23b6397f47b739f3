"""The Kaggle 15-point layout derived from the 68-point set, for users without Kaggle access.

Each labelled 68-point image becomes one Kaggle-layout row: a square crop around its points
(the points' larger extent plus 25 %, centred on their box), resized to 96x96 gray, and the 15
Kaggle points mapped from the 68 (eye centres: the mean of the six points of each eye). As in
Kaggle's own set, a fixed share of the training rows keeps only the 4 points every Kaggle row
has; which rows is decided by a hash of the image name, so the result is deterministic and does
not depend on row order. Test rows keep all 15 points.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facekeys.data.atomic_files import atomic_file
from facekeys.data.csv_reading import CsvRecords, read_records
from facekeys.data.dataset_layout import DATASETS
from facekeys.errors import DataUnusableError, FacekeysError
from facekeys.data.images import ImageLimits, ImageProblem, load_image, to_model_color
from facekeys.data.keypoint_formats import (
    KAGGLE_IMAGE_SIDE,
    KAGGLE_POINTS,
    KAGGLE_REQUIRED,
    youtube68_header_variants,
)

DERIVED_PREFIX = "derived:"
# The only pairing this module knows: Kaggle's 15-point layout from the 68-point set.
DERIVABLE = {"kaggle-15": "youtube-faces-68"}
CROP_MARGIN = 0.25  # added to the points' larger extent, half on each side
PARTIAL_SHARE = 0.6  # training rows that keep only KAGGLE_REQUIRED, as most Kaggle rows do
SKIPPED_CSV = "derived_skipped.csv"
OUT_OF_FRAME = 0.15  # as validate.out_of_frame_tolerance: points may be cut off by this much
MIN_EXTENT_PX = 2.0  # as validate.min_shape_extent_px

# Kaggle's "left"/"right" are the subject's; in iBUG 68 order the subject's right eye (36-41)
# lies on the image's left.
_FROM_68: dict[str, tuple[int, ...]] = {
    "left_eye_center": (42, 43, 44, 45, 46, 47),
    "right_eye_center": (36, 37, 38, 39, 40, 41),
    "left_eye_inner_corner": (42,),
    "left_eye_outer_corner": (45,),
    "right_eye_inner_corner": (39,),
    "right_eye_outer_corner": (36,),
    "left_eyebrow_inner_end": (22,),
    "left_eyebrow_outer_end": (26,),
    "right_eyebrow_inner_end": (21,),
    "right_eyebrow_outer_end": (17,),
    "nose_tip": (30,),
    "mouth_left_corner": (54,),
    "mouth_right_corner": (48,),
    "mouth_center_top_lip": (51,),
    "mouth_center_bottom_lip": (57,),
}
_REQUIRED = [KAGGLE_POINTS.index(p) for p in KAGGLE_REQUIRED]
_KAGGLE_HEADER = [*(f"{p}_{axis}" for p in KAGGLE_POINTS for axis in ("x", "y")), "Image"]


def parse_derived(source: str) -> str | None:
    """The data set a ``derived:<dataset>`` source names, or None for any other source."""
    return source[len(DERIVED_PREFIX) :] if source.startswith(DERIVED_PREFIX) else None


def kaggle_points(points68: np.ndarray) -> np.ndarray:
    """The 15 Kaggle points ``(15, 2)``, in Kaggle's column order, from 68 points ``(68, 2)``."""
    return np.stack([points68[list(_FROM_68[name])].mean(axis=0) for name in KAGGLE_POINTS])


def crop_square(points68: np.ndarray) -> tuple[float, float, float]:
    """The crop around a face's points: left, top and side length, in image pixels."""
    low, high = points68.min(axis=0), points68.max(axis=0)
    side = float((high - low).max()) * (1 + CROP_MARGIN)
    centre = (low + high) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def kaggle_row(image: np.ndarray, points68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Kaggle-layout sample: the 96x96 gray crop (uint8) and its 15 points in crop pixels.

    Raises:
        ValueError: points far outside the image (more than ``OUT_OF_FRAME`` of its larger side,
            the validation's default) or spanning under ``MIN_EXTENT_PX``: no face to crop.
    """
    import cv2

    height, width = image.shape[:2]
    margin = OUT_OF_FRAME * max(height, width)
    if (points68 < -margin).any() or (points68 > np.array([width, height]) + margin).any():
        raise ValueError(f"points lie far outside the {width}x{height} image")
    left, top, side = crop_square(points68)
    if side < MIN_EXTENT_PX * (1 + CROP_MARGIN):
        raise ValueError(f"the 68 points span under {MIN_EXTENT_PX:g} px")
    scale = KAGGLE_IMAGE_SIDE / side
    warp = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]])
    gray = to_model_color(image, "gray")
    crop = cv2.warpAffine(
        gray,
        warp,
        (KAGGLE_IMAGE_SIDE, KAGGLE_IMAGE_SIDE),
        flags=cv2.INTER_LINEAR,
        # Edge pixels repeated where the crop leaves the image, as in the published derivation.
        borderMode=cv2.BORDER_REPLICATE,
    )
    return crop, (kaggle_points(points68) - [left, top]) * scale


def keeps_only_required(name: str) -> float:
    """A stable number in [0, 1) per image name: rows below ``PARTIAL_SHARE`` lose 11 points."""
    digest = hashlib.sha256(f"facekeys-derive\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class DerivedSplit:
    """What deriving one split produced: rows written, of them partial, and rows skipped."""

    rows: int
    partial: int
    skipped: int


def derive_kaggle15(
    source68: str | os.PathLike[str],
    out: str | os.PathLike[str],
    limits: ImageLimits | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Writes ``training.csv`` and ``test.csv`` in Kaggle's layout from a fetched 68-point set.

    Args:
        source68: A folder in the ``youtube-faces-68`` layout (``data/raw/youtube-faces-68``).
        out: Folder to write into (the fetch's staging folder).
        limits: Caps applied before each image is decoded.
        progress: Called with (images done, images in all) after each image.

    Returns:
        Per split: rows written, of them partial, rows skipped. A row whose image or points
        cannot be used is not silently dropped: it is listed with its reason in
        ``derived_skipped.csv`` (split, line, image, reason).

    Raises:
        FacekeysError: the 68-point CSVs are missing or unreadable, or no row could be derived.
    """
    import cv2  # noqa: F401  (fail early, before any file is written, if OpenCV is missing)

    layout = DATASETS[DERIVABLE["kaggle-15"]]
    source68, out = Path(source68), Path(out)
    splits = [(n, split, _read_68_csv(source68 / split.csv)) for n, split in layout.splits.items()]
    counter = _Progress(sum(len(records.rows) for _, _, records in splits), progress)
    target = dict(zip(layout.splits, DATASETS["kaggle-15"].csvs, strict=True))
    skipped: list[list[str]] = []
    result: dict[str, Any] = {}
    for split_name, split, records in splits:
        skipped_before = len(skipped)
        images = source68 / str(split.images)
        written, partial = _write_split(
            out / target[split_name], split_name, records, images, limits, skipped, counter
        )
        result[split_name] = vars(DerivedSplit(written, partial, len(skipped) - skipped_before))
        if written == 0:
            raise FacekeysError(
                f"derived source: no usable row in {source68 / split.csv} "
                f"(first problem: {skipped[-1][3] if skipped else 'none'})"
            )
    if skipped:
        with atomic_file(out / SKIPPED_CSV, newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(
                [["split", "line", "image", "reason"], *skipped]
            )
    return result


class _Progress:
    """Counts images done over all splits and reports each one to an optional callback."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback

    def step(self) -> None:
        self.done += 1
        if self.callback:
            self.callback(self.done, self.total)


def _write_split(
    path: Path,
    split_name: str,
    records: CsvRecords,
    images: Path,
    limits: ImageLimits | None,
    skipped: list[list[str]],
    counter: _Progress,
) -> tuple[int, int]:
    """Writes one split's Kaggle CSV; returns rows written and of them partial.

    A row that cannot be used is appended to ``skipped`` (split, line, image, reason).
    """
    written = partial = 0
    with atomic_file(path, newline="") as handle:
        handle.write(",".join(_KAGGLE_HEADER) + "\n")
        for fields, line in zip(records.rows, records.lines, strict=True):
            name = fields[0].strip() if fields else ""
            try:
                row, kept_few = _kaggle_line(fields, images, limits, split_name == "training")
            except (ImageProblem, ValueError) as problem:
                skipped.append([split_name, str(line), name, str(problem)])
                continue
            finally:
                counter.step()
            handle.write(row)
            written, partial = written + 1, partial + kept_few
    return written, partial


def _read_68_csv(path: Path) -> CsvRecords:
    """A 68-point CSV's records, refused in one line when unreadable or of another layout."""
    try:
        records = read_records(path)
    except DataUnusableError as exc:
        raise FacekeysError(f"derived source: the 68-point data is unusable: {exc}") from None
    if [name.strip() for name in records.header[1:]] not in youtube68_header_variants():
        raise FacekeysError(
            f"derived source: {path}: not the 68-point layout (expected an image name column "
            "and 136 coordinates headed 0..135 or x0,y0,...,x67,y67)"
        )
    return records


def _kaggle_line(
    fields: list[str], images: Path, limits: ImageLimits | None, may_be_partial: bool
) -> tuple[str, bool]:
    """One Kaggle CSV line from a 68-point row, and whether it keeps only the 4 points.

    Raises:
        ImageProblem, ValueError: the row's image or points cannot be used.
    """
    name = fields[0].strip() if fields else ""
    points68 = _points(fields)
    crop, points = kaggle_row(load_image(images, name, limits), points68)
    values = [f"{v:.6f}" for v in points.reshape(-1)]
    partial = may_be_partial and keeps_only_required(name) < PARTIAL_SHARE
    if partial:
        values = [v if i // 2 in _REQUIRED else "" for i, v in enumerate(values)]
    pixels = " ".join(map(str, crop.reshape(-1).tolist()))
    return ",".join(values) + "," + pixels + "\n", partial


def _points(fields: list[str]) -> np.ndarray:
    if len(fields) != 137:
        raise ValueError(f"expected an image name and 136 coordinates, got {len(fields)} fields")
    try:
        values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
    except ValueError:
        raise ValueError("a coordinate is not a number") from None
    if not np.isfinite(values).all():
        raise ValueError("a coordinate is not finite")
    return values.reshape(68, 2)
