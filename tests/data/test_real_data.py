"""Both real data sets in ../shared/data validate, and every row is accounted for."""

from __future__ import annotations

import json

import pytest

from facekeys.data.dataset_layout import DATASETS
from facekeys.data.fetch import fetch_dataset
from facekeys.data.keypoint_formats import FORMATS
from facekeys.data.validate import ValidationSettings, validate_csv

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


def test_the_derived_kaggle_layout_matches_the_published_one(shared_data, tmp_path):
    """``derived:youtube-faces-68`` rebuilds kaggle-format-15pt, which was made the same way:
    the same points exactly, the same pixels up to rounding, the same share of partial rows."""
    import numpy as np
    import pandas as pd

    from facekeys.data.fetch import fetch_planned
    from facekeys.data.source_plan import FetchSettings, plan_source

    sources = {
        "youtube-faces-68": str(shared_data / "youtube-faces-68"),
        "kaggle-15": "derived:youtube-faces-68",
    }
    plan = plan_source("kaggle-15", sources, FetchSettings(), environ={})
    derived = fetch_planned(plan, tmp_path / "derived", FetchSettings(), tmp_path / "raw")
    assert derived["derived_rows"]["training"]["skipped"] == 0
    published = tmp_path / "published"
    fetch_dataset("kaggle-15", str(shared_data / "kaggle-format-15pt"), published)
    for split in ("training", "test"):
        mine = pd.read_csv(tmp_path / "derived" / f"{split}.csv")
        theirs = pd.read_csv(published / f"{split}.csv")
        assert list(mine.columns) == list(theirs.columns) and len(mine) == len(theirs)
        a, b = mine.iloc[:, :30].to_numpy(float), theirs.iloc[:, :30].to_numpy(float)
        both = ~np.isnan(a) & ~np.isnan(b)
        assert np.abs(a - b)[both].max() < 1e-5
        assert abs(np.isnan(a).any(axis=1).mean() - np.isnan(b).any(axis=1).mean()) < 0.03
        pixels = [
            np.abs(np.array(x.split(), dtype=np.int16) - np.array(y.split(), dtype=np.int16))
            for x, y in zip(mine["Image"][::10], theirs["Image"][::10], strict=True)
        ]
        assert np.mean([p.mean() for p in pixels]) < 1.0 and max(p.max() for p in pixels) <= 8
