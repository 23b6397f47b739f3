"""Validation rules of the Kaggle 15-point format, on tiny generated data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from facekeys.data.keypoint_formats import KAGGLE15
from facekeys.data.validate import ValidationSettings, validate_csv
from facekeys.errors import DataUnusableError
from tests.conftest import KAGGLE_HEADER, kaggle_row, write_csv

LENIENT = ValidationSettings(max_quarantine_fraction=1.0, data_docs=False)


def run(csv_path: Path, out: Path) -> dict:
    return validate_csv(KAGGLE15, csv_path, out, settings=LENIENT)


def reasons_by_row(out: Path) -> dict[str, str]:
    with open(out / "quarantine.csv", newline="", encoding="utf-8") as handle:
        return {r["row"]: r["reasons"] for r in csv.DictReader(handle)}


def test_full_and_four_point_rows_pass(tiny_kaggle, tmp_path):
    path = tiny_kaggle([kaggle_row(), kaggle_row(missing_optional=True)])
    report = run(path, tmp_path / "out")
    assert report["rows_valid"] == 2 and report["rows_quarantined"] == 0


@pytest.mark.parametrize("column", ["nose_tip_x", "left_eye_center_y", "mouth_center_bottom_lip_x"])
def test_required_point_blank(tiny_kaggle, tmp_path, column):
    path = tiny_kaggle([kaggle_row(), kaggle_row(**{column: ""})])
    run(path, tmp_path / "out")
    assert reasons_by_row(tmp_path / "out")["2"].startswith("missing_required_point")


def test_optional_point_half_present(tiny_kaggle, tmp_path):
    path = tiny_kaggle([kaggle_row(missing_optional=True, mouth_left_corner_x="40")])
    run(path, tmp_path / "out")
    assert reasons_by_row(tmp_path / "out")["1"] == (
        "missing_required_point: mouth_left_corner is blank in x or y only"
    )


@pytest.mark.parametrize(
    ("pixels", "code"),
    [
        (" ".join(["1"] * 9215), "image_pixel_count"),
        (" ".join(["1"] * 9217), "image_pixel_count"),
        (" ".join(["1"] * 9215 + ["256"]), "image_pixel_value"),
        (" ".join(["1"] * 9215 + ["-3"]), "image_pixel_value"),
        (" ".join(["1"] * 9215 + ["1.5"]), "image_pixel_value"),
        ("", "image_pixels_missing"),
        (" ".join(["1"] * 9215 + ["\u0663"]), "image_pixel_value"),  # an Arabic-Indic digit
        ("\t".join(["7"] * 9216), "ok"),  # any whitespace separates, as in numpy
        (" ".join(["1"] * 9215 + ["18446744073709551617"]), "image_pixel_value"),  # > int64
    ],
)
def test_image_column(tiny_kaggle, tmp_path, pixels, code):
    path = tiny_kaggle([kaggle_row(), kaggle_row(pixels=pixels)], unique_images=False)
    report = run(path, tmp_path / "out")
    if code == "ok":
        assert report["rows_valid"] == 2
    else:
        assert reasons_by_row(tmp_path / "out")["2"].startswith(code)


def test_mirrored_eyes(tiny_kaggle, tmp_path):
    # Kaggle's left is the subject's: left_eye_center must lie on the image's right.
    path = tiny_kaggle([kaggle_row(left_eye_center_x="30", right_eye_center_x="66")])
    run(path, tmp_path / "out")
    assert reasons_by_row(tmp_path / "out")["1"].startswith("mirrored_labels: right_eye_center")


def test_far_and_slightly_outside(tiny_kaggle, tmp_path):
    rows = [kaggle_row(nose_tip_x="-200"), kaggle_row(nose_tip_x="98")]
    report = run(tiny_kaggle(rows), tmp_path / "out")
    assert reasons_by_row(tmp_path / "out")["1"].startswith("point_far_outside_image: nose_tip")
    assert report["flags"] == {"point_slightly_outside_image": 1}


def test_non_numeric(tiny_kaggle, tmp_path):
    run(tiny_kaggle([kaggle_row(nose_tip_y="twelve")]), tmp_path / "out")
    assert reasons_by_row(tmp_path / "out")["1"].startswith("non_numeric_coordinate")


def test_duplicate_image_flagged_not_dropped(tiny_kaggle, tmp_path):
    same = kaggle_row()
    report = run(tiny_kaggle([same, same, kaggle_row()], unique_images=False), tmp_path / "out")
    assert report["rows_valid"] == 3
    assert report["flags"] == {"duplicate_image": 3}


def test_columns_in_other_order_accepted(tmp_path):
    header = list(reversed(KAGGLE_HEADER))
    row = kaggle_row()
    path = write_csv(tmp_path / "t.csv", header, [[row[c] for c in header]])
    assert run(path, tmp_path / "out")["rows_valid"] == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (KAGGLE_HEADER[:-1], r"missing \['Image'\]"),
        ([*KAGGLE_HEADER, "Extra"], r"unexpected \['Extra'\]"),
        ([*KAGGLE_HEADER[:-1], "nose_tip_x"], r"missing \['Image'\].*repeated \['nose_tip_x'\]"),
    ],
)
def test_wrong_schema(tmp_path, header, message):
    path = write_csv(tmp_path / "t.csv", header, [["1"] * len(header)])
    with pytest.raises(DataUnusableError, match=message):
        run(path, tmp_path / "out")
