"""Faces in the wild: detection recall, false faces and keypoint NME through each photo detector,
on test faces pasted into larger textured canvases, upright, turned and small.

Each test crop of youtube-faces-68 is pasted off-centre into a canvas three times its size filled
with a seeded texture (blurred noise at several scales: edges everywhere, no faces), in three
cases: ``upright``; ``turned`` (a random roll of 10-30 degrees either way); ``small`` (the crop
shrunk to 72 px, a face of about 60 px). For each detector (yuface, haar) one line: the share of
labelled faces found, the false faces per canvas, milliseconds per canvas (detection only), and
the NME of the keypoints predicted through the detector (all of them: first network on the
detector's square, refinement levelled by the first pass's eyes) beside the NME of the same
faces with the data set's own framing (the upright crop as the face box), the baseline.

Usage: python bench/bench_wild.py [--model models/youtube-faces-68] [--faces 100]
Goals (issue 19): recall >= 98 % turned; NME through detection within 0.5 points of the data
set's own framing. A model without a detector's calibration gets it here (as the augment stage
would make it) and says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import labelled_split

from facekeys.evaluation.metrics import OUTER_EYE_CORNERS, nme_per_image
from facekeys.inference.detectors import matching_face
from facekeys.inference.predictor import KeypointPredictor

CASES = ("upright", "turned", "small")


def texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Blurred noise at several scales, in colour: a busy background without faces."""
    canvas = np.zeros((height, width, 3), np.float32)
    for scale in (4, 16, 64):
        small = rng.normal(0, 1, (height // scale + 2, width // scale + 2, 3)).astype(np.float32)
        canvas += cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[:height]
    canvas = (canvas - canvas.min()) / max(float(np.ptp(canvas)), 1e-6)
    return (40 + 180 * canvas).astype(np.uint8)


def pasted(crop: np.ndarray, points: np.ndarray, case: str, rng: np.random.Generator):
    """The crop (BGR) in a textured canvas for ``case``; its labelled points moved with it."""
    h, w = crop.shape[:2]
    scale = 72.0 / max(h, w) if case == "small" else 1.0
    angle = float(rng.choice([-1, 1]) * rng.uniform(10, 30)) if case == "turned" else 0.0
    side = int(3 * max(h, w) * scale) + 8
    canvas = texture(side, side, rng)
    centre = rng.uniform(0.3, 0.7, 2) * side
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    matrix[:, 2] += centre - ((w - 1) / 2, (h - 1) / 2)
    cv2.warpAffine(crop, matrix, (side, side), canvas, cv2.INTER_AREA if scale < 1 else
                   cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)  # fmt: skip
    return canvas, points @ matrix[:, :2].T + matrix[:, 2]


def with_calibrations(model_dir: Path, tmp: Path) -> Path:
    """``model_dir`` itself where its card has both detectors' calibrations; else a copy that
    has them, measured on training rows as the augment stage does."""
    card = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    policy = card["crop_policy"]
    if policy.get("yuface") and policy.get("detector"):
        return model_dir
    from facekeys.augment.settings import AugmentSettings
    from facekeys.data.keypoint_formats import FORMATS
    from facekeys.data.labelled_splits import read_split
    from facekeys.evaluation.evaluate import evaluation_splits
    from facekeys.inference.detector_calibration import calibrate_detector, calibrate_yuface
    from facekeys.inference.detectors import DetectorSettings
    from facekeys.inference.landmark_detector import YuFaceSettings

    source = evaluation_splits("youtube-faces-68")["selection"]  # training CSV, not the test one
    rows = read_split(FORMATS["youtube68"], source.csv, str(source.images_dir))
    settings = AugmentSettings(label_pixel_offset=float(card.get("label_pixel_offset", 0.0)))
    every = np.arange(len(rows.names))
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    if not policy.get("yuface"):
        policy["yuface"] = calibrate_yuface(rows, every, settings, YuFaceSettings(), log)
    if not policy.get("detector"):
        policy["detector"] = calibrate_detector(rows, every, settings, DetectorSettings(), log)
    copy = tmp / "model"
    shutil.copytree(model_dir, copy)
    (copy / "model.json").write_text(json.dumps(card), encoding="utf-8")
    print(f"{model_dir}: calibrations added here on training rows", file=sys.stderr)
    return copy


def run_case(predictor, split, case: str, detector: str, faces: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    found = false = 0
    seconds, nme_detected, nme_own = 0.0, [], []
    pair = OUTER_EYE_CORNERS[predictor.card["format"]]
    own = predictor.predict(split.images[:faces])
    for i in range(faces):
        crop = split.images[i][..., :3]
        canvas, truth = pasted(crop, split.points[i], case, rng)
        start = time.perf_counter()
        detected = predictor.find_faces(canvas, detector)
        seconds += time.perf_counter() - start
        box = matching_face([f.box for f in detected], truth)
        false += len(detected) - (box is not None)
        if box is None:
            continue
        found += 1
        face = next(f for f in detected if f.box == box)
        points = predictor.predict_squares(canvas, [face.square])[0]
        nme_detected.append(nme_per_image(points[None], truth[None], pair)[0])
        nme_own.append(nme_per_image(own[i][None], split.points[i][None], pair)[0])
    gap = 100 * (np.mean(nme_detected) - np.mean(nme_own)) if nme_detected else float("nan")
    return (
        f"{case}/{detector}: recall={100 * found / faces:.1f}% ({found}/{faces}) | "
        f"false_faces={false / faces:.2f}/canvas | detect_ms={1e3 * seconds / faces:.1f} | "
        f"nme_detected={100 * np.mean(nme_detected):.2f}% | "
        f"nme_own_framing={100 * np.mean(nme_own):.2f}% (same faces) | gap={gap:+.2f} points"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/youtube-faces-68"))
    parser.add_argument("--faces", type=int, default=100, help="test faces per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not (args.model / "model.pt").is_file():
        sys.exit(f"{args.model}: no trained model (run the pipeline first, or pass --model)")
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-wild-") as tmp:
        predictor = KeypointPredictor.from_dir(with_calibrations(args.model, Path(tmp)))
        split = labelled_split("youtube-faces-68", predictor, "test")
        faces = min(args.faces, len(split.images))
        for case in CASES:
            for detector in ("yuface", "haar"):
                print(run_case(predictor, split, case, detector, faces, args.seed), flush=True)


if __name__ == "__main__":
    main()
