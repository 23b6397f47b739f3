"""Keypoint models in plain torch. Every model maps ``(N, C, S, S)`` normalised images to
``(N, P, 2)`` coordinates as fractions of the input side (pixel ``x`` of the input is ``x / S``).

* ``naimishnet``: the classic CVND regressor (4 conv blocks, 2 dense layers).
* ``resnet``: residual blocks, global pooling and a dense head that regresses coordinates.
* ``heatmap``: the same residual backbone, a light feature pyramid back to stride 8, one heatmap
  per point and a soft-argmax read-out (differentiable, sub-pixel).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURES = ("naimishnet", "resnet", "heatmap")


class NaimishNet(nn.Module):
    """After Agarwal et al. 2017 (NaimishNet), sized for a ``size`` x ``size`` input."""

    def __init__(self, num_points: int, in_channels: int, size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for k, (out, kernel) in enumerate(((32, 4), (64, 3), (128, 2), (256, 1))):
            layers += [
                nn.Conv2d(channels, out, kernel),
                nn.ELU(),
                nn.MaxPool2d(2),
                nn.Dropout(0.1 * (k + 1)),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, in_channels, size, size)).numel()
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 1000),
            nn.ELU(),
            nn.Dropout(0.5),
            nn.Linear(1000, 1000),
            nn.ReLU(),
            nn.Dropout(0.6),
            nn.Linear(1000, num_points * 2),
        )
        self.num_points = num_points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out.view(-1, self.num_points, 2) + 0.5


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class Backbone(nn.Module):
    """Residual backbone; returns feature maps at strides 4, 8, 16 and 32."""

    def __init__(self, in_channels: int, width: int, stem_block: bool = True) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            # At stride 2 this block costs a fifth of a small network's int8 inference time
            # (README, "Export"): ``stem_block=False`` leaves it out.
            BasicBlock(w, w) if stem_block else nn.Identity(),
        )  # stride 2
        self.layer1 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))  # 4
        self.layer2 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))  # 8
        self.layer3 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))  # 16
        self.layer4 = nn.Sequential(BasicBlock(8 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))  # 32
        self.channels = (2 * w, 4 * w, 8 * w, 8 * w)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return c1, c2, c3, self.layer4(c3)


class ResNetRegressor(nn.Module):
    """Residual backbone, global average pooling, dense coordinate head."""

    def __init__(
        self, num_points: int, in_channels: int, width: int, stem_block: bool = True
    ) -> None:
        super().__init__()
        self.backbone = Backbone(in_channels, width, stem_block)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.1), nn.Linear(self.backbone.channels[3], num_points * 2)
        )
        self.num_points = num_points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = F.adaptive_avg_pool2d(self.backbone(x)[3], 1)
        return self.head(features).view(-1, self.num_points, 2) + 0.5


class HeatmapNet(nn.Module):
    """Residual backbone + top-down pyramid to stride 8 (or 4) + soft-argmax over per-point
    heatmaps.

    ``heatmap_stride`` 4 adds the stride-4 features through a 1x1 lateral after the stride-8
    smoothing, so the grid doubles for about 5 % more compute: a 64 px input gets 16x16 cells
    instead of 8x8, each an eighth of the face less coarse.
    """

    STRIDES = (4, 8)

    def __init__(
        self,
        num_points: int,
        in_channels: int,
        width: int,
        size: int,
        heatmap_stride: int = 8,
        stem_block: bool = True,
    ) -> None:
        super().__init__()
        if heatmap_stride not in self.STRIDES:
            raise ValueError(f"heatmap_stride must be one of {self.STRIDES}, got {heatmap_stride}")
        self.backbone = Backbone(in_channels, width, stem_block)
        fpn = 4 * width
        c1, c2, c3, c4 = self.backbone.channels
        self.lateral = nn.ModuleList([nn.Conv2d(c, fpn, 1) for c in (c2, c3, c4)])
        self.smooth = nn.Sequential(
            nn.Conv2d(fpn, fpn, 3, 1, 1, bias=False), nn.BatchNorm2d(fpn), nn.ReLU(inplace=True)
        )
        self.fine: nn.Module | None = nn.Conv2d(c1, fpn, 1) if heatmap_stride == 4 else None
        self.heatmaps = nn.Conv2d(fpn, num_points, 1)
        # Sharpness of the soft-argmax, learnt; starts where a 3-cell blob dominates.
        self.log_beta = nn.Parameter(torch.tensor(1.0))
        self.stride = heatmap_stride
        grid = size // heatmap_stride
        # Cell j covers input pixels [sj, sj + s): its centre is pixel sj + (s - 1) / 2.
        centres = (
            torch.arange(grid, dtype=torch.float32) * heatmap_stride + (heatmap_stride - 1) / 2
        ) / size
        # (cells, 2) x/y of every cell, row-major like the flattened heatmap: the read-out is one
        # matrix product, which exports to a single MatMul instead of sums over each axis.
        cells = torch.stack([centres.repeat(grid), centres.repeat_interleave(grid)], dim=-1)
        self.register_buffer("cells", cells, persistent=False)
        self.grid = grid
        self.num_points = num_points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3, c4 = self.backbone(x)
        top = self.lateral[2](c4)
        mid = self.lateral[1](c3) + F.interpolate(top, size=c3.shape[-2:], mode="nearest")
        low = self.lateral[0](c2) + F.interpolate(mid, size=c2.shape[-2:], mode="nearest")
        features = self.smooth(low)
        if self.fine is not None:
            features = F.relu(
                self.fine(c1) + F.interpolate(features, size=c1.shape[-2:], mode="nearest")
            )
        logits = self.heatmaps(features).float()
        # The batch from the tensor, not -1: an input of another size must fail here rather
        # than fold its extra cells into extra faces.
        flat = logits.reshape(logits.shape[0], self.num_points, self.grid * self.grid)
        prob = torch.softmax(flat * self.log_beta.exp(), dim=-1)
        return prob @ self.cells


def build_model(
    architecture: str,
    num_points: int,
    in_channels: int,
    size: int,
    width: int = 32,
    heatmap_stride: int = 8,
    stem_block: bool = True,
) -> nn.Module:
    """Builds a keypoint model by name (see ``ARCHITECTURES``); ``heatmap_stride`` is the
    heatmap architecture's cell size in input pixels (4 or 8), ``stem_block`` whether the
    residual backbones (resnet, heatmap) have a residual block at stride 2."""
    if architecture == "naimishnet":
        return NaimishNet(num_points, in_channels, size)
    if architecture == "resnet":
        return ResNetRegressor(num_points, in_channels, width, stem_block)
    if architecture == "heatmap":
        if size % 8:
            raise ValueError(f"heatmap needs an image size divisible by 8, got {size}")
        return HeatmapNet(num_points, in_channels, width, size, heatmap_stride, stem_block)
    raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
