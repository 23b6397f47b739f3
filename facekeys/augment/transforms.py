"""Sample generation: each source image cropped (validation, test) or cropped and augmented
(training), spread over worker processes.

Every sample is one affine warp of the original image (crop policy x random jitter x flip), so
points move by exactly the same matrix as pixels; photometric changes come from albumentations.
Randomness is drawn from a generator seeded by (seed, stream, image, copy), so the output does not
depend on how work is spread over processes: the same params and input give identical arrays.

Out-of-frame policy (``out_of_frame``):
    resample: a jitter that pushes a labelled point out of the model input (when it was inside
        before) is redrawn, up to ``max_resample`` times; then the un-jittered crop is used.
    mask: keep the first jitter and mark pushed-out points missing in the mask.
Points already outside the un-jittered crop (labels a few pixels beyond the image border in the
source) keep their coordinates and stay labelled: they are real labels, never clipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facekeys.augment.settings import AugmentSettings
from facekeys.data.crop_geometry import (
    CropPolicy,
    apply_to_points,
    jitter_matrix,
    keypoint_box,
    square_crop_matrix,
    warp,
    whole_image_matrix,
)
from facekeys.data.images import ImageLimits, ImageProblem, load_image, to_model_color
from facekeys.data.keypoint_formats import FLIP_PERMUTATION, FORMATS
from facekeys.data.labelled_splits import SplitRows
from facekeys.errors import FacekeysError


@dataclass
class _Job:
    fmt: str
    rows: SplitRows
    settings: AugmentSettings
    augment: bool
    stream: int  # separates the random streams of train / val / test
    photometric: Any = field(default=None, repr=False)


_JOB: _Job | None = None  # set in each worker process by _init_worker


def _photometric(settings: AugmentSettings) -> Any:
    import albumentations as A

    s = settings
    return A.Compose(
        [
            A.RandomBrightnessContrast(s.brightness_contrast, s.brightness_contrast, p=0.8),
            A.RandomGamma((int(s.gamma_range[0] * 100), int(s.gamma_range[1] * 100)), p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=s.blur_p),
            A.GaussNoise(std_range=(0.01, 0.05), p=s.noise_p),
            A.CoarseDropout(
                num_holes_range=(1, 2),
                hole_height_range=(0.1, 0.3),
                hole_width_range=(0.1, 0.3),
                fill=s.pad_value,
                p=s.occlusion_p,
            ),
        ],
        seed=s.seed,
    )


def _init_worker(job: _Job) -> None:
    import cv2

    cv2.setNumThreads(1)
    global _JOB
    job.photometric = _photometric(job.settings) if job.augment else None
    _JOB = job


@dataclass
class _Source:
    """One source image and its un-jittered crop (points as pixel centres, NaN where missing).

    Attributes:
        image: The image in the model's colour.
        points: ``(P, 2)`` labelled points in original pixels.
        present: Which points are labelled.
        base: Original pixels -> model input under the crop policy, without jitter.
        base_points: ``points`` under ``base``.
        inside: Labelled points that lie inside the un-jittered crop.
    """

    image: np.ndarray
    points: np.ndarray
    present: np.ndarray
    base: np.ndarray
    base_points: np.ndarray
    inside: np.ndarray


def _samples_for(index: int) -> dict[str, np.ndarray]:
    """All samples of one source image: the plain crop and/or the augmented copies."""
    job = _JOB
    assert job is not None
    s = job.settings
    source = _source(job.rows, index, s)
    plain = s.include_original or not job.augment
    copies = (1 if plain else 0) + (s.copies if job.augment else 0)
    out = _empty_samples(copies, len(source.points), s)
    if plain:
        out["images"][0] = warp(source.image, source.base, s.image_size, s.pad_value)
        out["points"][0] = np.nan_to_num(source.base_points, nan=0.0)
        out["mask"][0] = source.present
        out["to_crop"][0] = source.base[:2]
    for c in range(1 if plain else 0, copies):
        _augmented_copy(job, index, c, source, out)
    out["source_index"] = np.full(copies, index, np.int32)
    return out


def _source(rows: SplitRows, index: int, s: AugmentSettings) -> _Source:
    """Row ``index`` decoded, in the model's colour, with its un-jittered crop."""
    if rows.pixels is not None:
        image = rows.pixels[index]
        if s.color == "rgb":
            image = to_model_color(image, "rgb")
    else:
        image = to_model_color(
            load_image(rows.images_dir, rows.names[index], ImageLimits()), s.color
        )
    points = rows.points[index] - s.label_pixel_offset
    present = ~np.isnan(points).any(axis=1)
    if s.face_box == "keypoints":
        if present.sum() < 2:
            raise FacekeysError(
                f"{rows.names[index]}: {int(present.sum())} labelled points; a keypoint crop "
                "needs at least 2 (disable augment.refine for this data set)"
            )
        base = square_crop_matrix(keypoint_box(points), s.image_size, s.margin)
    else:
        policy = CropPolicy(size=s.image_size, margin=s.margin, pad_value=s.pad_value)
        base = whole_image_matrix(image.shape[1], image.shape[0], policy)
    base_points = apply_to_points(base, points)
    inside = present & _inside(base_points, s.image_size)
    return _Source(image, points, present, base, base_points, inside)


def _empty_samples(copies: int, num_points: int, s: AugmentSettings) -> dict[str, np.ndarray]:
    """Arrays for ``copies`` samples of one image, filled by the caller."""
    size = s.image_size
    shape = (copies, size, size) + ((3,) if s.color == "rgb" else ())
    return {
        "images": np.empty(shape, np.uint8),
        "points": np.empty((copies, num_points, 2), np.float32),
        "mask": np.empty((copies, num_points), bool),
        "to_crop": np.empty((copies, 2, 3), np.float32),
        "copy": np.arange(copies, dtype=np.int16),
        "resampled": np.zeros(copies, np.int16),
        "fallback": np.zeros(copies, bool),
        "flipped": np.zeros(copies, bool),
    }


def _augmented_copy(
    job: _Job, index: int, c: int, source: _Source, out: dict[str, np.ndarray]
) -> None:
    """Fills copy ``c`` of ``out``: a random jitter (redrawn per the out-of-frame policy), then
    the photometric changes, all drawn from the copy's own seeded generator, in that order."""
    s = job.settings
    rng = np.random.default_rng([s.seed, job.stream, index, c])
    flip, matrix, moved, pushed_out = _jitter_in_frame(rng, s, source, out, c)
    mask = source.present & ~pushed_out
    if flip:
        perm = list(FLIP_PERMUTATION[job.fmt])
        moved, mask = moved[perm], mask[perm]
    crop = warp(source.image, matrix, s.image_size, s.pad_value)
    job.photometric.set_random_seed(int(rng.integers(2**31)))
    out["images"][c] = job.photometric(image=crop)["image"]
    out["points"][c] = np.nan_to_num(moved, nan=0.0)
    out["mask"][c] = mask
    out["to_crop"][c] = matrix[:2]
    out["flipped"][c] = flip


def _jitter_in_frame(
    rng: np.random.Generator,
    s: AugmentSettings,
    source: _Source,
    out: dict[str, np.ndarray],
    c: int,
) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """Draws flip and jitter for copy ``c``, redrawing while the out-of-frame policy asks to;
    records the redraws (and a fallback to the plain crop) in ``out``.

    Returns:
        ``(flip, matrix, moved points, points pushed out of frame)``.
    """
    size = s.image_size
    for attempt in range(s.max_resample + 1):
        flip = bool(rng.random() < s.flip_p)
        jitter = jitter_matrix(
            size,
            angle_deg=rng.uniform(-s.rotate_deg, s.rotate_deg),
            scale=rng.uniform(*s.scale_range),
            shift_x=rng.uniform(-s.shift_fraction, s.shift_fraction),
            shift_y=rng.uniform(-s.shift_fraction, s.shift_fraction),
            flip=flip,
        )
        matrix = jitter @ source.base
        moved = apply_to_points(matrix, source.points)
        pushed_out = source.inside & ~_inside(moved, size)
        if not pushed_out.any() or s.out_of_frame == "mask":
            return flip, matrix, moved, pushed_out
        out["resampled"][c] = attempt + 1
    out["fallback"][c] = True
    return False, source.base, source.base_points, np.zeros_like(source.inside)


def _inside(points: np.ndarray, size: int) -> np.ndarray:
    return (points >= -0.5).all(axis=-1) & (points <= size - 0.5).all(axis=-1)


def _chunks(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _run_chunk(indices: np.ndarray) -> list[dict[str, np.ndarray]]:
    results = []
    for i in indices:
        try:
            results.append(_samples_for(int(i)))
        except ImageProblem as problem:
            assert _JOB is not None
            name = _JOB.rows.names[int(i)]
            raise FacekeysError(
                f"{name}: {problem} (it passed validation; did it change?)"
            ) from None
    return results


def build_split(
    fmt: str,
    rows: SplitRows,
    indices: np.ndarray,
    settings: AugmentSettings,
    augment: bool,
    stream: int,
    desc: str,
) -> dict[str, np.ndarray]:
    """Crops (and, with ``augment``, augments) the rows at ``indices``; returns stacked arrays.

    Work is spread over ``settings.workers`` processes in fixed chunks; the result order and
    content do not depend on the number of workers.
    """
    import multiprocessing

    from tqdm import tqdm

    job = _Job(fmt=fmt, rows=rows, settings=settings, augment=augment, stream=stream)
    workers = settings.workers or os.cpu_count() or 1
    chunks = list(_chunks(indices, 32))
    parts: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=len(indices), desc=desc, unit="img", disable=None, file=sys.stderr)
    if workers == 1 or len(chunks) <= 1:
        _init_worker(job)
        iterator: Any = map(_run_chunk, chunks)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, (job,))
        iterator = pool.imap(_run_chunk, chunks)
    try:
        for result in iterator:
            parts.extend(result)
            bar.update(len(result))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if not parts:
        empty = _samples_shape(fmt, settings)
        return empty
    stacked = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    stacked["names"] = np.array([rows.names[i] for i in stacked["source_index"]])
    return stacked


def _samples_shape(fmt: str, settings: AugmentSettings) -> dict[str, np.ndarray]:
    size, p = settings.image_size, FORMATS[fmt].num_points
    channels = (3,) if settings.color == "rgb" else ()
    return {
        "images": np.zeros((0, size, size, *channels), np.uint8),
        "points": np.zeros((0, p, 2), np.float32),
        "mask": np.zeros((0, p), bool),
        "to_crop": np.zeros((0, 2, 3), np.float32),
        "copy": np.zeros(0, np.int16),
        "resampled": np.zeros(0, np.int16),
        "fallback": np.zeros(0, bool),
        "flipped": np.zeros(0, bool),
        "source_index": np.zeros(0, np.int32),
        "names": np.zeros(0, "<U1"),
    }
