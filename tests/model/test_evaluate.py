"""Evaluation scores what a model learned: a briefly trained network beats the mean-shape
baseline on people it never saw, in the report the evaluate stage writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from facekeys.augment.dataset import augment_dataset
from facekeys.augment.settings import AugmentSettings
from facekeys.evaluation.evaluate import SplitSource, evaluate_model
from facekeys.model.settings import TrainSettings
from facekeys.model.training import train
from tests.conftest import HEADER68, face_points_68, row68, write_csv

SIZE = 48


def _moving_faces(folder: Path, count: int) -> list[list[str]]:
    """Dot faces that move and scale from image to image (so the mean shape is a poor guess),
    three frames per person."""
    rng = np.random.default_rng(0)
    base, centre = face_points_68(SIZE, SIZE), np.array([SIZE / 2, SIZE / 2])
    rows = []
    for k in range(count):
        scale, shift = rng.uniform(0.6, 1.0), rng.uniform(-8, 8, 2)
        points = np.clip((base - centre) * scale + centre + shift, 2, SIZE - 3)
        image = np.full((SIZE, SIZE), 40, np.uint8)
        for x, y in np.round(points).astype(int):
            image[y - 1 : y + 2, x - 1 : x + 2] = 230
        name = f"person{k // 3}_{k % 3:02d}.png"
        cv2.imwrite(str(folder / name), image)
        rows.append(row68(name, points.round(2)))
    return rows


def test_a_trained_model_beats_the_mean_shape_on_new_people(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rows = _moving_faces(folder, 120)
    training = write_csv(tmp_path / "training.csv", HEADER68, rows[:102])
    test = write_csv(tmp_path / "test.csv", HEADER68, rows[102:])
    augment = AugmentSettings(image_size=32, copies=2, val_fraction=0.2, new_people_fraction=0.2,
                              rotate_deg=5, workers=1, preview_samples=2)  # fmt: skip
    splits = {"training": (training, str(folder)), "test": (test, str(folder))}
    meta = augment_dataset("youtube68", splits, tmp_path / "aug", augment)
    settings = TrainSettings(width=8, heatmap_stride=4, epochs=4, batch_size=16, lr=0.01,
                             ema_decay=0.9, threads=1, warmup_epochs=0.2)  # fmt: skip
    train(tmp_path / "aug", tmp_path / "model", tmp_path / "ckpt.pt", settings, log=print)
    new_people = np.load(tmp_path / "aug" / "new_people.npz")["source_index"]
    out = {key: tmp_path / f"{key}.out" for key in
           ("eval_json", "ced_csv", "landmarks_csv", "plot_png", "gallery_png")}  # fmt: skip

    evaluate_model(
        tmp_path / "model",
        [SplitSource("new_people", Path(training), folder, new_people)],
        tmp_path / "aug" / "train.npz",
        out,
    )

    report = json.loads(out["eval_json"].read_text())
    model, baseline = report["new_people"], report["new_people_mean_shape_baseline"]
    assert model["images"] == baseline["images"] == meta["counts"]["source_rows"]["new_people"]
    print(f"new people: NME {model['nme_mean']:.3f}, mean shape {baseline['nme_mean']:.3f}")
    assert baseline["nme_mean"] > 0.2  # the faces move: the mean shape is a poor guess ...
    assert model["nme_mean"] < baseline["nme_mean"] / 2  # ... and the model learned better
    assert "read by no choice" in report["splits"]["new_people"]
