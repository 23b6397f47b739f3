"""Portable copies of a trained model folder: TorchScript and ONNX (dynamic batch) per network,
each checked against the PyTorch model on real crops before it is written.

Output folder (replaced atomically)::

    model.json                the card: input spec, crop policies, keypoints, flip permutation,
                              label offset, and per network its files and measured differences
    first.onnx, first.torchscript.pt
    refine.onnx, refine.torchscript.pt   (where the model has a refinement network)
    first.int8.onnx, refine.int8.onnx    (with int8 settings: 8-bit convolutions, see
                                          ``facekeys.export.int8``)

Loading the exported files for prediction is ``facekeys.inference.exported_runtimes``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekeys.data.atomic_files import atomic_dir, write_json
from facekeys.errors import FacekeysError
from facekeys.export.int8 import Int8Data, Int8Settings, check_int8, quantize_network
from facekeys.inference.predictor import KeypointPredictor, StageModel, onnx_session, run_network

# Largest accepted difference from PyTorch, in the model's output unit (fractions of the input).
DEFAULT_TOLERANCE = 1e-4


def _export_network(stage: StageModel, folder: Path, name: str) -> dict[str, str]:
    channels, size = stage.card["input"]["channels"], stage.size
    example = torch.zeros(1, channels, size, size)
    model = stage.model.eval().float()
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but still the format many C++ and mobile runtimes
        # load; the trace is checked against PyTorch below like the ONNX file.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
    torchscript = f"{name}.torchscript.pt"
    traced.save(str(folder / torchscript))
    onnx_file = f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter warns once per torchvision operator it cannot register (no torchvision here).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(folder / onnx_file),
            input_names=["image"],
            output_names=["keypoints"],
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return {"torchscript": torchscript, "onnx": onnx_file}


def export_model(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    check_crops: dict[str, np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    log: Any = None,
    int8: Int8Settings | None = None,
    int8_data: dict[str, Int8Data] | None = None,
) -> dict[str, Any]:
    """Exports every network of ``model_dir`` and checks each file against PyTorch.

    Args:
        check_crops: uint8 crops per network name (``first``, ``refine``) to compare outputs on,
            e.g. the test images cut with that network's crop policy.
        tolerance: Largest accepted absolute difference in normalised output units.
        int8: Also write int8 ONNX files (None: not).
        int8_data: Per network, calibration crops and the labels of ``check_crops``.

    Raises:
        FacekeysError: An exported network differs from PyTorch by more than ``tolerance``, or
            an int8 network loses more than ``int8.max_nme_increase`` of NME.
    """
    log = log or (lambda line: None)
    predictor = KeypointPredictor.from_dir(model_dir)
    networks = [("first", predictor.first)]
    if predictor.refine is not None:
        networks.append(("refine", predictor.refine))
    card_networks = []
    with atomic_dir(out_dir) as staging:
        for name, stage in networks:
            if name not in check_crops or len(check_crops[name]) == 0:
                raise FacekeysError(f"export: no crops to check the {name} network against")
            files = _export_network(stage, staging, name)
            x = stage.normalise(check_crops[name])
            reference = _pytorch_reference(stage, name, x)
            differences = _check_exported_files(staging, files, name, x, reference, tolerance, log)
            int8_report = None
            if int8 is not None:
                files["onnx_int8"], int8_report = _export_int8(
                    stage, staging, name, x, reference, int8, int8_data, log
                )
            card_networks.append(_network_card(stage, name, files, int8_report, differences, x))
        card = _model_card(predictor.first.card, card_networks, tolerance)
        write_json(staging / "model.json", card)
    return card


def _pytorch_reference(stage: StageModel, name: str, x: np.ndarray) -> np.ndarray:
    """The PyTorch network's outputs on the check crops; raises where any is not finite."""
    reference = run_network(stage.model, x)
    broken = ~np.isfinite(reference).all(axis=tuple(range(1, reference.ndim)))
    if broken.any():
        raise FacekeysError(
            f"export: the {name} network predicts NaN or infinity on {int(broken.sum())} "
            f"of {len(x)} check crops (in PyTorch): the model is broken; not exported"
        )
    return reference


def _check_exported_files(
    staging: Path,
    files: dict[str, str],
    name: str,
    x: np.ndarray,
    reference: np.ndarray,
    tolerance: float,
    log: Any,
) -> dict[str, float]:
    """The largest difference from PyTorch of the TorchScript and ONNX files, per kind; raises
    above ``tolerance``."""
    loaded = {
        "torchscript": torch.jit.load(str(staging / files["torchscript"])),
        "onnx": onnx_session(staging / files["onnx"]),
    }
    differences = {}
    for kind, network in loaded.items():
        out = np.concatenate([run_network(network, x[i : i + 64]) for i in range(0, len(x), 64)])
        differences[kind] = float(np.abs(out - reference).max())
        log(f"{name} {kind}: max |difference| {differences[kind]:.2e} on {len(x)} crops")
        if not differences[kind] <= tolerance:
            raise FacekeysError(
                f"export: {name} {kind} differs from PyTorch by {differences[kind]:.2e} "
                f"> {tolerance:.0e} (normalised units) on {len(x)} crops"
            )
    return differences


def _export_int8(
    stage: StageModel,
    staging: Path,
    name: str,
    x: np.ndarray,
    reference: np.ndarray,
    settings: Int8Settings,
    int8_data: dict[str, Int8Data] | None,
    log: Any,
) -> tuple[str, dict[str, Any]]:
    """Writes and checks one network's int8 file: its name and its report for the card."""
    if int8_data is None or name not in int8_data:
        raise FacekeysError(f"export: no int8 calibration data for the {name} network")
    int8_file = quantize_network(stage, staging, name, int8_data[name], settings)
    report = check_int8(stage, staging / int8_file, x, reference, int8_data[name], settings, name)
    log(
        f"{name} onnx_int8: selection-crop NME {100 * report['nme_int8']:.3f} % "
        f"(PyTorch {100 * report['nme_pytorch']:.3f} %)"
    )
    return int8_file, report


def _network_card(
    stage: StageModel,
    name: str,
    files: dict[str, str],
    int8_report: dict[str, Any] | None,
    differences: dict[str, float],
    x: np.ndarray,
) -> dict[str, Any]:
    """One network's entry in the exported model.json."""
    return {
        "name": name,
        "files": files,
        "int8": int8_report,
        "input": stage.card["input"],
        "crop_policy": stage.card["crop_policy"],
        "output": stage.card["output"],
        "max_abs_difference_vs_pytorch": differences,
        "checked_on_crops": len(x),
        "architecture": stage.card["architecture"],
        "width": stage.card["width"],
        "heatmap_stride": stage.card.get("heatmap_stride", 8),
        "stem_block": stage.card.get("stem_block", True),
    }


def _model_card(
    first: dict[str, Any], networks: list[dict[str, Any]], tolerance: float
) -> dict[str, Any]:
    """The exported model.json: the model's format and keypoints (from the first network's
    card), its networks and how to predict with them."""
    return {
        "format": first["format"],
        "keypoints": first["keypoints"],
        "label_pixel_offset": first.get("label_pixel_offset", 0.0),
        "networks": networks,
        "prediction": "crop each image with the first network's crop policy (whole image "
        "or a face box), predict, map back; where a refine network exists, crop again around "
        "the predicted keypoints with its policy (face_box keypoints) and predict again",
        "input_batch": "dynamic",
        "tolerance": tolerance,
    }
