"""Model-ready arrays from validated rows: the augment stage's driver.

``augment_dataset`` reads the training and test CSVs, holds out the selection and new-people rows
by identity (``facekeys.augment.identity_split``), crops and augments every part
(``facekeys.augment.transforms``) and writes the ``.npz`` files, ``meta.json`` and
``preview.png`` as one folder. The same params and input give byte-identical files.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from facekeys.augment.identity_split import HeldOutParts, split_training_rows
from facekeys.augment.preview import preview_grid
from facekeys.augment.settings import AugmentSettings
from facekeys.augment.transforms import build_split
from facekeys.data.atomic_files import atomic_dir, write_json
from facekeys.data.crop_geometry import CropPolicy
from facekeys.data.keypoint_formats import FLIP_PERMUTATION, FORMATS, point_side
from facekeys.data.labelled_splits import SplitRows, read_split, write_npz
from facekeys.errors import FacekeysError

Splits = dict[str, tuple[str | os.PathLike[str], str | None]]


def augment_dataset(
    fmt_name: str,
    splits: Splits,
    out_dir: str | os.PathLike[str],
    settings: AugmentSettings,
    log: Any = None,
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
        data_source: Which data this is (``facekeys.data.dataset_layout.describe_source``),
            recorded in ``meta.json`` and from there in the model card and the MLflow run.

    Returns:
        The metadata written to ``meta.json``. Its ``crop_policy`` has no ``detector`` yet: the
        stage adds it (``facekeys.inference.detector_calibration``).
    """
    log = log or (lambda line: None)
    settings.check()
    fmt = FORMATS[fmt_name]
    training = read_split(fmt, *splits["training"])
    test = read_split(fmt, *splits["test"])
    if settings.face_box == "keypoints":
        _refuse_partial_labels(fmt_name, splits, {"training": training, "test": test})
    parts = held_out_parts(fmt_name, splits, training, settings)
    built = _build_parts(fmt_name, training, test, parts, settings)
    meta = {
        "format": fmt_name,
        "data_source": data_source,
        **_model_input_meta(fmt_name, settings),
        "split": _split_meta(parts, settings),
        "counts": _count_meta(parts, built, len(test.names), settings),
        "out_of_frame": settings.out_of_frame,
        "seed": settings.seed,
        # Everything that shapes the data; not `workers`, which only changes the speed.
        "settings": {k: v for k, v in asdict(settings).items() if k != "workers"},
    }
    _write_outputs(out_dir, built, meta, fmt_name, settings)
    indices = parts.indices
    log(
        f"{out_dir}: train {meta['counts']['samples']['train']} samples "
        f"({len(indices['train'])} images x {settings.copies} copies"
        f"{' + original' if settings.include_original else ''}), "
        f"val {len(indices['val'])}, new people {len(indices['new_people'])}, "
        f"test {len(test.names)}"
    )
    return meta


def held_out_parts(
    fmt_name: str, splits: Splits, training: SplitRows, settings: AugmentSettings
) -> HeldOutParts:
    """The training CSV's rows split into ``train``, ``val`` and ``new_people``.

    Raises:
        FacekeysError: No training rows are left.
    """
    parts = split_training_rows(
        training.names,
        names_people=not FORMATS[fmt_name].has_image_column,
        val_fraction=settings.val_fraction,
        new_people_fraction=settings.new_people_fraction,
        seed=settings.seed,
    )
    if len(parts.indices["train"]) == 0:
        raise FacekeysError(
            f"{splits['training'][0]}: no training rows left after holding out "
            f"val_fraction {settings.val_fraction} and new_people_fraction "
            f"{settings.new_people_fraction} ({len(set(parts.identities))} identities)"
        )
    return parts


def _build_parts(
    fmt_name: str,
    training: SplitRows,
    test: SplitRows,
    parts: HeldOutParts,
    settings: AugmentSettings,
) -> dict[str, dict[str, np.ndarray]]:
    """The samples of each part: training augmented, the others cropped only. The stream
    numbers keep each part's random draws apart (and fixed: they are part of the data)."""
    indices = parts.indices
    return {
        "train": build_split(
            fmt_name, training, indices["train"], settings, True, 0, "augment train"
        ),
        "val": build_split(fmt_name, training, indices["val"], settings, False, 1, "crop val"),
        "new_people": build_split(
            fmt_name, training, indices["new_people"], settings, False, 3, "crop new people"
        ),
        "test": build_split(
            fmt_name, test, np.arange(len(test.names)), settings, False, 2, "crop test"
        ),
    }


def _model_input_meta(fmt_name: str, settings: AugmentSettings) -> dict[str, Any]:
    """What a model trained on this data is fed: size, colour, crop policy, coordinates and
    keypoints."""
    fmt = FORMATS[fmt_name]
    policy = CropPolicy(
        size=settings.image_size,
        face_box=settings.face_box,
        margin=settings.margin,
        pad_value=settings.pad_value,
    )
    return {
        "image_size": settings.image_size,
        "channels": 3 if settings.color == "rgb" else 1,
        "color": settings.color,
        "crop_policy": policy.to_dict(),
        "coordinates": "model-input pixels, pixel centres on integers; to_crop maps original "
        "image pixels (centres on integers) to them; source label = that + label_pixel_offset",
        "label_pixel_offset": settings.label_pixel_offset,
        "keypoints": {
            "num_points": fmt.num_points,
            "names": list(fmt.point_names),
            "flip_permutation": list(FLIP_PERMUTATION[fmt_name]),
            "sides": [point_side(fmt_name, j) for j in range(fmt.num_points)],
        },
    }


def _split_meta(parts: HeldOutParts, settings: AugmentSettings) -> dict[str, Any]:
    """How the rows were held out, each part's role and its number of people."""
    identities, indices = parts.identities, parts.indices
    return {
        "kind": parts.kind,
        "val_fraction": settings.val_fraction,
        "new_people_fraction": parts.fractions["new_people"],
        "roles": {
            "train": "training",
            "val": "selection: early stopping, epoch choice, int8 calibration checks and "
            "the registry gate",
            "new_people": "reported: people in no other part, read by no choice",
            "test": "reported: the data set's own test split",
        },
        "identities": {
            part: len({identities[i] for i in indices[part]})
            for part in ("train", "val", "new_people")
        },
    }


def _count_meta(
    parts: HeldOutParts,
    built: dict[str, dict[str, np.ndarray]],
    test_rows: int,
    settings: AugmentSettings,
) -> dict[str, Any]:
    """Rows and samples per part, and what the augmentation did to the training samples."""
    indices = parts.indices
    train = built["train"]
    augmented = train["copy"] > (0 if settings.include_original else -1)
    return {
        "source_rows": {
            "train": len(indices["train"]),
            "val": len(indices["val"]),
            "new_people": len(indices["new_people"]),
            "test": test_rows,
        },
        "samples": {k: len(v["images"]) for k, v in built.items()},
        "augmented_copies": int(augmented.sum()),
        "flipped": int(train["flipped"].sum()),
        "resampled_for_out_of_frame": int((train["resampled"] > 0).sum()),
        "fallback_to_plain_crop": int(train["fallback"].sum()),
        "points_masked_out": int((~train["mask"]).sum()),
    }


def _write_outputs(
    out_dir: str | os.PathLike[str],
    built: dict[str, dict[str, np.ndarray]],
    meta: dict[str, Any],
    fmt_name: str,
    settings: AugmentSettings,
) -> None:
    """Replaces ``out_dir`` with the parts' ``.npz`` files, ``meta.json`` and ``preview.png``."""
    import cv2

    with atomic_dir(out_dir) as staging:
        for name, arrays in built.items():
            write_npz(staging / f"{name}.npz", {
                k: v for k, v in arrays.items() if k not in ("resampled", "fallback")
            })  # fmt: skip
        write_json(staging / "meta.json", meta)
        preview = preview_grid(built["train"], fmt_name, settings.preview_samples)
        _ok, png = cv2.imencode(".png", preview)
        (staging / "preview.png").write_bytes(png.tobytes())


def _refuse_partial_labels(
    fmt_name: str,
    splits: Splits,
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
