"""Validation of keypoint CSVs: schema, per-row rules, quarantine, report and Data Docs.

How it works: the file is read record by record (nothing dropped), the schema is checked (a wrong
schema makes the whole file unusable), then every row gets derived check columns (field count,
image status, how far points fall outside the image, eye distance, ...). A Great Expectations
suite runs over those columns; each expectation names the quarantine reason (or kept-row flag) it
stands for, and its unexpected rows decide which rows go to ``quarantine.csv``. Data Docs render
the same validation for a person to read.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facekeys.atomic import atomic_dir, sha256_file, write_json
from facekeys.csvfile import CsvRecords, read_records
from facekeys.errors import DataUnusableError, FacekeysError
from facekeys.images import (
    ImageLimits,
    ImageProblem,
    decode_image,
    read_image_bytes,
    resolve_inside,
)
from facekeys.schemes import (
    KAGGLE_IMAGE_SIDE,
    KAGGLE_IMAGE_VALUES,
    KAGGLE_POINTS,
    CsvFormat,
    youtube68_header_variants,
)

# numpy's sep=" " accepts any whitespace between values; values beyond int64 saturate at its
# maximum, so the range check below refuses them too.
_DIGITS_AND_SPACES = re.compile(r"[0-9\s]+")
_ASCII_INTEGER = re.compile(r"[0-9]+")


def _import_gx_in_background() -> threading.Thread:
    """Starts importing Great Expectations (about 3 s) while the images decode.

    Image decoding releases the GIL, so on a multi-core machine the two overlap; a later plain
    ``import`` in the main thread waits on the module lock until this one has finished.
    """

    def work() -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        with contextlib.suppress(Exception):  # a real import error surfaces in the main thread
            import great_expectations.expectations  # noqa: F401

    thread = threading.Thread(target=work, name="import-great-expectations", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class ValidationSettings:
    """Thresholds of the validation rules (the ``validate`` section of params.yaml).

    Attributes:
        max_quarantine_fraction: A file with a larger quarantined share is unusable.
        out_of_frame_tolerance: How far a point may lie outside the image, as a fraction of the
            image's larger side, and still be kept (flagged). Farther points quarantine the row.
        min_eye_distance_px: Eye pair closer than this is degenerate.
        min_shape_extent_px: Points spanning less than this (both axes) are collapsed.
        image_limits: Caps checked before any image is decoded.
        workers: Threads decoding images; 0 means one per CPU core.
        data_docs: Whether to build the Great Expectations Data Docs HTML.
    """

    max_quarantine_fraction: float = 0.1
    out_of_frame_tolerance: float = 0.15
    min_eye_distance_px: float = 2.0
    min_shape_extent_px: float = 2.0
    image_limits: ImageLimits = field(default_factory=ImageLimits)
    workers: int = 0
    data_docs: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ValidationSettings:
        """Builds settings from the ``validate`` params section; unknown keys are an error."""
        params = dict(params)
        limits = ImageLimits(**params.pop("image_limits", {}))
        known = {f for f in cls.__dataclass_fields__ if f != "image_limits"}
        unknown = set(params) - known
        if unknown:
            raise FacekeysError(f"params.yaml: validate: unknown keys {sorted(unknown)}")
        return cls(image_limits=limits, **params)


@dataclass(frozen=True)
class Rule:
    """One Great Expectations expectation and what its unexpected rows mean."""

    code: str
    kind: str  # "quarantine" or "flag"
    expectation: Any
    describe: Callable[[int], str] | None = None


@dataclass
class _Schema:
    coord_index: list[int]  # field index of x, y per point in canonical order
    name_index: int | None
    image_index: int | None


def check_schema(fmt: CsvFormat, records: CsvRecords) -> _Schema:
    """Maps the header onto the format's columns.

    Raises:
        DataUnusableError: the header is not the format's exact set of columns.
    """
    header = records.header
    path = records.path
    if fmt.name == "youtube68":
        expected = 1 + 2 * fmt.num_points
        if len(header) != expected:
            raise DataUnusableError(
                f"{path}: wrong schema for youtube68: expected {expected} columns "
                f"(image name + 136 coordinates), found {len(header)}"
            )
        if header[1:] not in youtube68_header_variants():
            bad = next(
                ((i, h) for i, h in enumerate(header[1:], 1) if h not in {str(i - 1), _xy(i - 1)}),
                None,
            )
            if bad is None:
                raise DataUnusableError(
                    f"{path}: wrong schema for youtube68: coordinate headers mix 0..135 and "
                    "x0,y0,... naming; use one of them"
                )
            raise DataUnusableError(
                f"{path}: wrong schema for youtube68: column {bad[0] + 1} is {bad[1]!r}, expected "
                f"{str(bad[0] - 1)!r} or {_xy(bad[0] - 1)!r}"
            )
        return _Schema(coord_index=list(range(1, expected)), name_index=0, image_index=None)

    wanted = [*fmt.coordinate_columns(), "Image"]
    missing = [c for c in wanted if c not in header]
    extra = [c for c in header if c not in wanted]
    dupes = sorted(c for c, n in Counter(header).items() if n > 1)
    if missing or extra or dupes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}")
        if dupes:
            parts.append(f"repeated {dupes[:4]}")
        raise DataUnusableError(
            f"{path}: wrong schema for kaggle15 (30 coordinate columns + Image): {'; '.join(parts)}"
        )
    return _Schema(
        coord_index=[header.index(c) for c in fmt.coordinate_columns()],
        name_index=None,
        image_index=header.index("Image"),
    )


def _xy(i: int) -> str:
    return f"{'xy'[i % 2]}{i // 2}"


def _parse_coordinates(
    rows: list[list[str]], ok_rows: np.ndarray, schema: _Schema, num_points: int
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Returns coordinates (n, P, 2) with NaN where blank or bad, non-numeric counts and details."""
    n = len(rows)
    coords = np.full((n, num_points * 2), np.nan)
    non_numeric = np.zeros(n)
    detail: list[str | None] = [None] * n
    cols = schema.coord_index
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
            detail[i] = f"{_xy(j)} = {cells[j][:20]!r} is not a finite number"
    return coords.reshape(n, num_points, 2), non_numeric, detail


def _image_file_checks(
    names: list[str | None], images_dir: str | os.PathLike[str], settings: ValidationSettings
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
            image = decode_image(
                read_image_bytes(path, settings.image_limits), settings.image_limits
            )
            sizes[i] = image.shape[1], image.shape[0]
            status[i] = "ok"
        except ImageProblem as problem:
            status[i], detail[i] = problem.code, problem.detail
        except Exception as exc:  # a decoder failure we did not foresee stays one row's problem
            status[i], detail[i] = "image_corrupt", f"decoder error: {type(exc).__name__}: {exc}"

    workers = settings.workers or os.cpu_count() or 1
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


def _rules(
    fmt: CsvFormat,
    settings: ValidationSettings,
    checks: pd.DataFrame,
    details: dict[str, list[str | None]],
    coords: np.ndarray,
    expected_fields: int,
) -> list[Rule]:
    import great_expectations.expectations as gxe

    tol = settings.out_of_frame_tolerance
    point_name = (
        (lambda j: f"point {j}") if fmt.name == "youtube68" else (lambda j: KAGGLE_POINTS[j])
    )

    def far(i: int) -> str:
        j = int(checks.at[i, "out_of_frame_point"])
        px, py = coords[i, j]
        return (
            f"{point_name(j)} at ({px:g}, {py:g}) lies {checks.at[i, 'out_of_frame_px']:.1f} px "
            f"outside the {checks.at[i, 'width']:.0f}x{checks.at[i, 'height']:.0f} image "
            f"(tolerance {tol:g} of its larger side)"
        )

    eye_names = tuple(point_name(j) for j in fmt.eye_pair)
    rules = [
        Rule(
            "wrong_column_count",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(
                column="field_count", min_value=expected_fields, max_value=expected_fields
            ),
            lambda i: f"{checks.at[i, 'field_count']} fields, expected {expected_fields}",
        ),
        Rule(
            "non_numeric_coordinate",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(column="non_numeric_cells", max_value=0),
            lambda i: details["non_numeric"][i] or "",
        ),
        Rule(
            "missing_required_point",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(column="missing_required_cells", max_value=0),
            lambda i: details["missing"][i] or "",
        ),
        Rule(
            "image_invalid",  # the reason written is the image status itself (image_missing, ...)
            "quarantine",
            gxe.ExpectColumnValuesToBeInSet(column="image_status", value_set=["ok"]),
            lambda i: details["image"][i] or "",
        ),
        Rule(
            "point_far_outside_image",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(column="out_of_frame_rel", max_value=tol),
            far,
        ),
        Rule(
            "point_slightly_outside_image",
            "flag",
            gxe.ExpectColumnValuesToBeBetween(column="out_of_frame_px", max_value=0, mostly=0.0),
            far,
        ),
        Rule(
            "zero_eye_distance",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(
                column="eye_distance_px", min_value=settings.min_eye_distance_px
            ),
            lambda i: (
                f"{eye_names[0]} and {eye_names[1]} are "
                f"{checks.at[i, 'eye_distance_px']:.2f} px apart"
            ),
        ),
        Rule(
            "collapsed_points",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(
                column="shape_extent_px", min_value=settings.min_shape_extent_px
            ),
            lambda i: f"all points lie within {checks.at[i, 'shape_extent_px']:.2f} px",
        ),
        Rule(
            "mirrored_labels",
            "quarantine",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="eye_right_x",
                column_B="eye_left_x",
                ignore_row_if="either_value_is_missing",
            ),
            lambda i: (
                f"{eye_names[0]} (x={checks.at[i, 'eye_left_x']:g}) should lie left of "
                f"{eye_names[1]} (x={checks.at[i, 'eye_right_x']:g}) in the image"
            ),
        ),
    ]
    if fmt.name == "youtube68":
        rules.append(
            Rule(
                "duplicate_name",
                "quarantine",
                gxe.ExpectColumnValuesToBeUnique(column="name"),
                lambda i: f"{checks.at[i, 'name']!r} appears in more than one row",
            )
        )
    else:
        rules.append(
            # Video frames can repeat pixel for pixel (5 such rows in kaggle-format-15pt), each
            # with its own label: not an error, but worth knowing before a train/test split.
            Rule(
                "duplicate_image",
                "flag",
                gxe.ExpectColumnValuesToBeUnique(column="image_sha1"),
                lambda i: "the same 96x96 pixels appear in more than one row",
            )
        )
    return rules


def _run_gx(
    checks: pd.DataFrame, rules: list[Rule], suite_name: str, docs_dir: Path | None
) -> list[tuple[Rule, list[int], bool]]:
    """Runs the rules as a Great Expectations suite; returns each rule's unexpected row indices."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("keypoint_csv").add_dataframe_asset("rows")
    batch = asset.add_batch_definition_whole_dataframe("all_rows")
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
    for rule in rules:
        rule.expectation.meta = {"reason": rule.code, "kind": rule.kind}
        suite.add_expectation(rule.expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="facekeys",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),  # GX wants it absolute
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs"))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": checks})
    (validation,) = result.run_results.values()
    by_code = {rule.code: rule for rule in rules}
    outcome = []
    for res in validation.results:
        rule = by_code[res.expectation_config.meta["reason"]]
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"Great Expectations failed on {rule.code}: "
                f"{res.exception_info.get('exception_message')}"
            )
        unexpected = [int(i) for i in (res.result.get("unexpected_index_list") or [])]
        outcome.append((rule, unexpected, bool(res.success)))
    return outcome


def validate_csv(
    fmt: CsvFormat,
    csv_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    settings: ValidationSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Validates one keypoint CSV and writes its outputs to ``out_dir`` (replaced atomically).

    Outputs: ``valid.csv`` (passing rows, original values), ``quarantine.csv`` (original row,
    ``extra_fields``, ``row``, ``reasons``), ``flagged.csv`` (kept rows with a warning),
    ``report.json`` and ``data_docs/index.html``. Rows are numbered from 1, header excluded.

    Args:
        fmt: The CSV format.
        csv_path: The CSV file.
        out_dir: Output folder.
        images_dir: Image folder (required for formats whose images are files).
        settings: Rule thresholds.
        log: Receives human-readable lines (summary, first quarantined rows).

    Returns:
        The report (also written to ``report.json``).

    Raises:
        DataUnusableError: the file is unusable (unreadable, empty, header only, wrong schema,
            binary, or too many rows quarantined; outputs are still written in the last case).
    """
    settings = settings or ValidationSettings()
    log = log or (lambda line: None)
    csv_path = os.fspath(csv_path)
    gx_import = _import_gx_in_background()
    if not fmt.has_image_column:
        if images_dir is None:
            raise FacekeysError(f"{csv_path}: format {fmt.name} needs --images DIR")
        if not os.path.isdir(images_dir):
            raise DataUnusableError(f"{images_dir}: image folder does not exist")

    records = read_records(csv_path)
    schema = check_schema(fmt, records)
    rows = records.rows
    n = len(rows)
    expected_fields = len(records.header)
    field_count = np.array([len(r) for r in rows])
    ok_rows = field_count == expected_fields

    coords, non_numeric, non_numeric_detail = _parse_coordinates(
        rows, ok_rows, schema, fmt.num_points
    )
    blank = np.array(
        [
            [not rows[i][c].strip() for c in schema.coord_index]
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
        name = f"point {j}" if fmt.name == "youtube68" else KAGGLE_POINTS[j]
        missing_detail[i] = f"{name} is blank" + ("" if required[j] else " in x or y only")

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
        image_status, image_detail, sizes = _image_file_checks(names, images_dir, settings)

    geometry = _geometry(coords, sizes, fmt.eye_pair)
    checks = pd.DataFrame(
        {
            "row": np.arange(1, n + 1),
            "field_count": field_count,
            "non_numeric_cells": np.where(ok_rows, non_numeric, np.nan),
            "missing_required_cells": np.where(ok_rows, missing_required, np.nan),
            "image_status": pd.Series(image_status, dtype=object),
            "width": sizes[:, 0],
            "height": sizes[:, 1],
            **geometry,
            "name": pd.Series([s.strip() if s else s for s in names], dtype=object),
            "image_sha1": pd.Series(image_hash, dtype=object),
        }
    )
    details = {"non_numeric": non_numeric_detail, "missing": missing_detail, "image": image_detail}
    gx_import.join()
    rules = _rules(fmt, settings, checks, details, coords, expected_fields)

    with atomic_dir(out_dir) as staging:
        suite_name = f"{fmt.name}-{Path(csv_path).stem}"
        outcome = _run_gx(
            checks, rules, suite_name, staging / "data_docs" if settings.data_docs else None
        )
        reasons: list[list[str]] = [[] for _ in range(n)]
        flags: list[list[str]] = [[] for _ in range(n)]
        for rule, unexpected, _ in outcome:
            for i in unexpected:
                code = image_status[i] if rule.code == "image_invalid" else rule.code
                text = f"{code}: {rule.describe(i)}" if rule.describe else code
                (reasons if rule.kind == "quarantine" else flags)[i].append(text)
        quarantined = [i for i in range(n) if reasons[i]]
        flagged = [i for i in range(n) if flags[i] and not reasons[i]]
        reason_counts = Counter(r.split(":", 1)[0] for i in quarantined for r in reasons[i])
        flag_counts = Counter(f.split(":", 1)[0] for i in flagged for f in flags[i])

        _write_rows(
            staging / "valid.csv", records.header, (rows[i] for i in range(n) if not reasons[i])
        )
        _write_rows(
            staging / "quarantine.csv",
            [*records.header, "extra_fields", "row", "reasons"],
            (
                [
                    *_fit(rows[i], expected_fields),
                    ",".join(rows[i][expected_fields:]),
                    str(i + 1),
                    "; ".join(reasons[i]),
                ]
                for i in quarantined
            ),
        )
        _write_rows(
            staging / "flagged.csv",
            ["row", "name", "flags"],
            ([str(i + 1), names[i] or "", "; ".join(flags[i])] for i in flagged),
        )
        fraction = len(quarantined) / n
        report = {
            "format": fmt.name,
            "csv": csv_path,
            "csv_sha256": sha256_file(csv_path),
            "images": os.fspath(images_dir) if images_dir is not None else None,
            "rows_total": n,
            "rows_valid": n - len(quarantined),
            "rows_quarantined": len(quarantined),
            "quarantined_fraction": round(fraction, 6),
            "quarantine_reasons": dict(sorted(reason_counts.items())),
            "rows_flagged": len(flagged),
            "flags": dict(sorted(flag_counts.items())),
            "blank_lines_skipped": records.blank_lines,
            "usable": fraction <= settings.max_quarantine_fraction,
            "settings": _settings_dict(settings),
            "expectations": [
                {
                    "reason": rule.code,
                    "kind": rule.kind,
                    "expectation": rule.expectation.expectation_type,
                    "success": success,
                    "unexpected_rows": len(unexpected),
                }
                for rule, unexpected, success in outcome
            ],
            "data_docs": "data_docs/index.html" if settings.data_docs else None,
        }
        write_json(staging / "report.json", report)

    summary = (
        f"{csv_path}: {n} rows: {report['rows_valid']} valid, {len(quarantined)} quarantined"
        + (f" ({_top(reason_counts)})" if quarantined else "")
        + f", {len(flagged)} kept with flags"
        + (f" ({_top(flag_counts)})" if flagged else "")
    )
    log(summary)
    for i in quarantined[:10]:
        log(f"{csv_path}: row {i + 1} (line {records.lines[i]}): {reasons[i][0]}")
    if len(quarantined) > 10:
        log(f"{csv_path}: ... {len(quarantined) - 10} more in {Path(out_dir) / 'quarantine.csv'}")
    if not report["usable"]:
        raise DataUnusableError(
            f"{csv_path}: {len(quarantined)} of {n} rows quarantined ({fraction:.1%}) > "
            f"max_quarantine_fraction {settings.max_quarantine_fraction:g} "
            f"({_top(reason_counts)}); see {Path(out_dir) / 'quarantine.csv'}"
        )
    return report


def _fit(fields: list[str], count: int) -> list[str]:
    return (fields + [""] * count)[:count]


def _top(counts: Counter[str], k: int = 3) -> str:
    return ", ".join(f"{code} {num}" for code, num in counts.most_common(k))


def _settings_dict(settings: ValidationSettings) -> dict[str, Any]:
    return asdict(settings)


def _write_rows(path: Path, header: list[str], rows: Any) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
