"""Portable copies of a trained model folder: TorchScript and ONNX (dynamic batch) per network,
each checked against the PyTorch model on real crops before it is written.

Output folder (replaced atomically)::

    model.json                the card: input spec, crop policies, keypoints, flip permutation,
                              label offset, and per network its files and measured differences
    first.onnx, first.torchscript.pt
    refine.onnx, refine.torchscript.pt   (where the model has a refinement network)
    first.int8.onnx, refine.int8.onnx    (with int8 settings: 8-bit convolutions, see below)

The int8 files quantise the convolutions (weights per channel, activations calibrated on training
crops), additions, ReLUs and upsampling, except two convolutions. The last one of a heatmap
network writes the heatmaps: the soft-argmax reads small differences between heatmap logits, and
quantising that layer too took the test NME from 3.79 % to 7.9 % (README, "Export"). The first
one of a gray network reads a single channel, where ONNX Runtime's int8 kernel is 5x slower than
its float one (67 against 14 microseconds at 96 px). They cannot match PyTorch to 1e-4, so they
are checked on accuracy instead: the NME on the selection crops (val.npz) may rise by at most
``max_nme_increase``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekeys.atomic import atomic_dir, write_json
from facekeys.errors import FacekeysError
from facekeys.predict import KeypointPredictor, StageModel, onnx_session, run_network

# Largest accepted difference from PyTorch, in the model's output unit (fractions of the input).
DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Int8Settings:
    """The ``export.int8`` section of params.yaml.

    Attributes:
        calibration_crops: Training crops (seeded sample) that set the activation ranges.
        max_nme_increase: Largest accepted rise of the check-crop NME over PyTorch's (fraction of
            the outer-eye-corner distance; 0.002 = 0.2 percentage points).
        seed: Seed of the calibration sample.
    """

    calibration_crops: int = 256
    max_nme_increase: float = 0.002
    seed: int = 2026

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> Int8Settings | None:
        """None where the section is null (no int8 files)."""
        if section is None:
            return None
        if not isinstance(section, dict):
            raise FacekeysError("params.yaml: export.int8 must be a mapping or null")
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(f"params.yaml: export.int8: unknown keys {sorted(unknown)}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in section.values()):
            raise FacekeysError("params.yaml: export.int8: values must be numbers")
        settings = cls(**section)
        if settings.calibration_crops < 1 or not settings.max_nme_increase >= 0:
            raise FacekeysError(
                "params.yaml: export.int8: calibration_crops must be >= 1 and max_nme_increase >= 0"
            )
        return settings


@dataclass
class Int8Data:
    """What quantising one network needs: crops to calibrate on, labelled crops to check on."""

    calibration: np.ndarray  # uint8 crops (training)
    check_points: np.ndarray  # (N, P, 2) in input pixels of the check crops
    check_mask: np.ndarray  # (N, P) labelled


# Quantised operator types. Besides the convolutions, the residual and pyramid additions, ReLUs
# and upsampling stay in int8 too: each float island between int8 convolutions costs a
# dequantise/quantise pair, 8 % of the time per face of a 16-channel network at batch 1.
INT8_OPS = ("Conv", "Add", "Relu", "Resize")


def _quantize_network(
    stage: StageModel, folder: Path, name: str, data: Int8Data, settings: Int8Settings
) -> str:
    """Writes ``<name>.int8.onnx`` from ``<name>.onnx`` in ``folder``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
    )
    from onnxruntime.quantization import (
        quantize_static as _quantize_static,
    )

    rng = np.random.default_rng(settings.seed)
    count = min(settings.calibration_crops, len(data.calibration))
    chosen = np.sort(rng.choice(len(data.calibration), count, replace=False))
    batches = [stage.normalise(data.calibration[chosen[i : i + 32]]) for i in range(0, count, 32)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": x} for x in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    prepared = folder / f".{name}.prepared.onnx"
    out = f"{name}.int8.onnx"
    root = logging.getLogger()
    level = root.level
    # onnxruntime.quantization logs through the root logger and prints calibration progress.
    root.setLevel(logging.ERROR)
    try:
        quant_pre_process(str(folder / f"{name}.onnx"), str(prepared))
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        # Float islands (see the module docstring): the heatmap layer of the heatmap
        # architecture, and an input convolution that reads a single gray channel.
        keep_float = set()
        if convs and stage.card["architecture"] == "heatmap":
            keep_float.add(convs[-1])
        if convs and stage.card["input"]["channels"] == 1:
            keep_float.add(convs[0])
        with contextlib.redirect_stdout(io.StringIO()):
            _quantize_static(
                str(prepared),
                str(folder / out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(INT8_OPS),
                nodes_to_exclude=sorted(keep_float),
                calibrate_method=CalibrationMethod.Percentile,
            )
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    return out


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
            reference = run_network(stage.model, x)
            broken = ~np.isfinite(reference).all(axis=tuple(range(1, reference.ndim)))
            if broken.any():
                raise FacekeysError(
                    f"export: the {name} network predicts NaN or infinity on {int(broken.sum())} "
                    f"of {len(x)} check crops (in PyTorch): the model is broken; not exported"
                )
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
            int8_report = None
            if int8 is not None:
                if int8_data is None or name not in int8_data:
                    raise FacekeysError(f"export: no int8 calibration data for the {name} network")
                files["onnx_int8"] = _quantize_network(stage, staging, name, int8_data[name], int8)
                int8_report = _check_int8(
                    stage, staging / files["onnx_int8"], x, reference, int8_data[name], int8, name
                )
                log(
                    f"{name} onnx_int8: selection-crop NME {100 * int8_report['nme_int8']:.3f} % "
                    f"(PyTorch {100 * int8_report['nme_pytorch']:.3f} %)"
                )
            card_networks.append(
                {
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


def _check_int8(
    stage: StageModel,
    path: Path,
    x: np.ndarray,
    reference: np.ndarray,
    data: Int8Data,
    settings: Int8Settings,
    name: str,
) -> dict[str, Any]:
    """NME on the labelled check crops, PyTorch against int8; raises above the allowed rise."""
    from facekeys.metrics import OUTER_EYE_CORNERS, nme_per_image

    session = onnx_session(path)
    out = np.concatenate([run_network(session, x[i : i + 64]) for i in range(0, len(x), 64)])
    target = np.where(data.check_mask[..., None], data.check_points, np.nan)
    pair = OUTER_EYE_CORNERS[stage.card["format"]]
    nme = {
        label: float(np.nanmean(nme_per_image(points * stage.size, target, pair)))
        for label, points in (("pytorch", reference), ("int8", out))
    }
    report = {
        "nme_pytorch": nme["pytorch"],
        "nme_int8": nme["int8"],
        "max_abs_difference_vs_pytorch": float(np.abs(out - reference).max()),
        "settings": asdict(settings),
    }
    if not nme["int8"] - nme["pytorch"] <= settings.max_nme_increase:
        raise FacekeysError(
            f"export: {name} int8 selection-crop NME {nme['int8']:.4f} is "
            f"{nme['int8'] - nme['pytorch']:.4f} above PyTorch's {nme['pytorch']:.4f} "
            f"(limit export.int8.max_nme_increase {settings.max_nme_increase}; set export.int8 "
            "to null to skip int8 files)"
        )
    return report


RUNTIMES = ("onnx", "onnx_int8", "torchscript")


def load_exported(export_dir: str | os.PathLike[str], runtime: str = "onnx") -> KeypointPredictor:
    """A predictor over exported files (``onnx``, ``onnx_int8`` or ``torchscript``), same
    prediction path."""
    import json

    export_dir = Path(export_dir)
    try:
        card = json.loads((export_dir / "model.json").read_text(encoding="utf-8"))
        stages = []
        for network in card["networks"]:
            if runtime not in network["files"]:
                raise FacekeysError(f"no {runtime} file for the {network['name']} network")
            path = export_dir / network["files"][runtime]
            model = torch.jit.load(str(path)) if runtime == "torchscript" else onnx_session(path)
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


def int8_ms_per_face(
    export_dir: str | os.PathLike[str],
    crops: dict[str, np.ndarray],
    faces: int = 100,
    repeats: int = 9,
) -> float | None:
    """Milliseconds per face of the int8 networks together (what one face costs), at batch 1 on
    one thread: per network the best of ``repeats`` passes over up to ``faces`` of its test
    crops (the best of many short passes: one pass is a tenth of a second, easily disturbed). None
    when the export has no int8 files. A measurement on the machine that ran the stage, recorded
    for the orchestrator's report; bench/bench_export.py compares runtimes.

    It runs in a fresh process: in this one, torch's worker threads keep spinning after the
    export and took a third of the core from ONNX Runtime (1.33 against 0.89 ms measured).
    """
    import multiprocessing

    small = {name: images[:faces] for name, images in crops.items()}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_time_int8, (str(export_dir), small, repeats))


def _time_int8(export_dir: str, crops: dict[str, np.ndarray], repeats: int) -> float | None:
    import json

    card = json.loads((Path(export_dir) / "model.json").read_text(encoding="utf-8"))
    total = 0.0
    for network in card["networks"]:
        name = network["files"].get("onnx_int8")
        if not name or network["name"] not in crops or not len(crops[network["name"]]):
            return None
        stage = StageModel(onnx_session(Path(export_dir) / name, threads=1), network)
        total += seconds_per_face(stage, crops[network["name"]], batch=1, repeats=repeats)
    return 1000 * total


def seconds_per_face(stage: StageModel, crops: np.ndarray, batch: int, repeats: int) -> float:
    """Seconds per face of one network, the best of ``repeats`` passes over ``crops`` in batches
    of ``batch`` after one warm-up batch (also what bench/bench_export.py reports)."""
    import time

    inputs = [stage.normalise(crops[i : i + batch]) for i in range(0, len(crops), batch)]
    run_network(stage.model, inputs[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x in inputs:
            run_network(stage.model, x)
        best = min(best, (time.perf_counter() - start) / len(crops))
    return best
