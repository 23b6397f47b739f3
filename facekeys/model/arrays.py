"""The arrays a training holds in memory (``train.npz``, ``val.npz``), their standardisation into
network inputs, and the masked loss and NME of a model over a whole set of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from facekeys.data.labelled_splits import load_npz
from facekeys.model.devices import autocast
from facekeys.model.losses import masked_loss, nme_per_sample
from facekeys.model.settings import TrainSettings

# Inputs are scaled to [0, 1] then standardised with these (recorded with the model).
INPUT_MEAN = 0.5
INPUT_STD = 0.25


@dataclass
class Arrays:
    """One augmented split, whole, as tensors."""

    images: torch.Tensor  # uint8 (N, C, S, S)
    points: torch.Tensor  # float32 (N, P, 2), fractions of S
    mask: torch.Tensor  # bool (N, P)

    @classmethod
    def from_npz(cls, path: Path) -> Arrays:
        """Reads an augmented ``.npz``: images to channels-first, points to fractions of S."""
        data = load_npz(path)
        images = torch.from_numpy(data["images"])
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        size = images.shape[-1]
        return cls(
            images=images.contiguous(),
            points=torch.from_numpy(data["points"]).float() / size,
            mask=torch.from_numpy(data["mask"]),
        )

    def __len__(self) -> int:
        return self.images.shape[0]


def prepare_batch(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 images -> standardised float tensor on ``device``."""
    x = images.to(device, non_blocking=True).float().div_(255.0).sub_(INPUT_MEAN).div_(INPUT_STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def batch_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, settings: TrainSettings
) -> torch.Tensor:
    """The masked loss ``settings`` choose (``train.loss`` and its parameters)."""
    s = settings
    return masked_loss(pred, target, mask, s.loss, s.wing_w, s.wing_epsilon, s.smooth_l1_beta)


@torch.no_grad()
def evaluate_arrays(
    model: torch.nn.Module,
    data: Arrays,
    settings: TrainSettings,
    device: torch.device,
    eye_pair: tuple[int, int],
    dtype: torch.dtype | None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean masked loss and NME of ``model`` over ``data``."""
    model.eval()
    losses, nmes, count = 0.0, [], 0
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        x = prepare_batch(data.images[sl], device, settings.channels_last)
        with autocast(device, dtype):
            pred = model(x)
        target, mask = data.points[sl].to(device), data.mask[sl].to(device)
        losses += float(batch_loss(pred, target, mask, settings)) * len(x)
        nmes.append(nme_per_sample(pred.float(), target, mask, eye_pair).cpu())
        count += len(x)
    nme = torch.cat(nmes)
    return {"loss": losses / max(count, 1), "nme": float(torch.nanmean(nme))}
