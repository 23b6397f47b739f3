"""The derived check columns of each row of a keypoint CSV, which the validation rules read.

Per row: its field count, coordinates that are not finite numbers, required points left blank,
its image's status (a file that must exist, stay under the size caps and decode, or a Kaggle
``Image`` cell of 9216 values in 0..255), and its geometry (how far points fall outside the
image, the eye distance and order, the extent of the shape). Each check also keeps a one-line
detail per failing row, for the quarantine reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from facekeys.data.csv_reading import CsvRecords
from facekeys.data.images import (
    ImageLimits,
    ImageProblem,
    decode_image,
    read_image_bytes,
    resolve_inside,
)
from facekeys.data.keypoint_formats import KAGGLE_IMAGE_SIDE, KAGGLE_IMAGE_VALUES, KAGGLE_POINTS, CsvFormat

# numpy's sep=" " accepts any whitespace between values; values beyond int64 saturate at its
# maximum, so the range check below refuses them too.
_DIGITS_AND_SPACES = re.compile(r"[0-9\s]+")
_ASCII_INTEGER = re.compile(r"[0-9]+")


@dataclass
class SchemaColumns:
    """Where a format's columns lie in a file's header.

    Attributes:
        coord_index: Field index of x, y per point, in the format's canonical point order.
        name_index: Field index of the image name (formats whose images are files).
        image_index: Field index of the ``Image`` pixels (Kaggle's layout).
    """

    coord_index: list[int]
    name_index: int | None
    image_index: int | None


@dataclass
class RowChecks:
    """The check columns of every row, and what the rules' messages need besides.

    Attributes:
        table: One row per CSV record: ``row`` (1-based), ``field_count``,
            ``non_numeric_cells``, ``missing_required_cells``, ``image_status``, ``width``,
            ``height``, the geometry columns, ``name`` and ``image_sha1``.
        details: Per check (``non_numeric``, ``missing``, ``image``), a detail line per row.
        coords: Coordinates ``(rows, points, 2)``, NaN where blank or not a number.
        image_status: Per row: ``ok``, an image problem's code, or None (row not checked).
        names: Per row: the image name as written (formats whose images are files).
    """

    table: pd.DataFrame
    details: dict[str, list[str | None]]
    coords: np.ndarray
    image_status: list[str | None]
    names: list[str | None]


def xy_name(i: int) -> str:
    """The ``x0, y0, x1, ...`` name of coordinate column ``i``."""
    return f"{'xy'[i % 2]}{i // 2}"


def point_name(fmt: CsvFormat, j: int) -> str:
    """How messages name point ``j``: ``point 7`` (68 points) or Kaggle's point name."""
    return f"point {j}" if fmt.name == "youtube68" else KAGGLE_POINTS[j]


def row_checks(
    fmt: CsvFormat,
    records: CsvRecords,
    schema: SchemaColumns,
    images_dir: str | os.PathLike[str] | None,
    limits: ImageLimits,
    workers: int,
) -> RowChecks:
    """Computes every row's check columns (images are decoded on ``workers`` threads).

    Args:
        fmt: The CSV format.
        records: The file's records.
        schema: Where the format's columns lie (``validate.check_schema``).
        images_dir: Image folder (formats whose images are files).
        limits: Caps checked before any image is decoded.
        workers: Threads decoding images; 0 means one per CPU core.

    Returns:
        The check columns and the details the quarantine reasons quote.
    """
    rows = records.rows
    n = len(rows)
    field_count = np.array([len(r) for r in rows])
    ok_rows = field_count == len(records.header)
    coords, non_numeric, non_numeric_detail = _parse_coordinates(
        rows, ok_rows, schema.coord_index, fmt.num_points
    )
    missing_required, missing_detail = _missing_required(fmt, rows, ok_rows, schema.coord_index)
    names: list[str | None] = [None] * n
    image_hash: list[str | None] = [None] * n
    if fmt.has_image_column:
        cells = [rows[i][schema.image_index] if ok_rows[i] else None for i in range(n)]
        image_status, image_detail, image_hash = _kaggle_pixel_checks(cells)
        sizes = np.where(
            np.array([s == "ok" for s in image_status])[:, None], float(KAGGLE_IMAGE_SIDE), np.nan
        ) * np.ones((n, 2))
    else:
        names = [rows[i][schema.name_index] if ok_rows[i] else None for i in range(n)]
        image_status, image_detail, sizes = _image_file_checks(names, images_dir, limits, workers)
    table = pd.DataFrame(
        {
            "row": np.arange(1, n + 1),
            "field_count": field_count,
            "non_numeric_cells": np.where(ok_rows, non_numeric, np.nan),
            "missing_required_cells": np.where(ok_rows, missing_required, np.nan),
            "image_status": pd.Series(image_status, dtype=object),
            "width": sizes[:, 0],
            "height": sizes[:, 1],
            **_geometry(coords, sizes, fmt.eye_pair),
            "name": pd.Series([s.strip() if s else s for s in names], dtype=object),
            "image_sha1": pd.Series(image_hash, dtype=object),
        }
    )
    details = {"non_numeric": non_numeric_detail, "missing": missing_detail, "image": image_detail}
    return RowChecks(table, details, coords, image_status, names)


def _parse_coordinates(
    rows: list[list[str]], ok_rows: np.ndarray, coord_index: list[int], num_points: int
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Returns coordinates (n, P, 2) with NaN where blank or bad, non-numeric counts and details."""
    n = len(rows)
    coords = np.full((n, num_points * 2), np.nan)
    non_numeric = np.zeros(n)
    detail: list[str | None] = [None] * n
    cols = coord_index
    for i in np.flatnonzero(ok_rows):
        cells = [rows[i][c].strip() for c in cols]
        try:
            values = [float(c) if c else np.nan for c in cells]
            arr = np.array(values)
            bad = ~np.isfinite(arr) & np.array([bool(c) for c in cells])
            if bad.any():
                raise ValueError
            coords[i] = arr
        except ValueError:
            bad_cols = []
            for j, cell in enumerate(cells):
                if not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    value = np.nan
                if np.isfinite(value):
                    coords[i, j] = value
                else:
                    bad_cols.append(j)
            non_numeric[i] = len(bad_cols)
            j = bad_cols[0]
            detail[i] = f"{xy_name(j)} = {cells[j][:20]!r} is not a finite number"
    return coords.reshape(n, num_points, 2), non_numeric, detail


def _missing_required(
    fmt: CsvFormat, rows: list[list[str]], ok_rows: np.ndarray, coord_index: list[int]
) -> tuple[np.ndarray, list[str | None]]:
    """Per row: blank cells of required points (and half-blank points), and a detail line."""
    n = len(rows)
    blank = np.array(
        [
            [not rows[i][c].strip() for c in coord_index]
            if ok_rows[i]
            else [False] * (2 * fmt.num_points)
            for i in range(n)
        ]
    ).reshape(n, fmt.num_points, 2)
    required = np.zeros(fmt.num_points, bool)
    required[list(fmt.required)] = True
    missing_required = (blank & required[None, :, None]).sum(axis=(1, 2)).astype(float)
    # A point is present only as a whole: x without y (or y without x) is as bad as a missing one.
    half = blank[..., 0] != blank[..., 1]
    missing_required += half.sum(axis=1)
    missing_detail: list[str | None] = [None] * n
    for i in np.flatnonzero(missing_required):
        j = int(np.flatnonzero((blank[i].any(1) & required) | half[i])[0])
        name = point_name(fmt, j)
        missing_detail[i] = f"{name} is blank" + ("" if required[j] else " in x or y only")
    return missing_required, missing_detail


def _image_file_checks(
    names: list[str | None],
    images_dir: str | os.PathLike[str] | None,
    limits: ImageLimits,
    workers: int,
) -> tuple[list[str | None], list[str | None], np.ndarray]:
    """Checks each named image: safe path, size caps, decodes. Returns status, detail, (W, H)."""
    import cv2
    from tqdm import tqdm

    cv2.setNumThreads(1)  # the thread pool below already uses every core
    sizes = np.full((len(names), 2), np.nan)
    status: list[str | None] = [None] * len(names)
    detail: list[str | None] = [None] * len(names)

    def check(i: int) -> None:
        name = names[i]
        if name is None:
            return
        try:
            path = resolve_inside(images_dir, name)
            image = decode_image(read_image_bytes(path, limits), limits)
            sizes[i] = image.shape[1], image.shape[0]
            status[i] = "ok"
        except ImageProblem as problem:
            status[i], detail[i] = problem.code, problem.detail
        except Exception as exc:  # a decoder failure we did not foresee stays one row's problem
            status[i], detail[i] = "image_corrupt", f"decoder error: {type(exc).__name__}: {exc}"

    workers = workers or os.cpu_count() or 1
    todo = [i for i, n in enumerate(names) if n is not None]
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(
            pool.map(check, todo),
            total=len(todo),
            desc="images",
            unit="img",
            disable=None,
            file=sys.stderr,
            leave=False,
        ):
            pass
    return status, detail, sizes


def _kaggle_pixel_checks(
    cells: list[str | None],
) -> tuple[list[str | None], list[str | None], list[str | None]]:
    """Checks each Image cell holds 9216 integers in 0..255. Returns status, detail, hash."""
    n = len(cells)
    status: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    digest: list[str | None] = [None] * n
    for i, cell in enumerate(cells):
        if cell is None:
            continue
        text = cell.strip()
        if not text:
            status[i], detail[i] = "image_pixels_missing", "the Image cell is blank"
            continue
        if not _DIGITS_AND_SPACES.fullmatch(text):
            bad = next((t for t in text.split() if not _ASCII_INTEGER.fullmatch(t)), text)
            status[i] = "image_pixel_value"
            detail[i] = f"Image holds {bad[:20]!r}, not an integer in 0..255"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            values = np.fromstring(text, dtype=np.int64, sep=" ")
        if values.size != KAGGLE_IMAGE_VALUES:
            status[i] = "image_pixel_count"
            detail[i] = f"Image holds {values.size} values, expected {KAGGLE_IMAGE_VALUES} (96x96)"
            continue
        if values.max() > 255:
            status[i] = "image_pixel_value"
            detail[i] = f"Image holds {int(values.max())}, outside 0..255"
            continue
        status[i] = "ok"
        digest[i] = hashlib.sha1(values.astype(np.uint8).tobytes()).hexdigest()
    return status, detail, digest


def _geometry(
    coords: np.ndarray, sizes: np.ndarray, eye_pair: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Per-row geometry: out-of-frame distance, eye distance and order, extent of the shape."""
    x, y = coords[..., 0], coords[..., 1]
    width, height = sizes[:, :1], sizes[:, 1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        outside = np.nanmax(
            np.stack([-x, x - width, -y, y - height, np.zeros_like(x)]), axis=0
        )  # per point, px
        out_px = np.nanmax(np.where(np.isnan(x), np.nan, outside), axis=1)
        worst_point = np.argmax(np.nan_to_num(outside, nan=-1.0), axis=1)
        extent = np.fmax(np.nanmax(x, 1) - np.nanmin(x, 1), np.nanmax(y, 1) - np.nanmin(y, 1))
    left, right = coords[:, eye_pair[0]], coords[:, eye_pair[1]]
    return {
        "out_of_frame_px": out_px,
        "out_of_frame_rel": out_px / np.fmax(sizes[:, 0], sizes[:, 1]),
        "out_of_frame_point": worst_point,
        "eye_distance_px": np.hypot(*(right - left).T),
        "eye_left_x": left[:, 0],
        "eye_right_x": right[:, 0],
        "shape_extent_px": extent,
    }
