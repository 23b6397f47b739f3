"""DVC stage validate@<dataset>: validate each CSV of data/raw/<dataset>/ into
data/validated/<dataset>/<split>/ and write metrics/<dataset>/validate.json."""

import sys
from pathlib import Path
from typing import Any

from facekeys.data.atomic_files import write_json
from facekeys.data.dataset_layout import DATASETS
from facekeys.data.keypoint_formats import FORMATS
from facekeys.data.validate import ValidationSettings, validate_csv
from facekeys.errors import DataUnusableError
from facekeys.stage_runner import dataset_arg, run_stage


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
    # DVC's tables show one number (short, so that they fit a terminal); validate.json keeps
    # the counts per split.
    quarantined = sum(counts["rows_quarantined"] for counts in summary.values())
    write_json(
        Path("metrics") / dataset / "headline" / "validate.json", {"quarantined": quarantined}
    )


if __name__ == "__main__":
    run_stage("validate", main)
