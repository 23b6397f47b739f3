"""DVC stage export@<dataset>: models/<dataset> -> models/<dataset>/export/ (TorchScript and ONNX
per network, model.json), each checked against PyTorch on the selection crops (val.npz); with
export.int8, also int8 ONNX files calibrated on training crops and checked on selection-crop NME
(the reported splits stay unread by any choice). The differences go to
metrics/<dataset>/export.json; the int8 time per face, the one headline number, also to
metrics/<dataset>/headline/export.json (DVC's metrics for this stage)."""

import sys
from pathlib import Path
from typing import Any

from facekeys.data.atomic_files import write_json
from facekeys.data.labelled_splits import load_npz
from facekeys.export.exporter import DEFAULT_TOLERANCE, export_model
from facekeys.export.int8 import Int8Data, Int8Settings
from facekeys.inference.exported_runtimes import int8_ms_per_face
from facekeys.stage_runner import dataset_arg, run_stage


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    section = params.get("export", {})
    augmented = Path("data/augmented") / dataset
    folders = {"first": augmented}
    if (augmented / "refine" / "val.npz").is_file():
        folders["refine"] = augmented / "refine"
    checks = {name: load_npz(folder / "val.npz") for name, folder in folders.items()}
    int8 = Int8Settings.from_params(section.get("int8"))
    int8_data = None
    if int8 is not None:
        int8_data = {
            name: Int8Data(
                calibration=load_npz(folder / "train.npz")["images"],
                check_points=checks[name]["points"],
                check_mask=checks[name]["mask"],
            )
            for name, folder in folders.items()
        }
    card = export_model(
        Path("models") / dataset,
        Path("models") / dataset / "export",
        {name: crops["images"] for name, crops in checks.items()},
        tolerance=float(section.get("tolerance", DEFAULT_TOLERANCE)),
        log=lambda line: print(line, file=sys.stderr),
        int8=int8,
        int8_data=int8_data,
    )
    report: dict[str, Any] = {
        n["name"]: {"max_abs_difference_vs_pytorch": n["max_abs_difference_vs_pytorch"]}
        | {"checked_on_crops": n["checked_on_crops"]}
        | ({"int8": n["int8"]} if n["int8"] else {})
        for n in card["networks"]
    }
    speed = int8_ms_per_face(
        Path("models") / dataset / "export",
        {name: crops["images"] for name, crops in checks.items()},
    )
    if speed is not None:
        report["int8_ms_per_face"] = speed
        print(f"int8: {speed:.2f} ms per face (batch 1, one thread)", file=sys.stderr)
    write_json(Path("metrics") / dataset / "export.json", report)
    # The headline file exists even without int8 files, so DVC always finds its metrics.
    headline = {"int8_ms": speed}
    write_json(Path("metrics") / dataset / "headline" / "export.json", headline)


if __name__ == "__main__":
    run_stage("export", main)
