"""What the benchmarks share: timing a command in a fresh process; the trained models."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Runs ``cmd`` in a fresh process; returns wall seconds, that process's peak RSS in MB and
    its stdout. Output goes through files (not pipes) so ``wait4`` can reap the child and read
    its own resource usage without a pipe filling up. Exits with its stderr when it fails."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"benchmark command failed: {' '.join(cmd[:4])}\n{err.read()[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def trained_models(datasets: list[str], threads: int = 2) -> Iterator[tuple[str, Path, Any]]:
    """``(dataset, model folder, KeypointPredictor)`` for each data set with a trained model in
    models/<dataset>; the others are named on stderr and skipped."""
    import torch

    from facekeys.inference.predictor import KeypointPredictor

    torch.set_num_threads(threads)
    for dataset in datasets:
        model_dir = Path("models") / dataset
        if not (model_dir / "model.pt").is_file():
            print(f"{dataset}: no trained model in {model_dir}", file=sys.stderr)
            continue
        yield dataset, model_dir, KeypointPredictor.from_dir(model_dir)


def labelled_split(dataset: str, predictor: Any, split: str = "test") -> Any:
    """The validated rows of one evaluated split (``test``, ``selection``, ``new_people``: see
    ``facekeys.evaluation.evaluate.evaluation_splits``) with decoded images, in ``predictor``'s
    label convention."""
    from facekeys.data.labelled_images import load_labelled
    from facekeys.evaluation.evaluate import evaluation_splits

    source = evaluation_splits(dataset)[split]
    return load_labelled(
        predictor.card["format"],
        source.csv,
        source.images_dir,
        predictor.label_pixel_offset,
        source.indices,
    )
