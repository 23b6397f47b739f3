"""Accuracy and speed of a trained model on the untouched test split.

For each data set with a trained model in models/<dataset>/ this prints one line: test NME (mean
point error / outer-eye-corner distance for 68-pt; eye-centre distance for Kaggle), Kaggle RMSE in
pixels of the 96x96 crops, the same for a mean-shape baseline scored in the same run (the mean
training shape placed in the crop), and the training throughput, FLOPs and peak memory from
metrics/<dataset>/train.json. The crop is the whole test image (no ground truth used to crop).

Usage: python bench/bench_train.py [--flip] (--flip also averages with the mirrored image)
Goals (issue 4): youtube-faces-68 test NME <= 4.0 %, kaggle-15 RMSE <= 1.5 px, peak memory < 4 GB,
within 30 minutes of training on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from facekeys.augment import load_npz
from facekeys.schemes import FLIP_PERMUTATION, FORMATS
from facekeys.train import load_model, prepare_batch


def predict(model: torch.nn.Module, images: np.ndarray, flip: bool, perm: list[int]) -> np.ndarray:
    """Model-input pixel coordinates for uint8 crops; optionally averaged with the mirror image."""
    size = images.shape[1]
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 128):
            x = prepare_batch(torch.from_numpy(images[start : start + 128]).unsqueeze(1),
                              torch.device("cpu"), False)  # fmt: skip
            pred = model(x).float().numpy() * size
            if flip:
                mirrored = model(torch.flip(x, dims=[-1])).float().numpy() * size
                mirrored[..., 0] = size - 1 - mirrored[..., 0]
                pred = (pred + mirrored[:, perm]) / 2
            out.append(pred)
    return np.concatenate(out)


def nme(pred: np.ndarray, target: np.ndarray, mask: np.ndarray, pair: tuple[int, int]) -> float:
    err = np.linalg.norm(pred - target, axis=-1)
    per = (err * mask).sum(-1) / mask.sum(-1)
    return float(np.mean(per / np.linalg.norm(target[:, pair[0]] - target[:, pair[1]], axis=-1)))


def rmse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    sq = ((pred - target) ** 2) * mask[..., None]
    return float(np.sqrt(sq.sum() / (2 * mask.sum())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image")
    parser.add_argument("--datasets", nargs="*", default=["youtube-faces-68", "kaggle-15"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    for dataset in args.datasets:
        model_dir = Path("models") / dataset
        if not (model_dir / "model.pt").is_file():
            print(f"{dataset}: no trained model in {model_dir}", file=sys.stderr)
            continue
        model, card = load_model(model_dir)
        fmt = FORMATS[card["format"]]
        test = load_npz(Path("data/augmented") / dataset / "test.npz")
        train = load_npz(Path("data/augmented") / dataset / "train.npz")
        perm = list(FLIP_PERMUTATION[card["format"]])
        pred = predict(model, test["images"], args.flip, perm)
        target, mask = test["points"], test["mask"]
        # Mean-shape baseline: the mean plain training crop shape, per point, over labelled rows.
        plain = train["copy"] == 0
        w = train["mask"][plain][..., None]
        mean_shape = (train["points"][plain] * w).sum(0) / np.maximum(w.sum(0), 1)
        baseline = np.broadcast_to(mean_shape, pred.shape)
        # Crops are similarity transforms of the images, so NME is the same in original pixels.
        scale = np.abs(test["to_crop"][:, 0, 0])[:, None, None]  # crop px per original px
        stats = json.loads((Path("metrics") / dataset / "train.json").read_text())
        line = (
            f"{dataset}: test_images={len(pred)} flip_average={args.flip} "
            f"nme={100 * nme(pred, target, mask, fmt.eye_pair):.2f}% "
            f"rmse_px_original={rmse(pred / scale, target / scale, mask):.3f}"
        )
        line += (
            f" | mean_shape_baseline nme={100 * nme(baseline, target, mask, fmt.eye_pair):.2f}%"
            f" rmse_px_original={rmse(baseline / scale, target / scale, mask):.3f}"
        )
        line += (
            f" | train: epochs={stats['epochs_run']} minutes={stats['train_seconds'] / 60:.1f} "
            f"images_per_s={stats['images_per_s']:.0f} gflop_per_image_fwd="
            f"{stats['model_gflop_per_image_forward']:.3f} achieved_gflop_per_s="
            f"{stats['training_gflop_per_s_estimate']:.0f} matmul_peak_gflop_per_s="
            f"{stats['machine_matmul_gflop_per_s']:.0f} peak_rss_mb={stats['peak_rss_mb']:.0f}"
        )
        print(line)


if __name__ == "__main__":
    main()
