"""Files a training leaves: its checkpoint (read and written), the model folder
(``model.pt`` + ``model.json``, written, loaded and published into place)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from facekeys.data.atomic_files import atomic_file, sha256_file, write_json
from facekeys.data.keypoint_formats import FORMATS
from facekeys.model.networks import build_model


def read_checkpoint(path: Path, device: torch.device, log: Callable[[str], None]) -> Any:
    """A checkpoint's state, or None where there is none or it cannot be read (a kill while
    the disk was full, a file from elsewhere): then training starts afresh, saying why."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights only load failed" in reason.lower():
            reason = "it holds Python objects, not plain tensors"
        log(f"{path}: unreadable checkpoint ({reason[:120]}); starting afresh")
        return None
    return state if isinstance(state, dict) else None


def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Saves a checkpoint's state atomically: a kill leaves the previous one or this one."""
    with atomic_file(path, "wb") as handle:
        torch.save(state, handle)


def write_model_folder(
    out_dir: Path, best_state: dict[str, torch.Tensor], model_card: dict[str, Any]
) -> None:
    """Writes ``model.pt`` (the weights, on the CPU) and ``model.json`` (the card) into
    ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "model.pt", "wb") as handle:
        torch.save({k: v.cpu() for k, v in best_state.items()}, handle)
    write_json(out_dir / "model.json", model_card)


def name_partner(model_dir: str | os.PathLike[str]) -> None:
    """Records the hash of ``model_dir/refine/model.pt`` on the first network's card
    (``refine_sha256``), so that loading refuses a folder assembled from two trainings."""
    card_path = Path(model_dir) / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["refine_sha256"] = sha256_file(Path(model_dir) / "refine" / "model.pt")
    write_json(card_path, card)


def load_model(model_dir: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Loads ``model.pt`` (weights only, no pickles) and ``model.json`` from a model folder."""
    model_dir = Path(model_dir)
    return load_model_files(model_dir / "model.pt", model_dir / "model.json")


def load_model_files(
    weights: str | os.PathLike[str], card_path: str | os.PathLike[str]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Builds the model described by a model card and loads its weights (``weights_only``)."""
    card = json.loads(Path(card_path).read_text(encoding="utf-8"))
    fmt = FORMATS[card["format"]]
    model = build_model(
        card["architecture"], fmt.num_points, card["input"]["channels"], card["input"]["size"],
        # Cards written before these two keys existed: stride 8 with a stem block.
        card["width"], card.get("heatmap_stride", 8), card.get("stem_block", True),
    )  # fmt: skip
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), card


def publish_model(staging: str | os.PathLike[str], model_dir: str | os.PathLike[str]) -> None:
    """Moves a model folder trained in ``staging`` into ``model_dir`` (which may hold other
    stages' outputs, e.g. ``export/``), replacing the networks there.

    ``model.pt`` moves last: a folder a kill interrupts mid-way has no first network and is
    refused on loading, never a new first network beside an old refinement network.
    """
    staging, model_dir = Path(staging), Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.pt").unlink(missing_ok=True)
    for name in ("refine", "loss_curves.png", "model.json", "model.pt"):
        source, target = staging / name, model_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        if source.exists():
            os.replace(source, target)
        else:
            target.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
