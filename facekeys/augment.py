"""Model-ready arrays from validated rows: crop, resize, identity split and seeded augmentation.

Every sample is one affine warp of the original image (crop policy x random jitter x flip), so
points move by exactly the same matrix as pixels; photometric changes come from albumentations.
Randomness is drawn from a generator seeded by (seed, image, copy), so the output does not depend
on how work is spread over processes: the same params and input give byte-identical files.

Out-of-frame policy (``out_of_frame``):
    resample: a jitter that pushes a labelled point out of the model input (when it was inside
        before) is redrawn, up to ``max_resample`` times; then the un-jittered crop is used.
    mask: keep the first jitter and mark pushed-out points missing in the mask.
Points already outside the un-jittered crop (labels a few pixels beyond the image border in the
source) keep their coordinates and stay labelled: they are real labels, never clipped.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from facekeys.atomic import atomic_dir, atomic_file, write_json
from facekeys.crop import (
    CropPolicy,
    apply_to_points,
    jitter_matrix,
    keypoint_box,
    square_crop_matrix,
    warp,
    whole_image_matrix,
)
from facekeys.csvfile import read_records
from facekeys.detect import DetectorSettings
from facekeys.errors import FacekeysError
from facekeys.images import ImageLimits, ImageProblem, load_image, to_model_color
from facekeys.schemes import FLIP_PERMUTATION, FORMATS, CsvFormat, point_side
from facekeys.validate import check_schema

_FRAME_NUMBER = re.compile(r"[\s_\-]*\d+$")

# Settings that decide which rows are held out; the refinement data must share them.
SPLIT_KEYS = ("seed", "val_fraction", "new_people_fraction")


@dataclass(frozen=True)
class AugmentSettings:
    """The ``augment`` section of params.yaml (``image_size`` resolved for one data set)."""

    image_size: int = 128
    color: str = "gray"
    # Held out by identity (when the format names people): ``val_fraction`` is the selection
    # split (early stopping, epoch choice, int8 checks, the registry gate), ``new_people_fraction``
    # the reported split that no choice reads. The new people are drawn first, so changing
    # ``val_fraction`` never moves them.
    val_fraction: float = 0.1
    new_people_fraction: float = 0.1
    copies: int = 4
    include_original: bool = True
    seed: int = 2026
    flip_p: float = 0.5
    rotate_deg: float = 20.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    shift_fraction: float = 0.08
    brightness_contrast: float = 0.25
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur_p: float = 0.2
    noise_p: float = 0.3
    occlusion_p: float = 0.3
    out_of_frame: str = "resample"
    max_resample: int = 10
    pad_value: int = 0
    workers: int = 0
    preview_samples: int = 16
    # Where the source labels put a pixel's centre: 0.5 means pixel i spans [i, i + 1) (its
    # centre is i + 0.5); internally centres lie on integers, so labels are shifted by this.
    label_pixel_offset: float = 0.5
    # The crop's face box: the whole image (first stage), or the box around the labelled
    # keypoints (refinement stage: at prediction time, the box of the first stage's points),
    # widened by ``margin`` of its longer side on each side.
    face_box: str = "whole_image"
    margin: float = 0.0

    @classmethod
    def from_params(cls, params: dict[str, Any], dataset: str) -> AugmentSettings:
        """Reads the section; ``image_size`` and ``label_pixel_offset`` may be a number or a
        mapping per data set. ``refine`` is read by ``refine_from_params``."""
        params = dict(params)
        params.pop("refine", None)
        params.pop("detector", None)  # read by facekeys.detect.DetectorSettings
        for key in ("image_size", "label_pixel_offset"):
            value = params.get(key)
            if isinstance(value, dict):
                if dataset not in value:
                    raise FacekeysError(f"params.yaml: augment.{key} has no entry for {dataset}")
                params[key] = value[dataset]
        size = params.pop("image_size", cls.image_size)
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(f"params.yaml: augment: unknown keys {sorted(unknown)}")
        for key in ("scale_range", "gamma_range"):
            if key in params:
                params[key] = tuple(params[key])
        settings = cls(image_size=int(size), **params)
        settings.check()
        return settings

    @classmethod
    def refine_from_params(cls, params: dict[str, Any], dataset: str) -> AugmentSettings | None:
        """Settings of the refinement stage's data: the first stage's, with the keys under
        ``refine.<dataset>`` replaced and the crop around the keypoints; None where that entry
        is missing or null (no refinement stage for the data set)."""
        overrides = (params.get("refine") or {}).get(dataset)
        if not overrides:
            return None
        if not isinstance(overrides, dict):
            raise FacekeysError(f"params.yaml: augment.refine.{dataset} must be a mapping or null")
        base = cls.from_params(params, dataset)
        if "face_box" in overrides:
            raise FacekeysError(
                f"params.yaml: augment.refine.{dataset}: face_box cannot be set here (refinement "
                "crops are always around the keypoints)"
            )
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(
                f"params.yaml: augment.refine.{dataset}: unknown keys {sorted(unknown)}"
            )
        splitting = sorted(set(overrides) & set(SPLIT_KEYS))
        if splitting:
            # Another split would put held-out people into the refinement network's training.
            raise FacekeysError(
                f"params.yaml: augment.refine.{dataset}: {', '.join(splitting)} cannot be set "
                "here: both networks must hold out the same people"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        settings = replace(base, face_box="keypoints", **values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raises FacekeysError on values that cannot work."""
        problems = []
        if self.face_box not in ("whole_image", "keypoints"):
            problems.append(f"face_box must be whole_image or keypoints, not {self.face_box!r}")
        if not 0.0 <= self.margin <= 2.0:
            problems.append(f"margin {self.margin} outside 0..2")
        if self.color not in ("gray", "rgb"):
            problems.append(f"color must be gray or rgb, not {self.color!r}")
        if self.out_of_frame not in ("resample", "mask"):
            problems.append(f"out_of_frame must be resample or mask, not {self.out_of_frame!r}")
        if not 16 <= self.image_size <= 1024:
            problems.append(f"image_size {self.image_size} outside 16..1024")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction {self.val_fraction} outside [0, 1)")
        if not 0.0 <= self.new_people_fraction < 1.0:
            problems.append(f"new_people_fraction {self.new_people_fraction} outside [0, 1)")
        elif self.val_fraction + self.new_people_fraction >= 1.0:
            problems.append("val_fraction + new_people_fraction leave no training rows")
        if self.copies < 0 or (self.copies == 0 and not self.include_original):
            problems.append("copies must be >= 0, and > 0 without include_original")
        if problems:
            raise FacekeysError("params.yaml: augment: " + "; ".join(problems))


@dataclass
class SplitRows:
    """Validated rows of one CSV, ready to crop.

    Attributes:
        names: Image file name (youtube68) or ``row<N>`` (kaggle15) per row.
        points: ``(n, P, 2)`` float32 coordinates in original pixels, NaN where missing.
        pixels: kaggle15 only: ``(n, 96, 96)`` uint8 images from the ``Image`` column.
        images_dir: youtube68 only: folder the names are relative to.
    """

    names: list[str]
    points: np.ndarray
    pixels: np.ndarray | None = None
    images_dir: str | None = None


def read_split(
    fmt: CsvFormat, csv_path: str | os.PathLike[str], images_dir: str | None
) -> SplitRows:
    """Reads a validated CSV (``valid.csv``) into arrays."""
    records = read_records(csv_path)
    schema = check_schema(fmt, records)
    n = len(records.rows)
    points = np.full((n, fmt.num_points * 2), np.nan, np.float32)
    pixels = np.zeros((n, 96, 96), np.uint8) if fmt.has_image_column else None
    names = []
    for i, row in enumerate(records.rows):
        if len(row) != len(records.header):
            raise FacekeysError(
                f"{csv_path}: row {i + 1} has {len(row)} fields; run validate first"
            )
        cells = [row[c].strip() for c in schema.coord_index]
        points[i] = [float(c) if c else np.nan for c in cells]
        if pixels is not None:
            pixels[i] = np.array(row[schema.image_index].split(), np.uint8).reshape(96, 96)
            names.append(f"row{i + 1}")
        else:
            names.append(row[schema.name_index].strip())
    return SplitRows(
        names=names,
        points=points.reshape(n, fmt.num_points, 2),
        pixels=pixels,
        images_dir=os.fspath(images_dir) if images_dir else None,
    )


def held_out_split(card: dict[str, Any]) -> dict[str, Any]:
    """What decided a trained model's held-out rows, from its model card: the split settings
    (``SPLIT_KEYS``) of the data it trained on. Two models with equal splits held out the same
    rows of the same CSV."""
    data = (card.get("resolved_config") or {}).get("data") or {}
    return {key: data.get(key) for key in SPLIT_KEYS}


def identity_of(name: str) -> str:
    """The person in a frame name: the file stem without its frame number (``Luis_Fonsi_21.jpg``
    -> ``Luis_Fonsi``)."""
    stem = PurePosixPath(name).stem
    return _FRAME_NUMBER.sub("", stem) or stem


def identity_split(
    identities: list[str], held_out: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Splits row indices so that no identity is in two parts.

    Args:
        identities: The person of each row.
        held_out: Part name -> share of the rows, filled in this order from one seeded order
            of the identities (so a later part never changes an earlier one).
        seed: Seeds the order.

    Returns:
        ``"train"`` (the rest) and each held-out part -> sorted row indices.
    """
    unique = sorted(set(identities))
    order = [unique[k] for k in np.random.default_rng(seed).permutation(len(unique))]
    counts: dict[str, int] = {}
    for ident in identities:
        counts[ident] = counts.get(ident, 0) + 1
    part_of: dict[str, str] = {}
    position = 0
    for part, fraction in held_out.items():
        target, taken = fraction * len(identities), 0
        while position < len(order) and taken < target:
            part_of[order[position]] = part
            taken += counts[order[position]]
            position += 1
    labels = np.array([part_of.get(ident, "train") for ident in identities], dtype=object)
    return {part: np.flatnonzero(labels == part) for part in ("train", *held_out)}


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


def _samples_for(index: int) -> dict[str, np.ndarray]:
    """All samples of one source image: the plain crop and/or the augmented copies."""
    job = _JOB
    assert job is not None
    s = job.settings
    rows = job.rows
    size = s.image_size
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
        base = square_crop_matrix(keypoint_box(points), size, s.margin)
    else:
        policy = CropPolicy(size=size, margin=s.margin, pad_value=s.pad_value)
        base = whole_image_matrix(image.shape[1], image.shape[0], policy)
    base_points = apply_to_points(base, points)
    inside = present & _inside(base_points, size)

    copies = (1 if s.include_original or not job.augment else 0) + (s.copies if job.augment else 0)
    shape = (copies, size, size) + ((3,) if s.color == "rgb" else ())
    out = {
        "images": np.empty(shape, np.uint8),
        "points": np.empty((copies, len(points), 2), np.float32),
        "mask": np.empty((copies, len(points)), bool),
        "to_crop": np.empty((copies, 2, 3), np.float32),
        "copy": np.arange(copies, dtype=np.int16),
        "resampled": np.zeros(copies, np.int16),
        "fallback": np.zeros(copies, bool),
        "flipped": np.zeros(copies, bool),
    }
    first = 0
    if s.include_original or not job.augment:
        out["images"][0] = warp(image, base, size, s.pad_value)
        out["points"][0] = np.nan_to_num(base_points, nan=0.0)
        out["mask"][0] = present
        out["to_crop"][0] = base[:2]
        first = 1
    perm = list(FLIP_PERMUTATION[job.fmt])
    for c in range(first, copies):
        rng = np.random.default_rng([s.seed, job.stream, index, c])
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
            matrix = jitter @ base
            moved = apply_to_points(matrix, points)
            pushed_out = inside & ~_inside(moved, size)
            if not pushed_out.any() or s.out_of_frame == "mask":
                break
            out["resampled"][c] = attempt + 1
        else:
            flip, matrix = False, base
            moved, pushed_out = base_points, np.zeros_like(inside)
            out["fallback"][c] = True
        mask = present & ~pushed_out
        if flip:
            moved, mask = moved[perm], mask[perm]
        crop = warp(image, matrix, size, s.pad_value)
        job.photometric.set_random_seed(int(rng.integers(2**31)))
        out["images"][c] = job.photometric(image=crop)["image"]
        out["points"][c] = np.nan_to_num(moved, nan=0.0)
        out["mask"][c] = mask
        out["to_crop"][c] = matrix[:2]
        out["flipped"][c] = flip
    out["source_index"] = np.full(copies, index, np.int32)
    return out


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


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Writes arrays as an uncompressed .npz with fixed timestamps (byte-identical reruns),
    atomically. ``np.savez`` stamps the current time into the zip, so it is not used."""
    with atomic_file(path, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(
                    member, np.ascontiguousarray(arrays[key]), allow_pickle=False
                )


def preview_grid(
    samples: dict[str, np.ndarray], fmt: str, count: int, columns: int = 4
) -> np.ndarray:
    """A BGR grid of samples with points drawn: subject's right red, left blue, midline green."""
    import cv2

    n = len(samples["images"])
    if n == 0:
        return np.zeros((64, 64, 3), np.uint8)
    picks = np.linspace(0, n - 1, min(count, n)).round().astype(int)
    tile = 256
    colors = {"right": (40, 40, 230), "left": (230, 120, 30), "center": (60, 200, 60)}
    rows = -(-len(picks) // columns)
    grid = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
    for k, i in enumerate(picks):
        image = samples["images"][i]
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
        scale = tile / image.shape[0]
        image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_LINEAR)
        for j, (x, y) in enumerate(samples["points"][i]):
            if samples["mask"][i, j]:
                centre = (round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5))
                cv2.circle(image, centre, 3, colors[point_side(fmt, j)], -1, cv2.LINE_AA)
        label = f"{samples['names'][i][:22]} c{samples['copy'][i]}" + (
            " flip" if samples["flipped"][i] else ""
        )
        cv2.putText(image, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
        r, c = divmod(k, columns)
        grid[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = image
    legend = np.full((24, grid.shape[1], 3), 255, np.uint8)
    for k, (side, color) in enumerate(colors.items()):
        cv2.putText(
            legend, f"subject's {side}" if side != "center" else "midline",
            (8 + 170 * k, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA,
        )  # fmt: skip
    return np.vstack([legend, grid])


def augment_dataset(
    fmt_name: str,
    splits: dict[str, tuple[str | os.PathLike[str], str | None]],
    out_dir: str | os.PathLike[str],
    settings: AugmentSettings,
    log: Any = None,
    detector: DetectorSettings | None = None,
    data_source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Builds ``train.npz``, ``val.npz`` (selection), ``new_people.npz`` (reported; empty where
    the format names no people), ``test.npz``, ``meta.json`` and ``preview.png``.

    Args:
        fmt_name: CSV format id.
        splits: ``{"training": (valid.csv, image folder or None), "test": (...)}``.
        out_dir: Output folder, replaced atomically.
        settings: The augment params.
        log: Receives human-readable lines.
        detector: Face detector to calibrate against this framing (whole-image crops only);
            the result goes to ``meta["crop_policy"]["detector"]`` (None: not calibrated).
        data_source: Which data this is (``facekeys.fetch.describe_source``), recorded in
            ``meta.json`` and from there in the model card and the MLflow run.

    Returns:
        The metadata written to ``meta.json``.
    """
    import cv2

    log = log or (lambda line: None)
    settings.check()
    fmt = FORMATS[fmt_name]
    training = read_split(fmt, *splits["training"])
    test = read_split(fmt, *splits["test"])
    if fmt.has_image_column:
        # Kaggle rows carry no names, hence no identities: the selection rows are drawn at
        # random (their people may be in training) and there is no new-people split.
        identities = [f"row{i}" for i in range(len(training.names))]
        split_kind = "random rows (the format names no people)"
        held_out = {"new_people": 0.0, "val": settings.val_fraction}
    else:
        identities = [identity_of(n) for n in training.names]
        split_kind = "by identity (file name without its frame number)"
        held_out = {"new_people": settings.new_people_fraction, "val": settings.val_fraction}
    if settings.face_box == "keypoints":
        _refuse_partial_labels(fmt_name, splits, {"training": training, "test": test})
    parts = identity_split(identities, held_out, settings.seed)
    train_idx, val_idx, people_idx = parts["train"], parts["val"], parts["new_people"]
    if len(train_idx) == 0:
        raise FacekeysError(
            f"{splits['training'][0]}: no training rows left after holding out "
            f"val_fraction {settings.val_fraction} and new_people_fraction "
            f"{settings.new_people_fraction} ({len(set(identities))} identities)"
        )

    built = {
        "train": build_split(fmt_name, training, train_idx, settings, True, 0, "augment train"),
        "val": build_split(fmt_name, training, val_idx, settings, False, 1, "crop val"),
        "new_people": build_split(
            fmt_name, training, people_idx, settings, False, 3, "crop new people"
        ),
        "test": build_split(
            fmt_name, test, np.arange(len(test.names)), settings, False, 2, "crop test"
        ),
    }
    policy = CropPolicy(
        size=settings.image_size,
        face_box=settings.face_box,
        margin=settings.margin,
        pad_value=settings.pad_value,
    )
    policy_dict: dict[str, Any] = policy.to_dict()
    if detector is not None and settings.face_box == "whole_image":
        policy_dict["detector"] = _calibrate_detector(training, train_idx, settings, detector, log)
    train = built["train"]
    augmented = train["copy"] > (0 if settings.include_original else -1)
    meta = {
        "format": fmt_name,
        "data_source": data_source,
        "image_size": settings.image_size,
        "channels": 3 if settings.color == "rgb" else 1,
        "color": settings.color,
        "crop_policy": policy_dict,
        "coordinates": "model-input pixels, pixel centres on integers; to_crop maps original "
        "image pixels (centres on integers) to them; source label = that + label_pixel_offset",
        "label_pixel_offset": settings.label_pixel_offset,
        "keypoints": {
            "num_points": fmt.num_points,
            "names": list(fmt.point_names),
            "flip_permutation": list(FLIP_PERMUTATION[fmt_name]),
            "sides": [point_side(fmt_name, j) for j in range(fmt.num_points)],
        },
        "split": {
            "kind": split_kind,
            "val_fraction": settings.val_fraction,
            "new_people_fraction": held_out["new_people"],
            "roles": {
                "train": "training",
                "val": "selection: early stopping, epoch choice, int8 calibration checks and "
                "the registry gate",
                "new_people": "reported: people in no other part, read by no choice",
                "test": "reported: the data set's own test split",
            },
            "identities": {
                "train": len({identities[i] for i in train_idx}),
                "val": len({identities[i] for i in val_idx}),
                "new_people": len({identities[i] for i in people_idx}),
            },
        },
        "counts": {
            "source_rows": {
                "train": len(train_idx),
                "val": len(val_idx),
                "new_people": len(people_idx),
                "test": len(test.names),
            },
            "samples": {k: len(v["images"]) for k, v in built.items()},
            "augmented_copies": int(augmented.sum()),
            "flipped": int(train["flipped"].sum()),
            "resampled_for_out_of_frame": int((train["resampled"] > 0).sum()),
            "fallback_to_plain_crop": int(train["fallback"].sum()),
            "points_masked_out": int((~built["train"]["mask"]).sum()),
        },
        "out_of_frame": settings.out_of_frame,
        "seed": settings.seed,
        # Everything that shapes the data; not `workers`, which only changes the speed.
        "settings": {k: v for k, v in asdict(settings).items() if k != "workers"},
    }
    with atomic_dir(out_dir) as staging:
        for name, arrays in built.items():
            write_npz(staging / f"{name}.npz", {
                k: v for k, v in arrays.items() if k not in ("resampled", "fallback")
            })  # fmt: skip
        write_json(staging / "meta.json", meta)
        _ok, png = cv2.imencode(".png", preview_grid(train, fmt_name, settings.preview_samples))
        (staging / "preview.png").write_bytes(png.tobytes())
    log(
        f"{out_dir}: train {meta['counts']['samples']['train']} samples "
        f"({len(train_idx)} images x {settings.copies} copies"
        f"{' + original' if settings.include_original else ''}), "
        f"val {len(val_idx)}, new people {len(people_idx)}, test {len(test.names)}"
    )
    return meta


def _refuse_partial_labels(
    fmt_name: str,
    splits: dict[str, tuple[str | os.PathLike[str], str | None]],
    rows: dict[str, SplitRows],
) -> None:
    """Keypoint crops need every point: prediction crops around all the first network's points,
    so a box around a labelled subset (Kaggle's 4-point rows) would teach another framing."""
    for split, data in rows.items():
        missing = np.isnan(data.points).any(axis=(1, 2))
        if missing.any():
            first = int(np.flatnonzero(missing)[0])
            raise FacekeysError(
                f"{splits[split][0]}: row {first + 1} ({data.names[first]}) and "
                f"{int(missing.sum()) - 1} more miss keypoints; refinement crops need all "
                f"{data.points.shape[1]} points (set augment.refine.<dataset> to null for "
                f"{fmt_name})"
            )


def _calibrate_detector(
    rows: SplitRows,
    train_idx: np.ndarray,
    settings: AugmentSettings,
    detector: DetectorSettings,
    log: Any,
) -> dict[str, Any] | None:
    """Measures where this framing lies around detector boxes (see facekeys.detect)."""
    from facekeys.detect import calibrate

    rng = np.random.default_rng(detector.seed)
    count = min(detector.calibration_images, len(train_idx))
    chosen = np.sort(rng.choice(train_idx, count, replace=False)) if count else train_idx

    def samples() -> Iterator[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
        for index in chosen:
            if rows.pixels is not None:
                image = rows.pixels[index]
            else:
                image = load_image(rows.images_dir, rows.names[index], ImageLimits())
            height, width = image.shape[:2]
            side = float(max(width, height))
            square = (width / 2.0 - side / 2.0, height / 2.0 - side / 2.0, side, side)
            yield image, rows.points[index] - settings.label_pixel_offset, square

    framing = calibrate(samples(), detector)
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


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Loads an augmented split (no pickles allowed)."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
