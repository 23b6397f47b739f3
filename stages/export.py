"""DVC stage export@<dataset>: models/<dataset> -> models/<dataset>/export/ (TorchScript and ONNX
per network, model.json), each checked against PyTorch on the test crops; the differences go to
metrics/<dataset>/export.json."""

import sys
from pathlib import Path
from typing import Any

from facekeys.atomic import write_json
from facekeys.augment import load_npz
from facekeys.export import DEFAULT_TOLERANCE, export_model
from facekeys.stagekit import dataset_arg, run_stage


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    section = params.get("export", {})
    augmented = Path("data/augmented") / dataset
    crops = {"first": load_npz(augmented / "test.npz")["images"]}
    if (augmented / "refine" / "test.npz").is_file():
        crops["refine"] = load_npz(augmented / "refine" / "test.npz")["images"]
    card = export_model(
        Path("models") / dataset,
        Path("models") / dataset / "export",
        crops,
        tolerance=float(section.get("tolerance", DEFAULT_TOLERANCE)),
        log=lambda line: print(line, file=sys.stderr),
    )
    write_json(
        Path("metrics") / dataset / "export.json",
        {
            n["name"]: {"max_abs_difference_vs_pytorch": n["max_abs_difference_vs_pytorch"]}
            | {"checked_on_crops": n["checked_on_crops"]}
            for n in card["networks"]
        },
    )


if __name__ == "__main__":
    run_stage("export", main)
