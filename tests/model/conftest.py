"""Fixtures of the model tier: tiny two-network (first + refinement) data sets, and a tiny model
logged to a temporary MLflow store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.augment.dataset import augment_dataset
from facekeys.augment.settings import AugmentSettings
from tests.conftest import HEADER68, row68, synthetic_face_images, write_csv
from tests.model.test_train import TINY


@pytest.fixture
def two_stage(tmp_path: Path) -> dict:
    """Tiny first-stage and refinement data sets, and the source images they came from."""
    folder = tmp_path / "images"
    folder.mkdir()
    images, points = synthetic_face_images(40, size=64)
    rows = []
    for k, (image, pts) in enumerate(zip(images, points, strict=True)):
        # Wider than tall, so the whole-image crop pads: the maps back must undo that exactly.
        wide = cv2.copyMakeBorder(image, 0, 0, 16, 0, cv2.BORDER_CONSTANT, value=40)
        name = f"person{k % 10}_{k:02d}.png"
        cv2.imwrite(str(folder / name), wide)
        rows.append(row68(name, pts + np.array([16.0, 0.0])))
    splits = {
        "training": (write_csv(tmp_path / "train.csv", HEADER68, rows[:32]), str(folder)),
        "test": (write_csv(tmp_path / "test.csv", HEADER68, rows[32:]), str(folder)),
    }
    first = AugmentSettings(
        image_size=32, copies=1, val_fraction=0.2, rotate_deg=5, workers=1, preview_samples=2
    )
    refine = dataclasses.replace(first, face_box="keypoints", margin=0.2, shift_fraction=0.03)
    augment_dataset("youtube68", splits, tmp_path / "aug", first)
    augment_dataset("youtube68", splits, tmp_path / "aug" / "refine", refine)
    return {"dir": tmp_path, "folder": folder, "names": [r[0] for r in rows[32:]]}


@pytest.fixture
def logged_model(tiny_augmented, tmp_path, monkeypatch):
    """A tiny model trained into ``tmp_path/model`` and logged to a temporary SQLite store:
    the store's URI, the logged model's URI and its run id."""
    from facekeys.model.training import train
    from facekeys.tracking.runs import MlflowRun

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = MlflowRun(uri, "facekeys-test", params={}, tags={},
                    artifact_root=(tmp_path / "artifacts").as_uri())  # fmt: skip
    summary = train(tiny_augmented, tmp_path / "model", tmp_path / "ckpt.pt", TINY, logger=run)
    (tmp_path / "h.csv").write_text("epoch\n1\n")
    (tmp_path / "p.png").write_bytes(b"png")
    model_uri = run.finish(summary, tmp_path / "model", tmp_path / "p.png", tmp_path / "h.csv")
    return uri, model_uri, run.run_id
