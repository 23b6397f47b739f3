"""The ``augment`` section of params.yaml: how model-ready samples are cropped and augmented.

``AugmentSettings.from_params`` reads the first network's data settings for one data set,
``refine_from_params`` the refinement network's (the same with ``refine.<dataset>`` applied and
crops around the keypoints); ``check`` refuses values that cannot work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from facekeys.augment.identity_split import SPLIT_KEYS
from facekeys.errors import FacekeysError


@dataclass(frozen=True)
class AugmentSettings:
    """The ``augment`` section of params.yaml (``image_size`` resolved for one data set)."""

    image_size: int = 128
    color: str = "gray"
    # Held out by identity (when the format names people): ``val_fraction`` is the selection
    # split (early stopping, epoch choice, int8 checks, the registry gate), ``new_people_fraction``
    # the reported split that no choice reads. The new people are drawn first, so changing
    # ``val_fraction`` never moves them.
    val_fraction: float = 0.1
    new_people_fraction: float = 0.1
    copies: int = 4
    include_original: bool = True
    seed: int = 2026
    flip_p: float = 0.5
    rotate_deg: float = 20.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    shift_fraction: float = 0.08
    brightness_contrast: float = 0.25
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur_p: float = 0.2
    noise_p: float = 0.3
    occlusion_p: float = 0.3
    out_of_frame: str = "resample"
    max_resample: int = 10
    pad_value: int = 0
    workers: int = 0
    preview_samples: int = 16
    # Where the source labels put a pixel's centre: 0.5 means pixel i spans [i, i + 1) (its
    # centre is i + 0.5); internally centres lie on integers, so labels are shifted by this.
    label_pixel_offset: float = 0.5
    # The crop's face box: the whole image (first stage), or the box around the labelled
    # keypoints (refinement stage: at prediction time, the box of the first stage's points),
    # widened by ``margin`` of its longer side on each side.
    face_box: str = "whole_image"
    margin: float = 0.0

    @classmethod
    def from_params(cls, params: dict[str, Any], dataset: str) -> AugmentSettings:
        """Reads the section; ``image_size`` and ``label_pixel_offset`` may be a number or a
        mapping per data set. ``refine`` is read by ``refine_from_params``."""
        params = dict(params)
        params.pop("refine", None)
        params.pop("detector", None)  # read by facekeys.inference.detectors.DetectorSettings
        params.pop("yuface", None)  # read by facekeys.inference.landmark_detector
        for key in ("image_size", "label_pixel_offset"):
            value = params.get(key)
            if isinstance(value, dict):
                if dataset not in value:
                    raise FacekeysError(f"params.yaml: augment.{key} has no entry for {dataset}")
                params[key] = value[dataset]
        size = params.pop("image_size", cls.image_size)
        unknown = set(params) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(f"params.yaml: augment: unknown keys {sorted(unknown)}")
        for key in ("scale_range", "gamma_range"):
            if key in params:
                params[key] = tuple(params[key])
        settings = cls(image_size=int(size), **params)
        settings.check()
        return settings

    @classmethod
    def refine_from_params(cls, params: dict[str, Any], dataset: str) -> AugmentSettings | None:
        """Settings of the refinement stage's data: the first stage's, with the keys under
        ``refine.<dataset>`` replaced and the crop around the keypoints; None where that entry
        is missing or null (no refinement stage for the data set)."""
        overrides = (params.get("refine") or {}).get(dataset)
        if not overrides:
            return None
        if not isinstance(overrides, dict):
            raise FacekeysError(f"params.yaml: augment.refine.{dataset} must be a mapping or null")
        base = cls.from_params(params, dataset)
        if "face_box" in overrides:
            raise FacekeysError(
                f"params.yaml: augment.refine.{dataset}: face_box cannot be set here (refinement "
                "crops are always around the keypoints)"
            )
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise FacekeysError(
                f"params.yaml: augment.refine.{dataset}: unknown keys {sorted(unknown)}"
            )
        splitting = sorted(set(overrides) & set(SPLIT_KEYS))
        if splitting:
            # Another split would put held-out people into the refinement network's training.
            raise FacekeysError(
                f"params.yaml: augment.refine.{dataset}: {', '.join(splitting)} cannot be set "
                "here: both networks must hold out the same people"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        settings = replace(base, face_box="keypoints", **values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raises FacekeysError on values that cannot work."""
        problems = []
        if self.face_box not in ("whole_image", "keypoints"):
            problems.append(f"face_box must be whole_image or keypoints, not {self.face_box!r}")
        if not 0.0 <= self.margin <= 2.0:
            problems.append(f"margin {self.margin} outside 0..2")
        if self.color not in ("gray", "rgb"):
            problems.append(f"color must be gray or rgb, not {self.color!r}")
        if self.out_of_frame not in ("resample", "mask"):
            problems.append(f"out_of_frame must be resample or mask, not {self.out_of_frame!r}")
        if not 16 <= self.image_size <= 1024:
            problems.append(f"image_size {self.image_size} outside 16..1024")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction {self.val_fraction} outside [0, 1)")
        if not 0.0 <= self.new_people_fraction < 1.0:
            problems.append(f"new_people_fraction {self.new_people_fraction} outside [0, 1)")
        elif self.val_fraction + self.new_people_fraction >= 1.0:
            problems.append("val_fraction + new_people_fraction leave no training rows")
        if self.copies < 0 or (self.copies == 0 and not self.include_original):
            problems.append("copies must be >= 0, and > 0 without include_original")
        if problems:
            raise FacekeysError("params.yaml: augment: " + "; ".join(problems))
