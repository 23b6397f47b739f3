"""MLflow "model from code": the logged model is this file plus the weights and model card as
artifacts, so loading it never unpickles anything (weights load with ``weights_only=True``).

Input: a batch of model-input crops, uint8 ``(N, S, S)`` (gray) or ``(N, S, S, 3)`` (RGB), cut
with the crop policy in the model card. Output: float32 ``(N, P, 2)`` keypoints in crop pixels.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class KeypointCropModel(PythonModel):
    """Predicts keypoints on crops prepared with the model's crop policy."""

    def load_context(self, context: Any) -> None:
        from facekeys.train import load_model_files

        self.model, self.card = load_model_files(
            context.artifacts["weights"], context.artifacts["card"]
        )

    # No type hints here: MLflow would read them as a schema and warn; the signature is logged.
    def predict(self, context, model_input, params=None):
        import torch

        from facekeys.train import prepare_batch

        batch = np.asarray(model_input, dtype=np.uint8)
        images = torch.from_numpy(batch)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        with torch.no_grad():
            out = self.model(prepare_batch(images, torch.device("cpu"), False))
        return (out.float().numpy() * self.card["input"]["size"]).astype(np.float32)


mlflow.models.set_model(KeypointCropModel())
