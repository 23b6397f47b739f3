"""Inference speed of the exported model: eager PyTorch, TorchScript and ONNX Runtime side by side.

For each data set with models/<dataset>/export/ this prints one line per runtime (eager PyTorch,
the baseline; TorchScript; ONNX Runtime fp32 and int8) and network (first, refine, and both
together: the cost of one face): milliseconds per face at batch 1 on one thread, faces per second
at batch 64 on all cores, and the test NME of the whole prediction path with that runtime.
Timing inputs are the test crops of each network (data/augmented/<dataset>[/refine]/test.npz),
already cut, so only the networks are timed.

Usage: python bench/bench_export.py [--datasets ...] [--repeats N]
Goal (issue 5): ONNX Runtime at most 1 ms per face on one core at the default input size (dlib's
shape predictor takes about 2 ms per face here).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from common import labelled_split

from facekeys.data.labelled_splits import load_npz
from facekeys.inference.exported_runtimes import load_exported, seconds_per_face
from facekeys.inference.predictor import KeypointPredictor, onnx_session


def _runtimes(model_dir: Path, threads: int) -> dict[str, KeypointPredictor]:
    torch.set_num_threads(threads)
    eager = KeypointPredictor.from_dir(model_dir)
    scripted = load_exported(model_dir / "export", "torchscript")
    runtimes = {"pytorch_eager": eager, "torchscript": scripted}
    for runtime, suffix in (("onnx", ".onnx"), ("onnx_int8", ".int8.onnx")):
        if not (model_dir / "export" / f"first{suffix}").is_file():
            continue
        predictor = load_exported(model_dir / "export", runtime)
        for stage in (predictor.first, predictor.refine):  # sessions with this thread count
            if stage is not None:
                name = "first" if stage is predictor.first else "refine"
                stage.model = onnx_session(model_dir / "export" / f"{name}{suffix}", threads)
        runtimes["onnx_runtime" if runtime == "onnx" else "onnx_runtime_int8"] = predictor
    return runtimes


def _test_nme(dataset: str, predictor: KeypointPredictor) -> float:
    """Mean NME of the whole prediction path on the data set's test images."""
    from facekeys.evaluation.metrics import OUTER_EYE_CORNERS, nme_per_image

    fmt = predictor.card["format"]
    data = labelled_split(dataset, predictor)
    nme = nme_per_image(predictor.predict(data.images), data.points, OUTER_EYE_CORNERS[fmt])
    return float(np.nanmean(nme))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["youtube-faces-68", "kaggle-15"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--faces", type=int, default=128, help="test crops per measurement")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    for dataset in args.datasets:
        model_dir = Path("models") / dataset
        if not (model_dir / "export" / "model.json").is_file():
            print(f"{dataset}: no export in {model_dir / 'export'}", file=sys.stderr)
            continue
        data = Path("data/augmented") / dataset
        crops = {"first": load_npz(data / "test.npz")["images"][: args.faces]}
        if (data / "refine" / "test.npz").is_file():
            crops["refine"] = load_npz(data / "refine" / "test.npz")["images"][: args.faces]
        results: dict[str, dict[str, tuple[float, float]]] = {}
        accuracy: dict[str, float] = {}
        for threads, batch in ((1, 1), (cores, 64)):
            for runtime, predictor in _runtimes(model_dir, threads).items():
                if threads == cores:
                    accuracy[runtime] = _test_nme(dataset, predictor)
                stages = {"first": predictor.first, "refine": predictor.refine}
                for name, stage in stages.items():
                    if stage is None:
                        continue
                    seconds = seconds_per_face(stage, crops[name], batch, args.repeats)
                    results.setdefault(runtime, {}).setdefault(name, (0.0, 0.0))
                    one, many = results[runtime][name]
                    results[runtime][name] = (seconds, many) if batch == 1 else (one, seconds)
        for runtime, per_stage in results.items():
            total_one = sum(v[0] for v in per_stage.values())
            total_many = sum(v[1] for v in per_stage.values())
            parts = " ".join(
                f"{name}_ms_per_face_b1_1thread={1000 * one:.2f} "
                f"{name}_faces_per_s_b64_{cores}threads={1 / many:.0f}"
                for name, (one, many) in per_stage.items()
            )
            print(
                f"{dataset} {runtime}: face_ms_b1_1thread={1000 * total_one:.2f} "
                f"faces_per_s_b64_{cores}threads={1 / total_many:.0f} "
                f"test_nme_percent={100 * accuracy[runtime]:.2f} | {parts}"
            )


if __name__ == "__main__":
    main()
