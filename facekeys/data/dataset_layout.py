"""The data sets the pipeline knows: their fixed layout on disk and their CSV format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Split:
    """One CSV of a data set and the folder its image names are relative to (if any)."""

    csv: str
    images: str | None


@dataclass(frozen=True)
class DatasetLayout:
    """Where a data set's files lie once fetched, and how to read them.

    Attributes:
        format: CSV format id (see ``facekeys.data.keypoint_formats.FORMATS``).
        splits: Split name -> CSV and image folder, relative to the data set folder.
        csv_zips: CSVs a source may ship zipped, as (csv, zip) pairs (Kaggle's ``training.zip``).
        test_people: Whether the test split's people also appear in training, in words: what
            its numbers can claim.
    """

    format: str
    splits: dict[str, Split]
    csv_zips: tuple[tuple[str, str], ...] = ()
    test_people: str = ""

    @property
    def csvs(self) -> tuple[str, ...]:
        return tuple(s.csv for s in self.splits.values())

    @property
    def image_dirs(self) -> tuple[str, ...]:
        return tuple(s.images for s in self.splits.values() if s.images)


DATASETS: dict[str, DatasetLayout] = {
    "youtube-faces-68": DatasetLayout(
        format="youtube68",
        splits={
            "training": Split("training_frames_keypoints.csv", "training"),
            "test": Split("test_frames_keypoints.csv", "test"),
        },
        test_people="seen: test frames come from the same clips as training frames (optimistic)",
    ),
    "kaggle-15": DatasetLayout(
        format="kaggle15",
        splits={"training": Split("training.csv", None), "test": Split("test.csv", None)},
        csv_zips=(("training.csv", "training.zip"), ("test.csv", "test.zip")),
        # Kaggle rows name no people: held-out rows (fetch's, or derived from the 68-point test
        # frames) may show people who are also in training.
        test_people="unknown: rows name no people, so test faces may be of people in training",
    ),
}


def describe_source(manifest: dict[str, Any]) -> dict[str, Any]:
    """Which data a fetched folder holds, from its manifest: what models and runs record.

    Returns:
        ``source`` (folder, zip, URL or ``derived:<dataset>``), ``origin`` (params or the
        variable that set it) and, for derived data, ``derived_from`` (the base data set and its
        source).
    """
    described = {"source": manifest.get("source"), "origin": manifest.get("source_origin")}
    base = manifest.get("derived_from")
    if base:
        described["derived_from"] = {"dataset": base.get("dataset"), "source": base.get("source")}
    return described
