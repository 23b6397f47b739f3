"""Validated labelled rows as arrays, and the ``.npz`` files the augment stage writes.

``read_split`` turns a validated CSV (``valid.csv``) into ``SplitRows``: names, points and, for
Kaggle's format, the images themselves. ``write_npz`` / ``load_npz`` write and read the model-ready
splits (``train.npz``, ``val.npz``, ...) byte-identically across reruns.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facekeys.data.atomic_files import atomic_file
from facekeys.data.csv_reading import read_records
from facekeys.errors import FacekeysError
from facekeys.data.keypoint_formats import CsvFormat
from facekeys.data.validate import check_schema


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


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Loads an augmented split (no pickles allowed)."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
