"""Export: TorchScript and ONNX agree with PyTorch, ONNX takes any batch size, and the exported
model predicts through the same path (and the same CLI) as the PyTorch one."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from facekeys.augment import load_npz
from facekeys.cli import main
from facekeys.errors import FacekeysError
from facekeys.export import export_model, load_exported
from facekeys.predict import KeypointPredictor
from facekeys.train import train
from tests.model.test_train import TINY


@pytest.fixture
def exported(two_stage):
    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    train(root / "aug" / "refine", root / "model" / "refine", root / "c2.pt", TINY)
    crops = {
        "first": load_npz(root / "aug" / "test.npz")["images"],
        "refine": load_npz(root / "aug" / "refine" / "test.npz")["images"],
    }
    card = export_model(root / "model", root / "model" / "export", crops)
    return two_stage, card, crops


def test_exports_agree_with_pytorch(exported):
    two_stage, card, crops = exported
    export_dir = two_stage["dir"] / "model" / "export"
    assert [n["name"] for n in card["networks"]] == ["first", "refine"]
    for network in card["networks"]:
        assert set(network["max_abs_difference_vs_pytorch"]) == {"torchscript", "onnx"}
        assert max(network["max_abs_difference_vs_pytorch"].values()) <= 1e-4
        for name in network["files"].values():
            assert (export_dir / name).is_file()
    saved = json.loads((export_dir / "model.json").read_text())
    assert saved["keypoints"]["flip_permutation"][36] == 45
    assert saved["networks"][1]["crop_policy"]["face_box"] == "keypoints"

    torch_predictor = KeypointPredictor.from_dir(two_stage["dir"] / "model")
    images = [cv2.imread(str(two_stage["folder"] / n), cv2.IMREAD_UNCHANGED)
              for n in two_stage["names"]]  # fmt: skip
    expected = torch_predictor.predict(images)
    for runtime in ("onnx", "torchscript"):
        predictor = load_exported(export_dir, runtime)
        assert np.allclose(predictor.predict(images), expected, atol=0.01)
    onnx_first = load_exported(export_dir).first
    for batch in (1, 3, 8):  # dynamic batch
        out = onnx_first.predict_crops(crops["first"][:batch])
        assert out.shape == (batch, 68, 2)


def test_predict_cli_takes_the_onnx_file(exported, tmp_path):
    two_stage, _card, _crops = exported
    onnx_file = two_stage["dir"] / "model" / "export" / "first.onnx"
    out_onnx, out_torch = tmp_path / "onnx.csv", tmp_path / "torch.csv"
    folder = str(two_stage["folder"])
    assert main(["predict", folder, "--model", str(onnx_file), "--out", str(out_onnx)]) == 0
    model_dir = str(two_stage["dir"] / "model")
    assert main(["predict", folder, "--model", model_dir, "--out", str(out_torch)]) == 0
    rows_onnx = list(csv.reader(out_onnx.open()))
    rows_torch = list(csv.reader(out_torch.open()))
    assert len(rows_onnx) == len(rows_torch) == 41  # header + 40 images
    a = np.array([[float(v) for v in r[1:]] for r in rows_onnx[1:]])
    b = np.array([[float(v) for v in r[1:]] for r in rows_torch[1:]])
    assert np.abs(a - b).max() < 0.01


def test_export_refuses_a_network_that_disagrees(two_stage, tmp_path):
    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    crops = {"first": load_npz(root / "aug" / "test.npz")["images"]}
    with pytest.raises(FacekeysError, match=r"export: first torchscript differs from PyTorch"):
        export_model(root / "model", tmp_path / "export", crops, tolerance=-1.0)
    assert not (tmp_path / "export").exists(), "nothing is left behind"
