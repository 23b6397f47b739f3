"""DVC stage validate@<dataset>: validate each CSV of data/raw/<dataset>/ into
data/validated/<dataset>/<split>/ and write metrics/<dataset>/validate.json."""

import sys
from pathlib import Path
from typing import Any

from facekeys.atomic import write_json
from facekeys.datasets import DATASETS
from facekeys.errors import DataUnusableError
from facekeys.schemes import FORMATS
from facekeys.stagekit import dataset_arg, run_stage
from facekeys.validate import ValidationSettings, validate_csv


def main(params: dict[str, Any], argv: list[str]) -> None:
    dataset = dataset_arg(argv, params)
    layout = DATASETS[dataset]
    settings = ValidationSettings.from_params(params.get("validate", {}))
    raw, out = Path("data/raw") / dataset, Path("data/validated") / dataset
    summary: dict[str, Any] = {}
    failures = []
    for split, files in layout.splits.items():
        try:
            report = validate_csv(
                FORMATS[layout.format],
                raw / files.csv,
                out / split,
                images_dir=raw / files.images if files.images else None,
                settings=settings,
                log=lambda line: print(line, file=sys.stderr),
            )
        except DataUnusableError as exc:
            failures.append(str(exc))
            continue
        summary[split] = {
            k: report[k] for k in ("rows_total", "rows_valid", "rows_quarantined", "rows_flagged")
        }
    if failures:
        raise DataUnusableError("; ".join(failures))
    write_json(Path("metrics") / dataset / "validate.json", summary)


if __name__ == "__main__":
    run_stage("validate", main)
