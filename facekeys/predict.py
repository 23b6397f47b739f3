"""The one prediction path: decoded image (+ optional face box) -> keypoints in image pixels.

Used by the benchmark, the evaluate stage, ``facekeys predict`` and the MLflow model, so every
consumer crops exactly as the model was trained. A model folder holds a first-stage model
(``model.pt`` + ``model.json``, crop around the face box or the whole image) and, optionally, a
refinement model in ``refine/`` that re-crops around the first stage's keypoints at a higher face
resolution and predicts again. Crop policies come from the model cards, never from the caller.

Coordinates: pixel centres on integers inside this module; ``to_label_convention`` shifts them by
the data set's ``label_pixel_offset`` to compare with (or write as) the source CSVs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekeys.crop import (
    CropPolicy,
    apply_to_points,
    keypoint_box,
    square_crop_matrix,
    warp,
    whole_image_matrix,
)

Box = tuple[float, float, float, float]


@dataclass
class StageModel:
    """One network and the card that says how to feed it."""

    model: torch.nn.Module
    card: dict[str, Any]

    @property
    def size(self) -> int:
        return int(self.card["input"]["size"])

    @property
    def color(self) -> str:
        return str(self.card["input"].get("color", "gray"))

    @property
    def policy(self) -> dict[str, Any]:
        return dict(self.card["crop_policy"])

    def crop_matrix(self, image_shape: tuple[int, ...], box: Box | None) -> np.ndarray:
        """Original pixels -> model input, per the crop policy of the card."""
        policy = self.policy
        margin = float(policy.get("margin", 0.0))
        if box is None:
            height, width = image_shape[:2]
            return whole_image_matrix(width, height, CropPolicy(size=self.size, margin=margin))
        return square_crop_matrix(box, self.size, margin)

    @torch.no_grad()
    def predict_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` crops -> ``(N, P, 2)`` input pixels."""
        from facekeys.train import prepare_batch

        scale, mean, std = (self.card["input"][k] for k in ("scale", "mean", "std"))
        out = []
        for start in range(0, len(crops), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size]))
            batch = batch.unsqueeze(1) if batch.ndim == 3 else batch.permute(0, 3, 1, 2)
            if (scale, mean, std) == (1 / 255, 0.5, 0.25):
                x = prepare_batch(batch, torch.device("cpu"), False)
            else:
                x = (batch.float() * scale - mean) / std
            out.append(self.model(x).float().numpy() * self.size)
        if not out:
            return np.zeros((0, len(self.card["keypoints"]["names"]), 2), np.float32)
        return np.concatenate(out)


class KeypointPredictor:
    """First stage and optional refinement stage of a trained model folder."""

    def __init__(self, first: StageModel, refine: StageModel | None = None) -> None:
        self.first = first
        self.refine = refine

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str]) -> KeypointPredictor:
        """Loads ``model_dir/model.pt`` and, where present, ``model_dir/refine/model.pt``."""
        from facekeys.train import load_model

        model_dir = Path(model_dir)
        first = StageModel(*load_model(model_dir))
        refine = None
        if (model_dir / "refine" / "model.pt").is_file():
            refine = StageModel(*load_model(model_dir / "refine"))
        return cls(first, refine)

    @property
    def card(self) -> dict[str, Any]:
        return self.first.card

    @property
    def keypoint_names(self) -> list[str]:
        return list(self.first.card["keypoints"]["names"])

    @property
    def label_pixel_offset(self) -> float:
        return float(self.first.card.get("label_pixel_offset", 0.0))

    def predict(
        self, images: list[np.ndarray], boxes: list[Box | None] | None = None
    ) -> np.ndarray:
        """Keypoints ``(N, P, 2)`` in original pixels (centres on integers) of each image.

        Args:
            images: Decoded images, uint8 gray / BGR / BGRA (as OpenCV reads them).
            boxes: Face box ``(x, y, w, h)`` per image, or None for the whole image.
        """
        from facekeys.augment import to_model_color

        boxes = boxes if boxes is not None else [None] * len(images)
        points = self._run(self.first, images, boxes, to_model_color)
        if self.refine is not None:
            refine_boxes: list[Box | None] = [keypoint_box(p) for p in points]
            points = self._run(self.refine, images, refine_boxes, to_model_color)
        return points

    def _run(self, stage: StageModel, images, boxes, to_color) -> np.ndarray:
        pad = int(stage.policy.get("pad_value", 0))
        matrices, crops = [], []
        for image, box in zip(images, boxes, strict=True):
            matrix = stage.crop_matrix(image.shape, box)
            matrices.append(matrix)
            crops.append(warp(to_color(image, stage.color), matrix, stage.size, pad))
        predicted = stage.predict_crops(np.stack(crops)) if crops else np.zeros((0, 0, 2))
        return np.stack(
            [apply_to_points(np.linalg.inv(m), p) for m, p in zip(matrices, predicted, strict=True)]
        ) if crops else predicted.astype(np.float32)  # fmt: skip

    def to_label_convention(self, points: np.ndarray) -> np.ndarray:
        """Pixel-centre coordinates -> the data set's label convention (adds the offset)."""
        return points + self.label_pixel_offset


def read_card(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The first-stage model card of a model folder."""
    return json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
