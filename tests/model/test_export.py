"""Export: TorchScript and ONNX agree with PyTorch, ONNX takes any batch size, and the exported
model predicts through the same path (and the same CLI) as the PyTorch one."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json

import cv2
import numpy as np
import onnx
import pytest

from facekeys.cli import main
from facekeys.data.labelled_splits import load_npz
from facekeys.errors import FacekeysError
from facekeys.export.exporter import export_model
from facekeys.export.int8 import Int8Data, Int8Settings
from facekeys.inference.exported_runtimes import load_exported
from facekeys.inference.predictor import KeypointPredictor
from facekeys.model.training import train
from tests.model.test_train import TINY


@pytest.fixture
def exported(two_stage):
    root = two_stage["dir"]
    # The shipped shapes: a stride-4 grid for the first network, no stem block in the second.
    first = dataclasses.replace(TINY, heatmap_stride=4)
    train(root / "aug", root / "model", root / "c1.pt", first)
    refine = dataclasses.replace(TINY, stem_block=False)
    train(root / "aug" / "refine", root / "model" / "refine", root / "c2.pt", refine)
    tests = {"first": load_npz(root / "aug" / "test.npz"),
             "refine": load_npz(root / "aug" / "refine" / "test.npz")}  # fmt: skip
    crops = {name: test["images"] for name, test in tests.items()}
    card = export_model(
        root / "model", root / "model" / "export", crops, int8=INT8, int8_data=_int8_data(root)
    )
    return two_stage, card, crops


# The tiny models are barely trained; the int8 check is exercised by its own test below.
INT8 = Int8Settings(calibration_crops=16, max_nme_increase=1.0)


def _int8_data(root):
    data = {}
    for name, folder in (("first", root / "aug"), ("refine", root / "aug" / "refine")):
        test = load_npz(folder / "test.npz")
        data[name] = Int8Data(load_npz(folder / "train.npz")["images"], test["points"],
                              test["mask"])  # fmt: skip
    return data


def test_exports_agree_with_pytorch(exported):
    two_stage, card, crops = exported
    export_dir = two_stage["dir"] / "model" / "export"
    assert [n["name"] for n in card["networks"]] == ["first", "refine"]
    for network in card["networks"]:
        assert set(network["max_abs_difference_vs_pytorch"]) == {"torchscript", "onnx"}
        assert network["files"]["onnx_int8"] == f"{network['name']}.int8.onnx"
        report = network["int8"]
        # 8-bit convolutions change the numbers, a little: same points to within a pixel or so.
        assert 0 < report["max_abs_difference_vs_pytorch"] < 0.1
        assert abs(report["nme_int8"] - report["nme_pytorch"]) < 0.05
        assert max(network["max_abs_difference_vs_pytorch"].values()) <= 1e-4
        for name in network["files"].values():
            assert (export_dir / name).is_file()
    for name in ("first", "refine"):
        # Float stay the gray input convolution and the heatmap layer; the others are int8
        # (their weights come through a DequantizeLinear, not straight from an initializer).
        graph = onnx.load(str(export_dir / f"{name}.int8.onnx")).graph
        made_by = {out: node.op_type for node in graph.node for out in node.output}
        convs = [node for node in graph.node if node.op_type == "Conv"]
        quantised = [made_by.get(conv.input[1]) == "DequantizeLinear" for conv in convs]
        assert quantised[0] is False and quantised[-1] is False and all(quantised[1:-1])
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
    int8 = load_exported(export_dir, "onnx_int8").predict(images)
    assert np.abs(int8 - expected).mean() < 1.0  # pixels of 64-px images
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


def test_int8_export_refuses_a_network_that_loses_accuracy(two_stage, tmp_path):
    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    crops = {"first": load_npz(root / "aug" / "test.npz")["images"]}
    strict = Int8Settings(calibration_crops=8, max_nme_increase=-1.0)  # nothing can pass
    with pytest.raises(
        FacekeysError, match=r"export: first int8 selection-crop .* export\.int8 to"
    ):
        export_model(root / "model", tmp_path / "export", crops, int8=strict,
                     int8_data=_int8_data(root))  # fmt: skip
    assert not (tmp_path / "export").exists()


def test_export_refuses_a_model_with_nan_weights(two_stage, tmp_path):
    import torch

    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    state = torch.load(root / "model" / "model.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    state[name] = torch.full_like(state[name], float("nan"))
    torch.save(state, root / "model" / "model.pt")
    crops = {"first": load_npz(root / "aug" / "test.npz")["images"]}
    with pytest.raises(FacekeysError, match=r"export: the first network predicts NaN or inf"):
        export_model(root / "model", tmp_path / "export", crops)
    assert not (tmp_path / "export").exists()


def test_export_refuses_an_exported_file_that_lost_its_weights(two_stage, tmp_path,
                                                               monkeypatch):  # fmt: skip
    """The files written from a copy whose convolutions are zeroed (what a broken export
    would give) fail the check at the shipped tolerance."""
    import torch

    import facekeys.export.exporter as export

    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    write_files = export._export_network

    def zeroed_export(stage, folder, name):
        broken = dataclasses.replace(stage, model=copy.deepcopy(stage.model))
        with torch.no_grad():
            for module in broken.model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    module.weight.zero_()
        return write_files(broken, folder, name)

    monkeypatch.setattr(export, "_export_network", zeroed_export)
    crops = {"first": load_npz(root / "aug" / "test.npz")["images"]}
    with pytest.raises(FacekeysError, match=r"export: first torchscript differs from PyTorch"):
        export_model(root / "model", tmp_path / "export", crops)
    assert not (tmp_path / "export").exists()


def test_int8_export_refuses_a_network_calibrated_on_blank_crops(two_stage, tmp_path):
    """Calibration on black crops gives activation ranges that clip real faces: the int8
    network loses accuracy, and the check catches it at the shipped limit."""
    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    crops = {"first": load_npz(root / "aug" / "test.npz")["images"]}
    data = _int8_data(root)["first"]
    blank = dataclasses.replace(data, calibration=np.zeros_like(data.calibration))
    shipped = Int8Settings(calibration_crops=16)
    with pytest.raises(FacekeysError, match=r"export: first int8 selection-crop NME"):
        export_model(root / "model", tmp_path / "export", crops, int8=shipped,
                     int8_data={"first": blank})  # fmt: skip
    # The same network calibrated on its training crops passes the same check.
    export_model(root / "model", tmp_path / "export", crops, int8=shipped,
                 int8_data={"first": data})  # fmt: skip


def _nan_for_one_point(path, points_shape):
    """Rewrites the ONNX file at ``path`` so that its output is NaN for the first point of every
    crop (``points_shape``: one crop's output) and unchanged elsewhere."""
    model = onnx.load(str(path))
    graph = model.graph
    output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{output}.before" if o == output else o for o in node.output]
        node.input[:] = [f"{output}.before" if i == output else i for i in node.input]
    nan = np.zeros((1, *points_shape), np.float32)
    nan.reshape(-1)[0] = np.nan
    graph.initializer.append(onnx.numpy_helper.from_array(nan, "nan_for_one_point"))
    graph.node.append(
        onnx.helper.make_node("Add", [f"{output}.before", "nan_for_one_point"], [output])
    )
    onnx.save(model, str(path))


def test_int8_export_refuses_an_int8_network_that_predicts_nan(two_stage, tmp_path, monkeypatch):
    """An int8 file that predicts one point of each crop as NaN (a broken quantisation) is
    refused even under a limit that no NME rise reaches: a NaN point is a failure, never a point
    left out of the NME."""
    import facekeys.export.exporter as export

    root = two_stage["dir"]
    train(root / "aug", root / "model", root / "c1.pt", TINY)
    quantize = export.quantize_network

    def quantize_then_break(stage, folder, name, data, settings):
        written = quantize(stage, folder, name, data, settings)
        _nan_for_one_point(folder / written, data.check_points.shape[1:])
        return written

    monkeypatch.setattr(export, "quantize_network", quantize_then_break)
    data = _int8_data(root)
    crops = {"first": load_npz(root / "aug" / "test.npz")["images"]}
    labelled = int(data["first"].check_mask[:, 0].sum())
    assert labelled > 0
    with pytest.raises(
        FacekeysError,
        match=rf"export: first int8 network predicts NaN or infinity for {labelled} labelled",
    ):
        export_model(root / "model", tmp_path / "export", crops, int8=INT8, int8_data=data)
    assert not (tmp_path / "export").exists()


def test_predict_cli_takes_the_int8_file(exported, tmp_path):
    two_stage, _card, _crops = exported
    int8_file = two_stage["dir"] / "model" / "export" / "first.int8.onnx"
    out = tmp_path / "int8.csv"
    fp32 = tmp_path / "fp32.csv"
    assert main(["predict", str(two_stage["folder"]), "--model", str(int8_file),
                 "--out", str(out)]) == 0  # fmt: skip
    assert main(["predict", str(two_stage["folder"]), "--model", str(int8_file.with_name(
        "first.onnx")), "--out", str(fp32)]) == 0  # fmt: skip
    rows_int8, rows_fp32 = (list(csv.reader(path.open())) for path in (out, fp32))
    assert len(rows_int8) == 41 and [r[0] for r in rows_int8] == [r[0] for r in rows_fp32]
    values = [np.array([[float(v) for v in r[1:]] for r in rows[1:]])
              for rows in (rows_int8, rows_fp32)]  # fmt: skip
    difference = np.abs(values[0] - values[1])
    print(f"int8 vs fp32: mean {difference.mean():.3f} px, max {difference.max():.3f} px")
    # Same points within quantisation noise, on 56 px wide images.
    assert difference.mean() < 0.3 and difference.max() < 2.0


def test_int8_params_are_checked_in_one_line():
    assert Int8Settings.from_params(None) is None
    assert Int8Settings.from_params({"calibration_crops": 8}).calibration_crops == 8
    for bad, message in (
        (True, "must be a mapping or null"),
        ({"crops": 8}, r"unknown keys \['crops'\]"),
        ({"calibration_crops": "8"}, "values must be numbers"),
        ({"calibration_crops": 0}, "calibration_crops must be >= 1"),
    ):
        with pytest.raises(FacekeysError, match=message):
            Int8Settings.from_params(bad)


def test_int8_speed_is_measured_for_both_networks_together(exported):
    from facekeys.inference.exported_runtimes import int8_ms_per_face

    two_stage, _, crops = exported
    export_dir = two_stage["dir"] / "model" / "export"
    both = int8_ms_per_face(export_dir, crops, faces=5, repeats=1)
    first = int8_ms_per_face(export_dir, {"first": crops["first"]}, faces=5, repeats=1)
    assert both is not None and both > 0
    assert first is None  # the refinement network has no crops: no per-face number
