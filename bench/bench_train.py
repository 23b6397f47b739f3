"""Accuracy and speed of the trained models, through the one prediction path.

For each data set with a trained model in models/<dataset>/ this prints one line: NME (mean point
error / distance between the format's eye pair: outer eye corners 36/45 for 68-pt, eye centres
for Kaggle) on the untouched test split and on the identity-split validation rows (new people),
RMSE in original pixels (for Kaggle: the 96x96 crops, Kaggle's metric), the same for a mean-shape
baseline scored in the same run (the mean training shape placed in the whole-image crop), and the
training throughput, FLOPs and peak memory from metrics/<dataset>/train.json. Each image is
predicted with the whole image as the face box (no ground truth used to crop), by
facekeys.inference.predictor.KeypointPredictor: first model, then the refinement model where
there is one.

Usage: python bench/bench_train.py [--datasets ...] [--first-only]
Goals (issue 4): youtube-faces-68 test NME <= 4.0 %, kaggle-15 RMSE <= 1.5 px, peak memory < 4 GB,
within 30 minutes of training on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import labelled_split, trained_models

from facekeys.data.crop_geometry import apply_to_points
from facekeys.data.keypoint_formats import FORMATS
from facekeys.data.labelled_splits import load_npz
from facekeys.evaluation.evaluate import evaluation_splits
from facekeys.evaluation.metrics import nme_per_image, rmse
from facekeys.inference.predictor import KeypointPredictor


def mean_shape_baseline(predictor: KeypointPredictor, data_dir: Path, images) -> np.ndarray:
    """The mean plain-crop training shape, mapped back into each image through its crop."""
    train = load_npz(data_dir / "train.npz")
    plain = train["copy"] == 0
    w = train["mask"][plain][..., None]
    mean_shape = (train["points"][plain] * w).sum(0) / np.maximum(w.sum(0), 1)
    out = []
    for image in images:
        matrix = predictor.first.crop_matrix(image.shape, None)
        out.append(apply_to_points(np.linalg.inv(matrix), mean_shape))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["youtube-faces-68", "kaggle-15"])
    parser.add_argument("--first-only", action="store_true", help="skip the refinement model")
    args = parser.parse_args()
    for dataset, _model_dir, predictor in trained_models(args.datasets):
        if args.first_only:
            predictor.refine = None
        fmt_name = predictor.card["format"]
        pair = FORMATS[fmt_name].eye_pair
        data_dir = Path("data/augmented") / dataset
        line = f"{dataset}: refine={predictor.refine is not None}"
        for label in evaluation_splits(dataset):
            data = labelled_split(dataset, predictor, label)
            pred = predictor.predict(data.images)
            base = mean_shape_baseline(predictor, data_dir, data.images)
            nme, base_nme = (np.nanmean(nme_per_image(p, data.points, pair)) for p in (pred, base))
            line += (
                f" | {label} n={len(pred)} nme={100 * nme:.2f}%"
                f" rmse_px={rmse(pred, data.points):.3f}"
                f" mean_shape_nme={100 * base_nme:.2f}%"
                f" mean_shape_rmse_px={rmse(base, data.points):.3f}"
            )
        stats = json.loads((Path("metrics") / dataset / "train.json").read_text())
        minutes = stats.get("train_seconds_total", stats["train_seconds"]) / 60
        line += (
            f" | train: epochs={stats['epochs_run']} minutes_total={minutes:.1f} "
            f"images_per_s={stats['images_per_s']:.0f} gflop_per_image_fwd="
            f"{stats['model_gflop_per_image_forward']:.3f} achieved_gflop_per_s="
            f"{stats['training_gflop_per_s_estimate']:.0f} matmul_peak_gflop_per_s="
            f"{stats['machine_matmul_gflop_per_s']:.0f} peak_rss_mb={stats['peak_rss_mb']:.0f}"
        )
        if "refine" in stats:
            r = stats["refine"]
            line += (
                f" refine_epochs={r['epochs_run']} refine_images_per_s={r['images_per_s']:.0f} "
                f"refine_gflop_per_image_fwd={r['model_gflop_per_image_forward']:.3f} "
                f"refine_peak_rss_mb={r['peak_rss_mb']:.0f}"
            )
        print(line)


if __name__ == "__main__":
    main()
