"""Masked losses and NME against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from facekeys.model.losses import masked_loss, nme_per_sample


@pytest.mark.parametrize("kind", ["mse", "smooth_l1", "wing"])
def test_masked_points_contribute_nothing(kind):
    pred = torch.rand(4, 15, 2, requires_grad=True)
    target = torch.rand(4, 15, 2)
    mask = torch.zeros(4, 15, dtype=torch.bool)
    mask[:, [0, 1, 10, 14]] = True
    loss = masked_loss(pred, target, mask, kind)
    moved = target.clone()
    moved[:, 2:10] += 5.0  # change only unlabelled points
    assert torch.equal(loss, masked_loss(pred, moved, mask, kind))
    loss.backward()
    assert pred.grad[:, 2:10].abs().sum() == 0
    assert pred.grad[:, [0, 1, 10, 14]].abs().sum() > 0


def test_values_by_hand():
    pred = torch.tensor([[[0.1, 0.0], [0.5, 0.5]]])
    target = torch.zeros(1, 2, 2)
    mask = torch.tensor([[True, False]])
    assert masked_loss(pred, target, mask, "mse").item() == pytest.approx(0.01 / 2)
    w, eps = 0.04, 0.008
    c = w - w * math.log1p(w / eps)
    # 0.1 > w: linear part; 0.0: log part at 0 = 0
    assert masked_loss(pred, target, mask, "wing", w, eps).item() == pytest.approx((0.1 - c) / 2)
    assert masked_loss(pred, target, mask, "smooth_l1", smooth_l1_beta=0.01).item() == (
        pytest.approx((0.1 - 0.005) / 2)
    )


def test_wing_is_continuous_at_w():
    w = 0.04
    mask = torch.ones(1, 1, dtype=torch.bool)
    below = masked_loss(torch.tensor([[[w - 1e-7, 0.0]]]), torch.zeros(1, 1, 2), mask, "wing")
    above = masked_loss(torch.tensor([[[w + 1e-7, 0.0]]]), torch.zeros(1, 1, 2), mask, "wing")
    assert below.item() == pytest.approx(above.item(), abs=1e-6)


def test_nme_by_hand():
    target = torch.zeros(1, 3, 2)
    target[0, 0] = torch.tensor([0.0, 0.0])
    target[0, 2] = torch.tensor([0.4, 0.0])  # eye pair (0, 2): distance 0.4
    pred = target.clone()
    pred[0, 1, 0] += 0.06  # one point off by 0.06 -> mean error 0.02 over 3 points
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert nme_per_sample(pred, target, mask, (0, 2)).item() == pytest.approx(0.02 / 0.4)
    mask[0, 1] = False
    assert nme_per_sample(pred, target, mask, (0, 2)).item() == 0.0
    mask[0, 2] = False
    assert math.isnan(nme_per_sample(pred, target, mask, (0, 2)).item())
