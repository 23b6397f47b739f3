"""DVC stage augment@<dataset>: validated rows -> data/augmented/<dataset>/{train,val,test}.npz,
meta.json and preview.png."""

import sys
from pathlib import Path
from typing import Any

from facekeys.augment import AugmentSettings, augment_dataset
from facekeys.datasets import DATASETS
from facekeys.stagekit import dataset_arg, run_stage


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    layout = DATASETS[dataset]
    raw, validated = Path("data/raw") / dataset, Path("data/validated") / dataset
    splits = {
        split: (validated / split / "valid.csv", raw / files.images if files.images else None)
        for split, files in layout.splits.items()
    }
    augment_dataset(
        layout.format,
        splits,
        Path("data/augmented") / dataset,
        AugmentSettings.from_params(params.get("augment", {}), dataset),
        log=lambda line: print(line, file=sys.stderr),
    )


if __name__ == "__main__":
    run_stage("augment", main)
