"""What a training reports as it goes: the per-epoch logger interface (MLflow implements it in
``facekeys.tracking.runs``), its prefixed form for a second network, and the history CSV for
``dvc plots``."""

from __future__ import annotations

import os
from typing import Any

from facekeys.data.atomic_files import atomic_file


class EpochLogger:
    """Receives per-epoch results (MLflow in the stage; nothing in tests)."""

    def start(self, resumed_run_id: str | None) -> str | None:
        """Starts (or, given the id of a resumed run, continues) a run; returns its id."""
        return None

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Receives the metrics of epoch ``epoch`` (numbered from 1)."""


class PrefixedLogger(EpochLogger):
    """Logs a second training into a run already started by ``inner``, metric names prefixed."""

    def __init__(self, inner: EpochLogger, prefix: str, run_id: str | None) -> None:
        self.inner, self.prefix, self.run_id = inner, prefix, run_id

    def start(self, resumed_run_id: str | None) -> str | None:
        """The run ``inner`` started: the second training continues it."""
        return self.run_id

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Passes the metrics on to ``inner``, each name but ``epoch`` prefixed."""
        self.inner.epoch(
            epoch, {(k if k == "epoch" else f"{self.prefix}{k}"): v for k, v in metrics.items()}
        )


def write_history_csv(path: str | os.PathLike[str], history: list[dict[str, Any]]) -> None:
    """Per-epoch rows for ``dvc plots``; ``stage`` says which model (first or refine) the row
    belongs to (refinement epochs continue the first model's numbering)."""
    keys = ["epoch", "train_loss", "val_loss", "val_nme", "lr", "images_per_s", "seconds"]
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(",".join([*keys, "stage"]) + "\n")
        for row in history:
            cells = [f"{row[k]:.6g}" for k in keys] + [str(row.get("stage", "first"))]
            handle.write(",".join(cells) + "\n")
