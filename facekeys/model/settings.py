"""The ``train`` section of params.yaml: ``TrainSettings``, its parsing and its checks (also the
settings of the refinement network, ``train.refine``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from facekeys.errors import FacekeysError
from facekeys.model.losses import LOSSES
from facekeys.model.networks import ARCHITECTURES


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section of params.yaml."""

    architecture: str = "heatmap"
    width: int = 24
    heatmap_stride: int = 8  # heatmap cell size in input pixels: 8, or 4 for small inputs
    stem_block: bool = True  # a residual block at stride 2 (resnet, heatmap)
    loss: str = "wing"
    wing_w: float = 0.04
    wing_epsilon: float = 0.008
    smooth_l1_beta: float = 0.01
    epochs: int = 14
    batch_size: int = 64
    lr: float = 0.002
    weight_decay: float = 0.0001
    warmup_epochs: float = 0.5
    ema_decay: float = 0.998
    early_stopping_patience: int = 5
    seed: int = 2026
    precision: str = "auto"  # auto | fp32 | bf16 (CPU/CUDA) | fp16 (CUDA)
    channels_last: bool = True
    threads: int = 0  # CPU threads; 0 = one per core
    device: str = "auto"  # auto | cpu | cuda

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainSettings:
        """Builds settings from the ``train`` section; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(params) - known - {"mlflow", "refine"}
        if unknown:
            raise FacekeysError(f"params.yaml: train: unknown keys {sorted(unknown)}")
        settings = cls(**{k: v for k, v in params.items() if k in known})
        settings.check()
        return settings

    @classmethod
    def refine_from_params(cls, params: dict[str, Any]) -> TrainSettings:
        """Settings of the refinement model: the section's, with ``train.refine`` keys replaced."""
        overrides = params.get("refine") or {}
        if not isinstance(overrides, dict):
            raise FacekeysError("params.yaml: train.refine must be a mapping of train keys")
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(f"params.yaml: train.refine: unknown keys {sorted(unknown)}")
        settings = replace(cls.from_params(params), **overrides)
        settings.check()
        return settings

    def check(self) -> None:
        """Raises ``FacekeysError`` naming every value out of range, all in one line."""
        problems = []
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture must be one of {ARCHITECTURES}")
        if self.heatmap_stride not in (4, 8):
            problems.append("heatmap_stride must be 4 or 8")
        if not isinstance(self.stem_block, bool):  # a quoted "false" would be true
            problems.append("stem_block must be true or false")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append("precision must be auto, fp32, bf16 or fp16")
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch_size must be >= 1")
        if problems:
            raise FacekeysError("params.yaml: train: " + "; ".join(problems))
