"""Int8 ONNX files: the ``export.int8`` settings, quantising one exported network (static,
calibrated on training crops) and checking its accuracy against PyTorch.

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facekeys.errors import FacekeysError
from facekeys.evaluation.metrics import OUTER_EYE_CORNERS, nme_per_image, non_finite_points
from facekeys.inference.predictor import StageModel, onnx_session, run_network


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


def quantize_network(
    stage: StageModel, folder: Path, name: str, data: Int8Data, settings: Int8Settings
) -> str:
    """Writes ``<name>.int8.onnx`` from ``<name>.onnx`` in ``folder``.

    Returns:
        The int8 file's name (in ``folder``).
    """
    from onnxruntime.quantization import quant_pre_process

    batches = _calibration_batches(stage, data, settings)
    prepared = folder / f".{name}.prepared.onnx"
    out = f"{name}.int8.onnx"
    with _quiet_root_logger():
        try:
            quant_pre_process(str(folder / f"{name}.onnx"), str(prepared))
            keep_float = _float_convolutions(stage, prepared)
            _quantize_static(prepared, folder / out, batches, keep_float)
        finally:
            prepared.unlink(missing_ok=True)
    return out


def _calibration_batches(
    stage: StageModel, data: Int8Data, settings: Int8Settings
) -> list[np.ndarray]:
    """A seeded sample of the calibration crops, normalised, in batches of 32."""
    rng = np.random.default_rng(settings.seed)
    count = min(settings.calibration_crops, len(data.calibration))
    chosen = np.sort(rng.choice(len(data.calibration), count, replace=False))
    return [stage.normalise(data.calibration[chosen[i : i + 32]]) for i in range(0, count, 32)]


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Only errors from the root logger inside the block, then its level as it was."""
    root = logging.getLogger()
    level = root.level
    # onnxruntime.quantization logs through the root logger and prints calibration progress.
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _float_convolutions(stage: StageModel, prepared: Path) -> set[str]:
    """The convolutions kept in float (see the module docstring): the heatmap layer of the
    heatmap architecture, and an input convolution that reads a single gray channel."""
    import onnx

    convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
    keep_float = set()
    if convs and stage.card["architecture"] == "heatmap":
        keep_float.add(convs[-1])
    if convs and stage.card["input"]["channels"] == 1:
        keep_float.add(convs[0])
    return keep_float


def _quantize_static(
    prepared: Path, out: Path, batches: list[np.ndarray], keep_float: set[str]
) -> None:
    """Static QDQ quantisation of ``prepared`` into ``out``, calibrated on ``batches``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": x} for x in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OPS),
            nodes_to_exclude=sorted(keep_float),
            calibrate_method=CalibrationMethod.Percentile,
        )


def check_int8(
    stage: StageModel,
    path: Path,
    x: np.ndarray,
    reference: np.ndarray,
    data: Int8Data,
    settings: Int8Settings,
    name: str,
) -> dict[str, Any]:
    """NME on the labelled check crops, PyTorch against int8; raises above the allowed rise, or
    where the int8 network predicts a labelled point as NaN or infinity."""
    session = onnx_session(path)
    out = np.concatenate([run_network(session, x[i : i + 64]) for i in range(0, len(x), 64)])
    target = np.where(data.check_mask[..., None], data.check_points, np.nan)
    failed = non_finite_points(out * stage.size, target)
    if failed:
        # Said as such: an NME rise of infinity would hide what went wrong.
        raise FacekeysError(
            f"export: {name} int8 network predicts NaN or infinity for {failed} labelled points "
            "of the selection crops (set export.int8 to null to skip int8 files)"
        )
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
