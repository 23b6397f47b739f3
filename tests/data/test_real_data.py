"""Both real data sets in ../shared/data validate, and every row is accounted for."""

from __future__ import annotations

import json

import pytest

from facekeys.datasets import DATASETS
from facekeys.fetch import fetch_dataset
from facekeys.schemes import FORMATS
from facekeys.validate import ValidationSettings, validate_csv

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

EXPECTED_ROWS = {"training": 3462, "test": 301}


@pytest.mark.parametrize(
    ("dataset", "folder"),
    [("youtube-faces-68", "youtube-faces-68"), ("kaggle-15", "kaggle-format-15pt")],
)
def test_real_dataset_validates(shared_data, tmp_path, dataset, folder):
    raw = tmp_path / "raw"
    manifest = fetch_dataset(dataset, str(shared_data / folder), raw)
    layout = DATASETS[dataset]
    assert set(manifest["csvs"]) == set(layout.csvs)
    for split, files in layout.splits.items():
        out = tmp_path / split
        report = validate_csv(
            FORMATS[layout.format],
            raw / files.csv,
            out,
            images_dir=raw / files.images if files.images else None,
            settings=ValidationSettings(data_docs=False),
        )
        assert report["usable"]
        assert report["rows_total"] == EXPECTED_ROWS[split]
        assert report["rows_total"] == report["rows_valid"] + report["rows_quarantined"]
        assert sum(report["quarantine_reasons"].values()) >= report["rows_quarantined"]
        valid_lines = (out / "valid.csv").read_text(encoding="utf-8").count("\n") - 1
        assert valid_lines == report["rows_valid"]
        assert json.loads((out / "report.json").read_text())["rows_valid"] == report["rows_valid"]
