"""Masked losses and keypoint metrics. Coordinates are fractions of the input side; a mask marks
labelled points, and unlabelled points contribute nothing to any loss or metric."""

from __future__ import annotations

import math

import torch

LOSSES = ("mse", "smooth_l1", "wing")


def masked_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "wing",
    wing_w: float = 0.04,
    wing_epsilon: float = 0.008,
    smooth_l1_beta: float = 0.01,
) -> torch.Tensor:
    """Mean loss over labelled coordinates.

    Args:
        pred, target: ``(N, P, 2)`` coordinates as fractions of the input side.
        mask: ``(N, P)`` bool, True where the point is labelled.
        kind: ``mse``, ``smooth_l1`` or ``wing``.
        wing_w, wing_epsilon: Wing loss (Feng et al. 2018) in normalised units: 0.04 and 0.008
            are the paper's 10 px and 2 px on a ~250 px face.
        smooth_l1_beta: Where smooth L1 turns from quadratic to linear, normalised units.
    """
    diff = (pred.float() - target.float()).abs()
    if kind == "mse":
        per = diff.square()
    elif kind == "smooth_l1":
        per = torch.where(
            diff < smooth_l1_beta, 0.5 * diff.square() / smooth_l1_beta, diff - 0.5 * smooth_l1_beta
        )
    elif kind == "wing":
        c = wing_w - wing_w * math.log1p(wing_w / wing_epsilon)
        per = torch.where(diff < wing_w, wing_w * torch.log1p(diff / wing_epsilon), diff - c)
    else:
        raise ValueError(f"unknown loss {kind!r}; choose from {LOSSES}")
    weight = mask.unsqueeze(-1).to(per.dtype).expand_as(per)
    return (per * weight).sum() / weight.sum().clamp_min(1.0)


def nme_per_sample(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eye_pair: tuple[int, int]
) -> torch.Tensor:
    """Mean point-to-point error over labelled points, divided by the distance between the
    ``eye_pair`` points of the ground truth. Returns ``(N,)``; NaN where the pair is unlabelled."""
    err = (pred.float() - target.float()).norm(dim=-1)
    m = mask.to(err.dtype)
    mean_err = (err * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    norm = (target[:, eye_pair[0]] - target[:, eye_pair[1]]).float().norm(dim=-1)
    ok = mask[:, eye_pair[0]] & mask[:, eye_pair[1]] & (norm > 0)
    return torch.where(ok, mean_err / norm.clamp_min(1e-12), torch.full_like(norm, float("nan")))
