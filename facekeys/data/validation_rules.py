"""The validation rules: one Great Expectations expectation per rule over the row check columns
(``facekeys.data.validation_checks``), whether its failing rows are quarantined or kept with a flag,
and the one-line reason written for each failing row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from facekeys.data.keypoint_formats import CsvFormat
from facekeys.data.validation_checks import RowChecks, point_name


@dataclass(frozen=True)
class Rule:
    """One Great Expectations expectation and what its unexpected rows mean."""

    code: str
    kind: str  # "quarantine" or "flag"
    expectation: Any
    describe: Callable[[int], str] | None = None


@dataclass(frozen=True)
class Thresholds:
    """The rules' limits (from ``validate.ValidationSettings``).

    Attributes:
        out_of_frame_tolerance: How far a point may lie outside the image, as a fraction of the
            image's larger side, and still be kept (flagged).
        min_eye_distance_px: Eye pair closer than this is degenerate.
        min_shape_extent_px: Points spanning less than this (both axes) are collapsed.
    """

    out_of_frame_tolerance: float
    min_eye_distance_px: float
    min_shape_extent_px: float


def build_rules(
    fmt: CsvFormat, checks: RowChecks, expected_fields: int, thresholds: Thresholds
) -> list[Rule]:
    """The rules for one file, in the order they run and are reported.

    Args:
        fmt: The CSV format.
        checks: The row check columns the expectations read and the messages quote.
        expected_fields: Fields a row must have (the header's).
        thresholds: The rules' limits.
    """
    text = _Reasons(fmt, checks.table, checks.coords, thresholds.out_of_frame_tolerance)
    return [
        *_record_rules(checks.details, text, expected_fields),
        *_geometry_rules(text, thresholds),
        _duplicate_rule(fmt, text),
    ]


class _Reasons:
    """The reason line written for a failing row ``i`` (0-based), one method per rule."""

    def __init__(
        self, fmt: CsvFormat, table: pd.DataFrame, coords: np.ndarray, tolerance: float
    ) -> None:
        self.fmt = fmt
        self.table = table
        self.coords = coords
        self.tolerance = tolerance
        self.eye_names = tuple(point_name(fmt, j) for j in fmt.eye_pair)

    def field_count(self, i: int, expected_fields: int) -> str:
        return f"{self.table.at[i, 'field_count']} fields, expected {expected_fields}"

    def far_point(self, i: int) -> str:
        checks = self.table
        j = int(checks.at[i, "out_of_frame_point"])
        px, py = self.coords[i, j]
        return (
            f"{point_name(self.fmt, j)} at ({px:g}, {py:g}) lies "
            f"{checks.at[i, 'out_of_frame_px']:.1f} px "
            f"outside the {checks.at[i, 'width']:.0f}x{checks.at[i, 'height']:.0f} image "
            f"(tolerance {self.tolerance:g} of its larger side)"
        )

    def eye_distance(self, i: int) -> str:
        return (
            f"{self.eye_names[0]} and {self.eye_names[1]} are "
            f"{self.table.at[i, 'eye_distance_px']:.2f} px apart"
        )

    def collapsed(self, i: int) -> str:
        return f"all points lie within {self.table.at[i, 'shape_extent_px']:.2f} px"

    def mirrored(self, i: int) -> str:
        return (
            f"{self.eye_names[0]} (x={self.table.at[i, 'eye_left_x']:g}) should lie left of "
            f"{self.eye_names[1]} (x={self.table.at[i, 'eye_right_x']:g}) in the image"
        )

    def duplicate_name(self, i: int) -> str:
        return f"{self.table.at[i, 'name']!r} appears in more than one row"


def _record_rules(
    details: dict[str, list[str | None]], text: _Reasons, expected_fields: int
) -> list[Rule]:
    """Rules on the record itself: field count, numbers, required points, the image."""
    import great_expectations.expectations as gxe

    return [
        Rule(
            "wrong_column_count",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(
                column="field_count", min_value=expected_fields, max_value=expected_fields
            ),
            lambda i: text.field_count(i, expected_fields),
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
    ]


def _geometry_rules(text: _Reasons, thresholds: Thresholds) -> list[Rule]:
    """Rules on where the points lie: inside the image, eyes apart and in order, spread out."""
    import great_expectations.expectations as gxe

    return [
        Rule(
            "point_far_outside_image",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(
                column="out_of_frame_rel", max_value=thresholds.out_of_frame_tolerance
            ),
            text.far_point,
        ),
        Rule(
            "point_slightly_outside_image",
            "flag",
            gxe.ExpectColumnValuesToBeBetween(column="out_of_frame_px", max_value=0, mostly=0.0),
            text.far_point,
        ),
        Rule(
            "zero_eye_distance",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(
                column="eye_distance_px", min_value=thresholds.min_eye_distance_px
            ),
            text.eye_distance,
        ),
        Rule(
            "collapsed_points",
            "quarantine",
            gxe.ExpectColumnValuesToBeBetween(
                column="shape_extent_px", min_value=thresholds.min_shape_extent_px
            ),
            text.collapsed,
        ),
        Rule(
            "mirrored_labels",
            "quarantine",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="eye_right_x",
                column_B="eye_left_x",
                ignore_row_if="either_value_is_missing",
            ),
            text.mirrored,
        ),
    ]


def _duplicate_rule(fmt: CsvFormat, text: _Reasons) -> Rule:
    """The rule on repeats: a repeated image name (quarantined) or repeated pixels (flagged)."""
    import great_expectations.expectations as gxe

    if fmt.name == "youtube68":
        return Rule(
            "duplicate_name",
            "quarantine",
            gxe.ExpectColumnValuesToBeUnique(column="name"),
            text.duplicate_name,
        )
    # Video frames can repeat pixel for pixel (5 such rows in kaggle-format-15pt), each with its
    # own label: not an error, but worth knowing before a train/test split.
    return Rule(
        "duplicate_image",
        "flag",
        gxe.ExpectColumnValuesToBeUnique(column="image_sha1"),
        lambda i: "the same 96x96 pixels appear in more than one row",
    )
