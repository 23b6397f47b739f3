"""A labelled test split for Kaggle's layout, held out of ``training.csv`` when the source's own
``test.csv`` carries no keypoints (as the Kaggle competition's does)."""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any

from facekeys.data.csv_reading import MAX_FIELD_CHARS
from facekeys.errors import FacekeysError

# Share of Kaggle's fully labelled training rows held out as the test split where the source's
# own test.csv carries no labels (as the competition's does).
HELD_OUT_SHARE = 0.15


def hold_out_unlabelled_test(staging: Path) -> dict[str, Any] | None:
    """Replaces an unlabelled Kaggle ``test.csv`` by labelled rows held out of ``training.csv``.

    Kaggle's competition ``test.csv`` has only ``ImageId`` and ``Image``: nothing to score on.
    Rows with all 15 points are held out by a hash of their pixels (deterministic, independent
    of row order); every other row stays in ``training.csv``, malformed ones included, for
    validation to quarantine with a reason.

    Args:
        staging: The fetch's staging folder holding ``training.csv`` and ``test.csv``.

    Returns:
        What the manifest records about the split, or None when ``test.csv`` is labelled (or
        not in Kaggle's layout at all: validation judges it) and nothing was changed.

    Raises:
        FacekeysError: either CSV cannot be read or written.
    """
    test, training = staging / "test.csv", staging / "training.csv"
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        unlabelled = _unlabelled_rows(test)
        if unlabelled is None:
            return None
        held, kept = _split_training(training, staging / ".training.csv", staging / ".test.csv")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        where = getattr(exc, "filename", None) or f"{training.name} or {test.name}"
        raise FacekeysError(f"{where}: cannot split off a labelled test set: {exc}") from None
    os.replace(staging / ".training.csv", training)
    os.replace(staging / ".test.csv", test)
    return {
        "reason": "the source's test.csv has no keypoints (Kaggle's competition test set)",
        "unlabelled_test_rows_dropped": unlabelled,
        "share_of_full_rows": HELD_OUT_SHARE,
        "test_rows": held,
        "training_rows": kept,
    }


def _unlabelled_rows(test: Path) -> int | None:
    """The records of a ``test.csv`` in Kaggle's unlabelled layout, or None for any other."""
    with open(test, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        names = [name.strip() for name in header]
        if "Image" not in names or any(name.endswith("_x") for name in names):
            return None  # labelled, or not Kaggle's layout at all: validation judges it
        return sum(1 for row in reader if row)


def _split_training(training: Path, train_out_path: Path, test_out_path: Path) -> tuple[int, int]:
    """Writes the held-out full rows and the rest to two new CSVs; returns (held, kept)."""
    kept = held = 0
    with (
        open(training, encoding="utf-8-sig", newline="") as source,
        open(train_out_path, "w", encoding="utf-8", newline="") as train_out,
        open(test_out_path, "w", encoding="utf-8", newline="") as test_out,
    ):
        rows = csv.reader(source)
        train_header = next(rows, [])
        writers = csv.writer(train_out), csv.writer(test_out)
        for writer in writers:
            writer.writerow(train_header)
        for row in rows:
            if not row:
                continue  # a blank line is no record (validation counts it the same way)
            full = len(row) == len(train_header) and all(v.strip() for v in row)
            digest = hashlib.sha256(row[-1].encode()).digest()
            if full and int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_SHARE:
                writers[1].writerow(row)
                held += 1
            else:
                writers[0].writerow(row)
                kept += 1
    return held, kept
