"""What a training works with, prepared once before its first epoch: the arrays, the device and
precision, the seeded networks with their optimiser and schedule, the resolved config and its
hash; and the model card (``model.json``) that records them."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from facekeys.data.atomic_files import sha256_file
from facekeys.data.keypoint_formats import FORMATS, CsvFormat
from facekeys.errors import FacekeysError
from facekeys.model.arrays import INPUT_MEAN, INPUT_STD, Arrays
from facekeys.model.devices import autocast_dtype, resolve_device, use_cpu_threads
from facekeys.model.networks import build_model
from facekeys.model.settings import TrainSettings


@dataclass
class TrainingSetup:
    """What a training works with, fixed once prepared: data, device, networks, optimiser."""

    settings: TrainSettings
    meta: dict[str, Any]  # the augmented data's meta.json
    fmt: CsvFormat
    device: torch.device
    dtype: torch.dtype | None  # the autocast dtype; None for plain fp32
    train_data: Arrays
    val_data: Arrays
    config: dict[str, Any]  # everything that determines the weights
    digest: str  # config_hash(config)
    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int


def prepare_training(data_dir: Path, settings: TrainSettings) -> TrainingSetup:
    """Reads the data, picks the device and precision, and builds the networks and optimiser
    (seeded: every training starts from the same weights)."""
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    fmt = FORMATS[meta["format"]]
    device = resolve_device(settings)
    use_cpu_threads(settings, device)
    dtype = autocast_dtype(settings, device)
    train_data = Arrays.from_npz(data_dir / "train.npz")
    val_data = Arrays.from_npz(data_dir / "val.npz")
    if len(train_data) < settings.batch_size:
        raise FacekeysError(
            f"{data_dir}/train.npz: {len(train_data)} samples < batch_size {settings.batch_size}"
        )
    config = _resolved_config(settings, meta, data_dir, len(train_data))
    steps_per_epoch = len(train_data) // settings.batch_size
    model, ema, optimizer, scheduler = _build_networks(settings, fmt, meta, device, steps_per_epoch)
    return TrainingSetup(
        settings, meta, fmt, device, dtype, train_data, val_data, config, config_hash(config),
        model, ema, optimizer, scheduler, steps_per_epoch,
    )  # fmt: skip


def _resolved_config(
    settings: TrainSettings, meta: dict[str, Any], data_dir: Path, train_samples: int
) -> dict[str, Any]:
    """Everything that determines the weights (not where they are computed)."""
    return {
        "train": asdict(settings) | {"threads": None, "device": None},
        "data": meta["settings"],
        "format": meta["format"],
        "train_samples": train_samples,
        # Same settings on changed data must not resume or reuse a checkpoint.
        "data_sha256": {n: sha256_file(data_dir / n) for n in ("train.npz", "val.npz")},
    }


def config_hash(config: dict[str, Any]) -> str:
    """A short hash of everything that determines the weights (resume only when it matches)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _build_networks(
    settings: TrainSettings,
    fmt: CsvFormat,
    meta: dict[str, Any],
    device: torch.device,
    steps_per_epoch: int,
) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Any]:
    """The seeded model, its EMA copy, AdamW and the warm-up + cosine schedule."""
    torch.manual_seed(settings.seed)
    model = build_model(
        settings.architecture, fmt.num_points, meta["channels"], meta["image_size"],
        settings.width, settings.heatmap_stride, settings.stem_block,
    )  # fmt: skip
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    total_steps = steps_per_epoch * settings.epochs
    warmup = max(1, int(settings.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps, warmup)
    )
    return model, ema, optimizer, scheduler


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def model_card(setup: TrainingSetup) -> dict[str, Any]:
    """``model.json``: how to rebuild the network and feed it, and what it learnt from."""
    settings, meta = setup.settings, setup.meta
    return {
        "architecture": settings.architecture,
        "width": settings.width,
        "heatmap_stride": settings.heatmap_stride,
        "stem_block": settings.stem_block,
        "format": meta["format"],
        # Which data it learnt from (e.g. derived:youtube-faces-68 instead of Kaggle's own).
        "data_source": meta.get("data_source"),
        "input": {
            "size": meta["image_size"],
            "channels": meta["channels"],
            "color": meta["color"],
            "scale": 1 / 255,
            "mean": INPUT_MEAN,
            "std": INPUT_STD,
            "layout": "NCHW",
        },
        "output": "(N, P, 2) coordinates as fractions of the input side; pixel x = value * size",
        "crop_policy": meta["crop_policy"],
        "label_pixel_offset": meta.get("label_pixel_offset", 0.0),
        "keypoints": meta["keypoints"],
        "resolved_config": setup.config,
        "config_hash": setup.digest,
    }
