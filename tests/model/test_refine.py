"""The refinement stage and the one prediction path: keypoint crops, two-model prediction in
original pixels, and a stage rerun that does not train a finished model again."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from facekeys.augment.settings import AugmentSettings
from facekeys.data.crop_geometry import apply_to_points, keypoint_box, square_crop_matrix, warp
from facekeys.data.labelled_splits import load_npz
from facekeys.errors import FacekeysError
from facekeys.inference.predictor import KeypointPredictor
from facekeys.model.settings import TrainSettings
from facekeys.model.training import train
from facekeys.model.training_log import EpochLogger, write_history_csv
from tests.model.test_train import TINY


def test_keypoint_box_crop_centres_and_scales_the_points():
    pts = np.random.default_rng(0).uniform([30, 50], [130, 110], (68, 2))
    pts[3] = np.nan  # unlabelled points do not count
    matrix = square_crop_matrix(keypoint_box(pts), 96, margin=0.25)
    inside = apply_to_points(matrix, pts[~np.isnan(pts).any(axis=1)])
    low, high = inside.min(axis=0), inside.max(axis=0)
    assert np.allclose((low + high) / 2, 47.5, atol=1e-9)  # centred on the crop's centre
    assert np.isclose((high - low).max(), 96 / 1.5)  # the longer side spans size / (1 + 2m)
    with pytest.raises(ValueError, match="at least two"):
        keypoint_box(np.full((68, 2), np.nan))


def test_refine_settings_come_from_the_dataset_entry():
    section = {"image_size": {"d": 128}, "copies": 2, "refine": {"d": {"image_size": 64,
               "margin": 0.2, "scale_range": [0.9, 1.1]}, "k": None}}  # fmt: skip
    refine = AugmentSettings.refine_from_params(section, "d")
    assert refine is not None
    assert (refine.image_size, refine.margin, refine.face_box) == (64, 0.2, "keypoints")
    assert refine.scale_range == (0.9, 1.1) and refine.copies == 2
    assert AugmentSettings.refine_from_params(section, "k") is None
    assert AugmentSettings.from_params(section, "d").face_box == "whole_image"
    section["refine"]["d"]["marginn"] = 1
    with pytest.raises(FacekeysError, match=r"augment\.refine\.d: unknown keys \['marginn'\]"):
        AugmentSettings.refine_from_params(section, "d")
    assert TrainSettings.refine_from_params({"epochs": 9, "refine": {"epochs": 3}}).epochs == 3
    with pytest.raises(FacekeysError, match=r"train\.refine: unknown keys"):
        TrainSettings.refine_from_params({"refine": {"epochz": 3}})


def test_refine_crops_fill_the_input_with_the_face(two_stage):
    test = load_npz(two_stage["dir"] / "aug" / "refine" / "test.npz")
    extent = (test["points"].max(axis=1) - test["points"].min(axis=1)).max(axis=1)
    assert np.allclose(extent, 32 / 1.4, atol=1e-3)  # margin 0.2 on each side
    meta = json.loads((two_stage["dir"] / "aug" / "refine" / "meta.json").read_text())
    assert meta["crop_policy"] == {"size": 32, "face_box": "keypoints", "margin": 0.2,
                                   "pad_value": 0}  # fmt: skip


def test_prediction_path_matches_the_training_crops(two_stage):
    """Predicting on original images crops exactly as augment did: same numbers as the model on
    the stored test crops, mapped back to original pixels."""
    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    train(root / "aug" / "refine", root / "model" / "refine", root / "c2.pt", TINY)
    predictor = KeypointPredictor.from_dir(root / "model")
    assert predictor.refine is not None
    images = [cv2.imread(str(two_stage["folder"] / n), cv2.IMREAD_UNCHANGED) for n in
              two_stage["names"]]  # fmt: skip
    refine = predictor.refine
    predictor.refine = None
    first_only = predictor.predict(images)
    test = load_npz(root / "aug" / "test.npz")
    on_crops = predictor.first.predict_crops(test["images"])
    expected = [apply_to_points(np.linalg.inv(np.vstack([m, [0, 0, 1]])), p)
                for m, p in zip(test["to_crop"], on_crops, strict=True)]  # fmt: skip
    assert first_only.shape == (8, 68, 2)
    assert np.allclose(first_only, np.stack(expected), atol=1e-3)
    predictor.refine = refine
    both = predictor.predict(images)
    # The refinement model saw crops around the first model's points, not the labels.
    boxes = [square_crop_matrix(keypoint_box(p), 32, 0.2) for p in first_only]
    crops = np.stack([warp(im, m, 32) for im, m in zip(images, boxes, strict=True)])
    refined = refine.predict_crops(crops)
    expected = [apply_to_points(np.linalg.inv(m), p) for m, p in zip(boxes, refined, strict=True)]
    assert np.allclose(both, np.stack(expected), atol=1e-3)
    assert not np.allclose(both, first_only, atol=1e-2)


def test_finished_checkpoint_is_not_trained_again(tiny_augmented, tmp_path):
    ckpt = tmp_path / "c.pt"
    first = train(tiny_augmented, tmp_path / "m", ckpt, TINY, keep_finished_checkpoint=True)
    assert ckpt.is_file()
    weights = (tmp_path / "m" / "model.pt").read_bytes()
    (tmp_path / "m" / "model.pt").unlink()  # DVC removes outputs before rerunning a stage
    lines: list[str] = []

    class Recorder(EpochLogger):
        def start(self, resumed_run_id):
            self.resumed = resumed_run_id
            return "run-1"

    recorder = Recorder()
    again = train(tiny_augmented, tmp_path / "m", ckpt, TINY, log=lines.append, logger=recorder,
                  keep_finished_checkpoint=True)  # fmt: skip
    assert any("finished for this config" in line for line in lines)
    # The run is started (resumed) even then, so the refinement network can log into it.
    assert again["run_id"] == "run-1"
    assert again["history"] == first["history"] and again["best_epoch"] == first["best_epoch"]
    assert (tmp_path / "m" / "model.pt").read_bytes() == weights


def test_history_csv_names_the_stage(tmp_path):
    row = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_nme": 0.1, "lr": 1e-3,
           "images_per_s": 10.0, "seconds": 2.0}  # fmt: skip
    write_history_csv(tmp_path / "h.csv", [row, row | {"epoch": 2, "stage": "refine"}])
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].endswith(",stage") and lines[1].endswith(",first")
    assert lines[2].startswith("2,") and lines[2].endswith(",refine")


def test_refine_entry_cannot_change_the_face_box():
    section = {"refine": {"d": {"face_box": "whole_image"}}}
    with pytest.raises(FacekeysError, match=r"augment\.refine\.d: face_box cannot be set here"):
        AugmentSettings.refine_from_params(section, "d")


def test_refine_data_refuses_partly_labelled_rows(tiny_kaggle, tmp_path):
    """Kaggle's 4-point rows would teach a box around a subset of the points; prediction crops
    around all of them. The stage stops with one line naming the file and the first such row."""
    from facekeys.augment.dataset import augment_dataset
    from tests.conftest import kaggle_row

    csv_path = tiny_kaggle([kaggle_row(), kaggle_row(missing_optional=True), kaggle_row()])
    settings = AugmentSettings(image_size=32, face_box="keypoints", margin=0.2, workers=1)
    splits = {"training": (csv_path, None), "test": (csv_path, None)}
    with pytest.raises(FacekeysError) as info:
        augment_dataset("kaggle15", splits, tmp_path / "out", settings)
    assert str(info.value) == (
        f"{csv_path}: row 2 (row2) and 0 more miss keypoints; refinement crops need all 15 "
        "points (set augment.refine.<dataset> to null for kaggle15)"
    )
    assert not (tmp_path / "out").exists()


def test_a_refinement_network_from_another_training_is_refused(two_stage):
    import shutil

    import torch

    from facekeys.model.checkpoints import name_partner

    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    train(root / "aug" / "refine", root / "model" / "refine", root / "c2.pt", TINY)
    name_partner(root / "model")
    assert KeypointPredictor.from_dir(root / "model").refine is not None
    partner = root / "model" / "refine" / "model.pt"
    # Another training's refinement network: the same layers, other weights.
    state = torch.load(partner, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, partner)

    named = re.escape(str(partner))
    with pytest.raises(FacekeysError, match=rf"^{named}: not the refinement network .*model\.json"):
        KeypointPredictor.from_dir(root / "model")
    shutil.rmtree(partner.parent)
    with pytest.raises(FacekeysError, match=rf"^{named}: missing, though .*model\.json names it"):
        KeypointPredictor.from_dir(root / "model")
