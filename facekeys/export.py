"""Portable copies of a trained model folder: TorchScript and ONNX (dynamic batch) per network,
each checked against the PyTorch model on real crops before it is written.

Output folder (replaced atomically)::

    model.json                the card: input spec, crop policies, keypoints, flip permutation,
                              label offset, and per network its files and measured differences
    first.onnx, first.torchscript.pt
    refine.onnx, refine.torchscript.pt   (where the model has a refinement network)
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekeys.atomic import atomic_dir, write_json
from facekeys.errors import FacekeysError
from facekeys.predict import KeypointPredictor, StageModel, onnx_session, run_network

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
) -> dict[str, Any]:
    """Exports every network of ``model_dir`` and checks each file against PyTorch.

    Args:
        check_crops: uint8 crops per network name (``first``, ``refine``) to compare outputs on,
            e.g. the test images cut with that network's crop policy.
        tolerance: Largest accepted absolute difference in normalised output units.

    Raises:
        FacekeysError: An exported network differs from PyTorch by more than ``tolerance``.
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
            reference = run_network(stage.model, x)
            loaded = {
                "torchscript": torch.jit.load(str(staging / files["torchscript"])),
                "onnx": onnx_session(staging / files["onnx"]),
            }
            differences = {}
            for kind, network in loaded.items():
                out = np.concatenate(
                    [run_network(network, x[i : i + 64]) for i in range(0, len(x), 64)]
                )
                differences[kind] = float(np.abs(out - reference).max())
                log(f"{name} {kind}: max |difference| {differences[kind]:.2e} on {len(x)} crops")
                if not differences[kind] <= tolerance:
                    raise FacekeysError(
                        f"export: {name} {kind} differs from PyTorch by {differences[kind]:.2e} "
                        f"> {tolerance:.0e} (normalised units) on {len(x)} crops"
                    )
            card_networks.append(
                {
                    "name": name,
                    "files": files,
                    "input": stage.card["input"],
                    "crop_policy": stage.card["crop_policy"],
                    "output": stage.card["output"],
                    "max_abs_difference_vs_pytorch": differences,
                    "checked_on_crops": len(x),
                    "architecture": stage.card["architecture"],
                    "width": stage.card["width"],
                }
            )
        first = predictor.first.card
        card = {
            "format": first["format"],
            "keypoints": first["keypoints"],
            "label_pixel_offset": first.get("label_pixel_offset", 0.0),
            "networks": card_networks,
            "prediction": "crop each image with the first network's crop policy (whole image "
            "or a face box), predict, map back; where a refine network exists, crop again around "
            "the predicted keypoints with its policy (face_box keypoints) and predict again",
            "input_batch": "dynamic",
            "tolerance": tolerance,
        }
        write_json(staging / "model.json", card)
    return card


def load_exported(export_dir: str | os.PathLike[str], runtime: str = "onnx") -> KeypointPredictor:
    """A predictor over exported files (``onnx`` or ``torchscript``), same prediction path."""
    import json

    export_dir = Path(export_dir)
    try:
        card = json.loads((export_dir / "model.json").read_text(encoding="utf-8"))
        stages = []
        for network in card["networks"]:
            path = export_dir / network["files"][runtime]
            model = onnx_session(path) if runtime == "onnx" else torch.jit.load(str(path))
            stage_card = {
                **network,
                "format": card["format"],
                "keypoints": card["keypoints"],
                "label_pixel_offset": card["label_pixel_offset"],
            }
            stages.append(StageModel(model, stage_card))
    except Exception as exc:  # onnxruntime's load errors derive from Exception only
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FacekeysError(f"{export_dir}: cannot load the exported model: {reason}") from None
    if not stages:
        raise FacekeysError(f"{export_dir}/model.json lists no networks")
    return KeypointPredictor(stages[0], stages[1] if len(stages) > 1 else None)
