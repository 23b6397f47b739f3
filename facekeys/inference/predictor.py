"""The one prediction path: decoded image (+ optional face box) -> keypoints in image pixels.

Used by the benchmark, the evaluate stage, ``facekeys predict`` and the MLflow model, so every
consumer crops exactly as the model was trained. A model folder holds a first-stage model
(``model.pt`` + ``model.json``, crop around the face box or the whole image) and, optionally, a
refinement model in ``refine/`` that re-crops around the first stage's keypoints at a higher face
resolution and predicts again. Crop policies come from the model cards, never from the caller.

Coordinates: pixel centres on integers inside this module; ``to_label_convention`` shifts them by
the data set's ``label_pixel_offset`` to compare with (or write as) the source CSVs.

Loading a model from a spec (folder, export, ``.onnx``, MLflow URI) is
``facekeys.tracking.model_specs``; predicting folders of image files into CSVs is
``facekeys.inference.predict_files``.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekeys.data.crop_geometry import (
    CropPolicy,
    FaceSquare,
    apply_to_points,
    face_square_matrix,
    keypoint_box,
    square_crop_matrix,
    upright_keypoint_square,
    warp,
    whole_image_matrix,
)
from facekeys.inference.model_file_checks import check_card, torch_load_reason

Box = tuple[float, float, float, float]


@dataclass
class StageModel:
    """One network and the card that says how to feed it."""

    model: Any  # torch module, TorchScript module or onnxruntime session (see run_network)
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

    def crop_matrix(self, image_shape: tuple[int, ...], box: Box | FaceSquare | None) -> np.ndarray:
        """Original pixels -> model input, per the crop policy of the card."""
        policy = self.policy
        margin = float(policy.get("margin", 0.0))
        if isinstance(box, FaceSquare):
            return face_square_matrix(box, self.size, margin)
        if box is None:
            height, width = image_shape[:2]
            return whole_image_matrix(width, height, CropPolicy(size=self.size, margin=margin))
        return square_crop_matrix(box, self.size, margin)

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """uint8 ``(N, S, S)`` / ``(N, S, S, 3)`` crops -> float32 NCHW network input."""
        scale, mean, std = (float(self.card["input"][k]) for k in ("scale", "mean", "std"))
        x = crops[:, None] if crops.ndim == 3 else crops.transpose(0, 3, 1, 2)
        # Same operations, in the same order and precision, as training's prepare_batch.
        x = x.astype(np.float32) / np.float32(round(1 / scale))
        return np.ascontiguousarray((x - np.float32(mean)) / np.float32(std))

    def predict_crops(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 crops -> ``(N, P, 2)`` keypoints in input pixels."""
        out = []
        for start in range(0, len(crops), batch_size):
            x = self.normalise(crops[start : start + batch_size])
            out.append(run_network(self.model, x) * self.size)
        if not out:
            return np.zeros((0, len(self.card["keypoints"]["names"]), 2), np.float32)
        return np.concatenate(out)


def check_partner(model_dir: Path, card: dict[str, Any]) -> None:
    """Refuses a refinement network other than the one the first network's card names (a
    folder assembled by hand from two trainings); cards from before ``refine_sha256`` pass.

    Raises:
        FacekeysError: One line naming ``refine/model.pt``: missing, or another network.
    """
    from facekeys.data.atomic_files import sha256_file
    from facekeys.errors import FacekeysError

    expected = card.get("refine_sha256")
    partner = model_dir / "refine" / "model.pt"
    if expected is None:
        return
    if not partner.is_file():
        raise FacekeysError(
            f"{partner}: missing, though {model_dir / 'model.json'} names it; copy or train the "
            "whole model folder again"
        )
    if sha256_file(partner) != expected:
        raise FacekeysError(
            f"{partner}: not the refinement network {model_dir / 'model.json'} was trained with "
            "(another sha256); copy or train the whole model folder again"
        )


def load_stage(folder: str | os.PathLike[str]) -> StageModel:
    """One network of a model folder: ``folder/model.json`` (checked) and ``folder/model.pt``.

    Raises:
        FacekeysError: One line naming the file that cannot be used and why.
    """
    from facekeys.errors import FacekeysError
    from facekeys.model.checkpoints import load_model

    folder = Path(folder)
    card_path, weights = folder / "model.json", folder / "model.pt"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise FacekeysError(f"{card_path}: cannot read the model card: {reason}") from None
    except json.JSONDecodeError as exc:
        raise FacekeysError(f"{card_path}: not valid JSON: {exc}") from None
    check_card(card, card_path)
    try:
        size = weights.stat().st_size
    except OSError as exc:
        raise FacekeysError(f"{weights}: cannot read: {exc.strerror}") from None
    if size == 0:
        raise FacekeysError(f"{weights}: empty file (0 bytes); train or copy the model again")
    try:
        model, card = load_model(folder)
    except OSError as exc:
        raise FacekeysError(f"{exc.filename or weights}: cannot read: {exc.strerror}") from None
    except (pickle.UnpicklingError, EOFError) as exc:
        raise FacekeysError(f"{weights}: {torch_load_reason(exc)}") from None
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "state_dict" in first:  # the weights are of another network than the card describes
            raise FacekeysError(f"{weights}: does not fit {card_path}: {first}") from None
        raise FacekeysError(f"{weights}: {torch_load_reason(exc)}") from None
    except (ValueError, KeyError, TypeError) as exc:  # the card names no buildable network
        raise FacekeysError(f"{card_path}: cannot build the network: {exc}") from None
    return StageModel(model, card)


def run_network(network: Any, x: np.ndarray) -> np.ndarray:
    """Runs a torch module, a TorchScript module or an ONNX Runtime session on float32 NCHW."""
    if hasattr(network, "get_inputs"):  # onnxruntime.InferenceSession
        return network.run(None, {network.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        return network(torch.from_numpy(x)).float().numpy()


def onnx_session(path: str | os.PathLike[str], threads: int = 0) -> Any:
    """An ONNX Runtime CPU session that does not spin (torch may share the cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


class KeypointPredictor:
    """First stage and optional refinement stage of a trained model folder."""

    def __init__(self, first: StageModel, refine: StageModel | None = None) -> None:
        self.first = first
        self.refine = refine

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str]) -> KeypointPredictor:
        """Loads ``model_dir/model.pt`` and, where present, ``model_dir/refine/model.pt``.

        Raises:
            FacekeysError: One line naming the file that cannot be used (an empty or corrupt
                ``model.pt``, one that needs Python objects to load, a ``model.json`` that is
                not JSON or has wrong types).
        """
        model_dir = Path(model_dir)
        first = load_stage(model_dir)
        check_partner(model_dir, first.card)
        refine = None
        if (model_dir / "refine" / "model.pt").is_file():
            refine = load_stage(model_dir / "refine")
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

    @property
    def detector(self) -> Any:
        """The ``DetectorFraming`` of the first network's crop policy, or None (not calibrated)."""
        from facekeys.inference.detectors import DetectorFraming

        data = self.first.policy.get("detector")
        return DetectorFraming.from_dict(data) if data else None

    def require_detector(self, detector: str = "auto") -> str:
        """The detector ``detector`` stands for with this model (``auto``: the best calibrated).

        Raises:
            FacekeysError: The model carries no calibration for it.
        """
        from facekeys.inference.face_finder import choose_detector

        return choose_detector(self.first.policy, detector)

    def find_faces(self, image: np.ndarray, detector: str = "auto") -> list[Any]:
        """Faces in ``image`` (``FoundFace``: box, score, square), largest first."""
        from facekeys.inference.face_finder import find_faces

        return find_faces(image, self.first.policy, self.require_detector(detector))

    def predict_faces(
        self, image: np.ndarray, detector: str = "auto"
    ) -> tuple[list[Box], np.ndarray]:
        """Finds faces with a detector the model is calibrated for and predicts each one, every
        crop turned so the face stands upright (by the detector's eyes where it gives them; the
        refinement crop by the first pass's eyes).

        Returns:
            Detector boxes ``(x, y, w, h)`` (largest first) and keypoints ``(faces, P, 2)`` in
            original pixels.

        Raises:
            FacekeysError: The model carries no calibration for that detector.
        """
        faces = self.find_faces(image, detector)
        return [f.box for f in faces], self.predict_squares(image, [f.square for f in faces])

    def predict_squares(self, image: np.ndarray, squares: list[FaceSquare]) -> np.ndarray:
        """Keypoints ``(faces, P, 2)`` of the faces in ``squares`` (the first network's view of
        each, e.g. from a detector or from the previous video frame) of one image."""
        from facekeys.data.images import to_model_color

        if self.refine is None or self.refine.color == self.first.color:
            image = to_model_color(image, self.first.color)  # once per photo, not per face
        return self.predict([image] * len(squares), list(squares))

    def predict(
        self, images: list[np.ndarray], boxes: list[Box | FaceSquare | None] | None = None
    ) -> np.ndarray:
        """Keypoints ``(N, P, 2)`` in original pixels (centres on integers) of each image.

        Args:
            images: Decoded images, uint8 gray / BGR / BGRA (as OpenCV reads them).
            boxes: Per image: a face box ``(x, y, w, h)``, a ``FaceSquare`` (the first
                network's square, possibly turned: the refinement crop is then turned upright
                by the first pass's eyes), or None for the whole image.
        """
        from facekeys.data.images import to_model_color

        boxes = boxes if boxes is not None else [None] * len(images)
        points = self._run(self.first, images, boxes, to_model_color)
        if self.refine is not None:
            refine_boxes = [self._refine_box(p, b) for p, b in zip(points, boxes, strict=True)]
            points = self._run(self.refine, images, refine_boxes, to_model_color)
        return points

    def _refine_box(self, points: np.ndarray, first: Box | FaceSquare | None) -> Any:
        """The refinement crop around first-pass ``points``: level as in training for face
        crops and boxes; for photo squares, turned so the first pass's eyes lie level."""
        from facekeys.data.keypoint_formats import upright_angle

        if not isinstance(first, FaceSquare):
            return keypoint_box(points)
        angle = upright_angle(points, self.keypoint_names)
        return upright_keypoint_square(points, first.angle if angle is None else angle)

    def _run(self, stage: StageModel, images, boxes, to_color) -> np.ndarray:
        pad = int(stage.policy.get("pad_value", 0))
        matrices, crops = [], []
        for image, box in zip(images, boxes, strict=True):
            matrix = stage.crop_matrix(image.shape, box)
            matrices.append(matrix)
            crops.append(warp(to_color(image, stage.color), matrix, stage.size, pad))
        if not crops:
            return np.zeros((0, len(stage.card["keypoints"]["names"]), 2), np.float32)
        predicted = stage.predict_crops(np.stack(crops))
        return np.stack(
            [apply_to_points(np.linalg.inv(m), p) for m, p in zip(matrices, predicted, strict=True)]
        ) if crops else predicted.astype(np.float32)  # fmt: skip

    def to_label_convention(self, points: np.ndarray) -> np.ndarray:
        """Pixel-centre coordinates -> the data set's label convention (adds the offset)."""
        return points + self.label_pixel_offset


def read_card(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The first-stage model card of a model folder."""
    return json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))


def prediction_columns(fmt_name: str) -> list[str]:
    """Coordinate columns of a prediction CSV, in the data set's own layout: ``x0, y0, ...``
    for the 68-point format, Kaggle's named columns (``left_eye_center_x``, ...) for 15 points."""
    from facekeys.data.keypoint_formats import FORMATS

    fmt = FORMATS[fmt_name]
    if fmt.has_image_column:
        return fmt.coordinate_columns()
    return [f"{axis}{i}" for i in range(fmt.num_points) for axis in ("x", "y")]
