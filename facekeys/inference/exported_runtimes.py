"""Loading exported model files (TorchScript, ONNX, int8 ONNX) for prediction through the same
path as the PyTorch model, and timing them per face."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from facekeys.errors import FacekeysError
from facekeys.inference.predictor import KeypointPredictor, StageModel, onnx_session, run_network

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
