"""How much the refinement network's accuracy depends on the box the first network gives it.

For a model folder with a refinement network (default models/youtube-faces-68) this prints one
line per split (test; identity-split validation rows, new people), all NMEs through
facekeys.inference.predictor on whole images:

* ``first_nme``: the first network alone;
* ``path_nme``: the prediction path (refinement box from the first network's keypoints);
* ``second_pass_nme``: the refinement network run again on a box from its own keypoints;
* baseline ``label_box_nme``: the refinement network on the box spanned by the labelled
  keypoints. It leaks the labels' extent, so it bounds what better first-network boxes can give.

``--first DIR`` takes the first network from another model folder (the same keypoint format):
a larger first network's boxes show what the refinement network would reach with them.

Usage: python bench/bench_cascade.py [--model DIR] [--first DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from common import labelled_split

from facekeys.data.crop_geometry import keypoint_box
from facekeys.data.images import to_model_color
from facekeys.data.keypoint_formats import FORMATS
from facekeys.evaluation.evaluate import evaluation_splits
from facekeys.evaluation.metrics import nme_per_image
from facekeys.inference.predictor import KeypointPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/youtube-faces-68"))
    parser.add_argument("--first", type=Path, help="model folder whose first network gives boxes")
    parser.add_argument("--dataset", default="youtube-faces-68")
    args = parser.parse_args()
    torch.set_num_threads(2)
    predictor = KeypointPredictor.from_dir(args.model)
    if predictor.refine is None:
        sys.exit(f"{args.model}: no refinement network")
    first = KeypointPredictor.from_dir(args.first).first if args.first else predictor.first
    fmt_name = predictor.card["format"]
    if first.card["format"] != fmt_name:
        sys.exit(f"{args.first}: another keypoint format ({first.card['format']})")
    pair = FORMATS[fmt_name].eye_pair
    refine = predictor.refine

    def refined(images: list[np.ndarray], points: np.ndarray) -> np.ndarray:
        boxes = [keypoint_box(p) for p in points]
        return predictor._run(refine, images, boxes, to_model_color)

    for label in evaluation_splits(args.dataset):
        data = labelled_split(args.dataset, predictor, label)
        coarse = predictor._run(first, data.images, [None] * len(data.images), to_model_color)
        path = refined(data.images, coarse)
        results = {
            "first_nme": coarse,
            "path_nme": path,
            "second_pass_nme": refined(data.images, path),
            "label_box_nme": refined(data.images, data.points),
        }
        nme = {k: 100 * np.nanmean(nme_per_image(v, data.points, pair)) for k, v in results.items()}
        print(
            f"{args.dataset} {label}: n={len(data.images)} first={args.first or args.model}"
            f" first_nme={nme['first_nme']:.2f}% path_nme={nme['path_nme']:.2f}%"
            f" second_pass_nme={nme['second_pass_nme']:.2f}%"
            f" | baseline: refinement on the labelled keypoints' box"
            f" label_box_nme={nme['label_box_nme']:.2f}%"
        )


if __name__ == "__main__":
    main()
