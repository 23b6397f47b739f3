"""MLflow "model from code": the logged model is this file plus the model folder (weights and
cards) as artifacts, so loading it never unpickles anything (weights load with
``weights_only=True``).

Input: a DataFrame with an ``image`` column of encoded PNG or JPEG files (bytes, or
base64 text as JSON requests carry them), or, called in Python, an image array / a list of image
arrays. Output: one row per image with the keypoints in that image's pixels (the data set's
label convention), columns ``x0, y0, ...`` (Kaggle: its named columns). The whole image is the
face box, as in the data sets; preprocessing (crop, resize, refinement) is included.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def _decode(value: Any) -> np.ndarray:
    import base64

    from facekeys.data.images import ImageLimits
    from facekeys.data.photos import decode_photo

    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim in (2, 3):
        return value
    if isinstance(value, str):
        value = base64.b64decode(value)
    # Upright as viewers show it (EXIF orientation applied): the points are in those pixels.
    return decode_photo(bytes(value), ImageLimits()).pixels


class KeypointImageModel(PythonModel):
    """Keypoints for whole images, through facekeys.inference.predictor (the one prediction
    path)."""

    def load_context(self, context: Any) -> None:
        from facekeys.inference.predictor import KeypointPredictor

        self.predictor = KeypointPredictor.from_dir(context.artifacts["model"])

    # DataFrame is the one hint MLflow takes without inferring a schema from it (the signature
    # is logged) and without warning at every load; arrays still pass, called in Python.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        from facekeys.inference.predictor import prediction_columns

        if isinstance(model_input, pd.DataFrame):
            values = list(model_input["image"])
        elif isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8:
            values = [model_input] if model_input.ndim == 2 or (
                model_input.ndim == 3 and model_input.shape[-1] in (3, 4)
            ) else list(model_input)  # fmt: skip
        else:
            values = list(model_input)
        images = []
        for row, value in enumerate(values):
            try:
                images.append(_decode(value))
            except Exception as exc:  # one clear line naming the row, not a stack
                raise ValueError(f"image row {row}: {exc}") from None
        points = self.predictor.to_label_convention(self.predictor.predict(images))
        columns = prediction_columns(self.predictor.card["format"])
        rows = points.reshape(len(images), len(columns)).astype(np.float64)
        return pd.DataFrame(rows, columns=columns)


mlflow.models.set_model(KeypointImageModel())
