"""Validation of keypoint CSVs: schema, per-row rules, quarantine, report and Data Docs.

How it works: the file is read record by record (nothing dropped), the schema is checked (a wrong
schema makes the whole file unusable), then every row gets derived check columns (field count,
image status, how far points fall outside the image, eye distance, ...;
``facekeys.data.validation_checks``). A Great Expectations suite runs over those columns
(``facekeys.data.validation_expectations``); each expectation names the quarantine reason (or
kept-row flag) it stands for (``facekeys.data.validation_rules``), and its unexpected rows decide
which rows go to ``quarantine.csv`` (``facekeys.data.validation_report``). Data Docs render the same
validation for a person to read. This module owns the settings, the schema check and
``validate_csv``, which runs those steps and writes ``report.json``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facekeys.data.atomic_files import atomic_dir, sha256_file, write_json
from facekeys.data.csv_reading import CsvRecords, read_records
from facekeys.errors import DataUnusableError, FacekeysError
from facekeys.data.images import ImageLimits
from facekeys.data.keypoint_formats import CsvFormat, youtube68_header_variants
from facekeys.data.validation_checks import SchemaColumns, row_checks, xy_name
from facekeys.data.validation_expectations import import_gx_in_background, run_suite
from facekeys.data.validation_report import (
    RowVerdicts,
    judge_rows,
    summary_lines,
    top_counts,
    write_row_files,
)
from facekeys.data.validation_rules import Rule, Thresholds, build_rules


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


def check_schema(fmt: CsvFormat, records: CsvRecords) -> SchemaColumns:
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
                (
                    (i, h)
                    for i, h in enumerate(header[1:], 1)
                    if h not in {str(i - 1), xy_name(i - 1)}
                ),
                None,
            )
            if bad is None:
                raise DataUnusableError(
                    f"{path}: wrong schema for youtube68: coordinate headers mix 0..135 and "
                    "x0,y0,... naming; use one of them"
                )
            raise DataUnusableError(
                f"{path}: wrong schema for youtube68: column {bad[0] + 1} is {bad[1]!r}, expected "
                f"{str(bad[0] - 1)!r} or {xy_name(bad[0] - 1)!r}"
            )
        return SchemaColumns(coord_index=list(range(1, expected)), name_index=0, image_index=None)

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
    return SchemaColumns(
        coord_index=[header.index(c) for c in fmt.coordinate_columns()],
        name_index=None,
        image_index=header.index("Image"),
    )


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
    gx_import = import_gx_in_background()
    _require_images_dir(fmt, csv_path, images_dir)
    records = read_records(csv_path)
    schema = check_schema(fmt, records)
    checks = row_checks(fmt, records, schema, images_dir, settings.image_limits, settings.workers)
    gx_import.join()
    rules = build_rules(fmt, checks, len(records.header), _thresholds(settings))
    with atomic_dir(out_dir) as staging:
        suite_name = f"{fmt.name}-{Path(csv_path).stem}"
        docs_dir = staging / "data_docs" if settings.data_docs else None
        outcome = run_suite(checks.table, rules, suite_name, docs_dir)
        verdicts = judge_rows(outcome, checks.image_status, len(records.rows))
        write_row_files(staging, records, verdicts, checks.names)
        report = _report(fmt, csv_path, images_dir, records, verdicts, outcome, settings)
        write_json(staging / "report.json", report)
    for line in summary_lines(csv_path, records, verdicts, Path(out_dir)):
        log(line)
    if not report["usable"]:
        quarantined, n = len(verdicts.quarantined), len(records.rows)
        raise DataUnusableError(
            f"{csv_path}: {quarantined} of {n} rows quarantined ({quarantined / n:.1%}) > "
            f"max_quarantine_fraction {settings.max_quarantine_fraction:g} "
            f"({top_counts(verdicts.reason_counts)}); see {Path(out_dir) / 'quarantine.csv'}"
        )
    return report


def _require_images_dir(
    fmt: CsvFormat, csv_path: str, images_dir: str | os.PathLike[str] | None
) -> None:
    """Refuses a format whose images are files without an existing image folder."""
    if not fmt.has_image_column:
        if images_dir is None:
            raise FacekeysError(f"{csv_path}: format {fmt.name} needs --images DIR")
        if not os.path.isdir(images_dir):
            raise DataUnusableError(f"{images_dir}: image folder does not exist")


def _thresholds(settings: ValidationSettings) -> Thresholds:
    return Thresholds(
        out_of_frame_tolerance=settings.out_of_frame_tolerance,
        min_eye_distance_px=settings.min_eye_distance_px,
        min_shape_extent_px=settings.min_shape_extent_px,
    )


def _report(
    fmt: CsvFormat,
    csv_path: str,
    images_dir: str | os.PathLike[str] | None,
    records: CsvRecords,
    verdicts: RowVerdicts,
    outcome: list[tuple[Rule, list[int], bool]],
    settings: ValidationSettings,
) -> dict[str, Any]:
    """What ``report.json`` records: counts, reasons, flags, settings and each expectation."""
    n, quarantined = len(records.rows), verdicts.quarantined
    fraction = len(quarantined) / n
    return {
        "format": fmt.name,
        "csv": csv_path,
        "csv_sha256": sha256_file(csv_path),
        "images": os.fspath(images_dir) if images_dir is not None else None,
        "rows_total": n,
        "rows_valid": n - len(quarantined),
        "rows_quarantined": len(quarantined),
        "quarantined_fraction": round(fraction, 6),
        "quarantine_reasons": dict(sorted(verdicts.reason_counts.items())),
        "rows_flagged": len(verdicts.flagged),
        "flags": dict(sorted(verdicts.flag_counts.items())),
        "blank_lines_skipped": records.blank_lines,
        "usable": fraction <= settings.max_quarantine_fraction,
        "settings": asdict(settings),
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
