"""Photos: how well and how fast `facekeys predict --detect haar` works, against the whole-image
path as the baseline.

For each data set with a trained model (models/<dataset>) this prints one line for its test
images (face crops): the share where the Haar detector finds the labelled face, and the NME of
the keypoints predicted through the detector's calibrated framing beside the NME with the data
set's own framing (the crop itself as the face box) on the same images. A second line pastes each
test crop into a 3x larger gray canvas (a face in a bigger photo) and repeats that; its baseline
is the pasted crop's own box. For the photos in --photos (group pictures) it prints faces found and
milliseconds per photo for detection and for keypoints.

Usage: python bench/bench_detect.py [--datasets ...] [--photos ../shared/data/sample-images]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import labelled_split, trained_models

from facekeys.data.images import load_image
from facekeys.evaluation.metrics import OUTER_EYE_CORNERS, nme_per_image
from facekeys.inference.detectors import detect_faces, matching_face
from facekeys.inference.predict_files import IMAGE_SUFFIXES
from facekeys.inference.predictor import KeypointPredictor


def _paste(image: np.ndarray, points: np.ndarray):
    """The image in a 3x larger gray canvas, off-centre; points moved with it; and the pasted
    image's own box there (the data set's framing, for the baseline)."""
    h, w = image.shape[:2]
    canvas = np.full((3 * h, 3 * w, *image.shape[2:]), 120, image.dtype)
    x0, y0 = int(0.8 * w), int(1.3 * h)
    canvas[y0 : y0 + h, x0 : x0 + w] = image
    return canvas, points + np.array([x0, y0], np.float32), (float(x0), float(y0), w, h)


def _score(predictor: KeypointPredictor, images, points, own_boxes, pair):
    """(detected share, NME via detector, NME with the data set's framing, images) on one set;
    both NMEs over the images where the detector found the labelled face."""
    framing = predictor.detector
    via_detector, own = [], []
    for image, target, own_box in zip(images, points, own_boxes, strict=True):
        box = matching_face(detect_faces(image, framing.settings), target)
        if box is None:
            continue
        pred = predictor.predict([image], [framing.frame_box(box)])
        via_detector.append(nme_per_image(pred, target[None], pair)[0])
        pred = predictor.predict([image], [own_box])
        own.append(nme_per_image(pred, target[None], pair)[0])
    share = len(via_detector) / len(images)
    return share, np.nanmean(via_detector), np.nanmean(own), len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["youtube-faces-68", "kaggle-15"])
    parser.add_argument("--photos", default="../shared/data/sample-images")
    args = parser.parse_args()
    for dataset, _model_dir, predictor in trained_models(args.datasets):
        if predictor.detector is None:
            print(f"{dataset}: the model has no detector calibration", file=sys.stderr)
            continue
        data = labelled_split(dataset, predictor)
        pair = OUTER_EYE_CORNERS[predictor.card["format"]]
        framing = predictor.detector
        calibration = (
            f"calibration: side={framing.side:.2f} dy={framing.centre_dy:+.3f} "
            f"found={framing.calibrated_on}/{framing.searched}"
        )
        pasted = [_paste(im, p) for im, p in zip(data.images, data.points, strict=True)]
        whole = [None] * len(data.images)  # None: the whole image is the face box
        for label, images, points, own_boxes in (
            ("test_crops", data.images, data.points, whole),
            ("test_crops_in_3x_canvas", *zip(*pasted, strict=True)),
        ):
            share, nme_detect, nme_own, n = _score(predictor, images, points, own_boxes, pair)
            print(
                f"{dataset} {label}: n={n} face_found={100 * share:.1f}% "
                f"nme_via_haar={100 * nme_detect:.2f}% | baseline: the data set's own framing "
                f"on the same faces nme={100 * nme_own:.2f}% | {calibration}"
            )
        photos = sorted(p for p in Path(args.photos).glob("*") if p.suffix in IMAGE_SUFFIXES)
        detect_faces(np.zeros((64, 64), np.uint8), framing.settings)  # loads the cascade
        for photo in photos:
            image = load_image(photo.parent, photo.name)
            start = time.perf_counter()
            boxes = detect_faces(image, framing.settings)
            detected = time.perf_counter()
            predictor.predict([image] * len(boxes), [framing.frame_box(b) for b in boxes])
            done = time.perf_counter()
            print(
                f"{dataset} photo {photo.name} {image.shape[1]}x{image.shape[0]}: "
                f"faces={len(boxes)} detect_ms={1000 * (detected - start):.0f} "
                f"keypoints_ms={1000 * (done - detected):.0f}"
            )


if __name__ == "__main__":
    main()
