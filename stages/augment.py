"""DVC stage augment@<dataset>: validated rows -> data/augmented/<dataset>/{train,val,test}.npz,
meta.json and preview.png; with augment.refine.<dataset> set, the same under refine/ with crops
around the labelled keypoints. The first network's crop policy also records how its framing lies
around each photo face detector's output (augment.detector: Haar; augment.yuface: YuNet)."""

import json
import sys
from pathlib import Path
from typing import Any

from facekeys.augment.dataset import augment_dataset
from facekeys.augment.settings import AugmentSettings
from facekeys.data.dataset_layout import DATASETS, describe_source
from facekeys.inference.detector_calibration import add_detector_framing
from facekeys.inference.detectors import DetectorSettings
from facekeys.inference.landmark_detector import YuFaceSettings
from facekeys.stage_runner import dataset_arg, run_stage


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    layout = DATASETS[dataset]
    raw, validated = Path("data/raw") / dataset, Path("data/validated") / dataset
    splits = {
        split: (validated / split / "valid.csv", raw / files.images if files.images else None)
        for split, files in layout.splits.items()
    }
    section = params.get("augment", {})
    out_dir = Path("data/augmented") / dataset
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    source = describe_source(json.loads((raw / "manifest.json").read_text(encoding="utf-8")))
    settings = AugmentSettings.from_params(section, dataset)
    detector = DetectorSettings.from_params(section.get("detector"))
    yuface = YuFaceSettings.from_params(section.get("yuface"))
    augment_dataset(layout.format, splits, out_dir, settings, log=log, data_source=source)
    refine = AugmentSettings.refine_from_params(section, dataset)
    if refine is not None:
        # Crops around the labelled keypoints for the refinement model (see
        # facekeys.inference.predictor).
        augment_dataset(
            layout.format, splits, out_dir / "refine", refine, log=log, data_source=source
        )
    # Calibrates photo face detection against the first network's framing (model card). Last:
    # the detectors start thread pools (OpenCV's, OpenMP's) that processes forked afterwards,
    # like augment's workers, can deadlock on.
    add_detector_framing(layout.format, splits, out_dir, settings, detector, log, yuface)


if __name__ == "__main__":
    run_stage("augment", main)
