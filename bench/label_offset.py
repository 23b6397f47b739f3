"""Measures a data set's label convention from flips, with its trained first network.

A wrong ``augment.label_pixel_offset`` moves every label by the error d on unflipped training
samples and by -d on flipped ones; a network cannot tell the two apart, so it splits the
difference and errs about -d / +d. The split, divided by the crops' scale, is how far the labels
still sit from their pixels (positive: further right, raise the offset).

Usage: python bench/label_offset.py [--datasets kaggle-15] [--samples 4000]
Prints one line per data set (mean signed errors in crop pixels, the implied correction).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import trained_models

from facekeys.data.labelled_splits import load_npz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["youtube-faces-68", "kaggle-15"])
    parser.add_argument("--samples", type=int, default=4000, help="training samples to predict")
    args = parser.parse_args()
    for dataset, _model_dir, predictor in trained_models(args.datasets):
        data = load_npz(f"data/augmented/{dataset}/train.npz")
        pick = np.random.default_rng(0).permutation(len(data["images"]))[: args.samples]
        error = predictor.first.predict_crops(data["images"][pick]) - data["points"][pick]
        labelled, flipped = data["mask"][pick], data["flipped"][pick].astype(bool)
        # Crop pixels per original pixel: the length of the affine's first row.
        scale = np.median(np.hypot(data["to_crop"][pick, 0, 0], data["to_crop"][pick, 0, 1]))
        dx = {}
        for name, chosen in (("unflipped", ~flipped), ("flipped", flipped)):
            dx[name] = float(error[chosen][..., 0][labelled[chosen]].mean())
        split = (dx["flipped"] - dx["unflipped"]) / 2
        print(
            f"{dataset}: label_pixel_offset={predictor.label_pixel_offset} | "
            f"unflipped dx={dx['unflipped']:+.3f} flipped dx={dx['flipped']:+.3f} crop px "
            f"(n={int((~flipped).sum())}/{int(flipped.sum())}) | crop scale {scale:.3f} | "
            f"labels sit {split / scale:+.3f} original px from the offset's pixel",
            flush=True,
        )


if __name__ == "__main__":
    main()
