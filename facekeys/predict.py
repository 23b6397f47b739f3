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
import pickle
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

    def crop_matrix(self, image_shape: tuple[int, ...], box: Box | None) -> np.ndarray:
        """Original pixels -> model input, per the crop policy of the card."""
        policy = self.policy
        margin = float(policy.get("margin", 0.0))
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


# What the prediction path reads from a model card: dotted key -> (accepted types, required).
# Checked before any network is built, so a hand-edited card fails in one line naming the key.
_CARD_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "format": ((str,), True),
    "architecture": ((str,), True),
    "width": ((int,), True),
    "heatmap_stride": ((int,), False),
    "stem_block": ((bool,), False),
    "label_pixel_offset": ((int, float), False),
    "input": ((dict,), True),
    "input.channels": ((int,), True),
    "input.size": ((int,), True),
    "input.scale": ((int, float), True),
    "input.mean": ((int, float), True),
    "input.std": ((int, float), True),
    "input.color": ((str,), False),
    "crop_policy": ((dict,), True),
    "crop_policy.margin": ((int, float), False),
    "crop_policy.pad_value": ((int,), False),
    "crop_policy.detector": ((dict, type(None)), False),
    "keypoints": ((dict,), True),
    "keypoints.names": ((list,), True),
}


def check_card(card: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card ``card`` read from ``path``, checked for the keys and types the
    prediction path uses.

    Raises:
        FacekeysError: ``{path}: <key> must be <type>, not <value>`` (or a missing key).
    """
    from facekeys.errors import FacekeysError
    from facekeys.schemes import FORMATS

    if not isinstance(card, dict):
        raise FacekeysError(f"{path}: not a model card (a JSON object), but {type(card).__name__}")
    for key, (types, required) in _CARD_FIELDS.items():
        parent_key, _, name = key.rpartition(".")
        parent = card.get(parent_key) if parent_key else card
        if name not in parent:
            if required:
                raise FacekeysError(f"{path}: {key} is missing")
            continue
        value = parent[name]
        # bool is an int to Python, never a size or a width to a card.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            kinds = " or ".join(_TYPE_WORDS[t] for t in types)
            raise FacekeysError(f"{path}: {key} must be {kinds}, not {value!r:.40}")
    if card["format"] not in FORMATS:
        raise FacekeysError(f"{path}: format {card['format']!r:.40} is none of {list(FORMATS)}")
    if card["input"]["size"] <= 0 or card["input"]["channels"] not in (1, 3):
        raise FacekeysError(f"{path}: input.size must be positive and input.channels 1 or 3")
    return card


_TYPE_WORDS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


def _torch_load_reason(exc: BaseException) -> str:
    """Why torch refused a weights file, without torch's advice to load it unsafely."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        # torch names the Python object after "WeightsUnpickler error:"; everything else it says
        # is how to load the file anyway (weights_only=False), which would run code from it.
        detail = text.partition("WeightsUnpickler error:")[2].strip().splitlines()
        what = detail[0].split(" was not an allowed")[0].strip() if detail else ""
        if "Unsupported global" in what:  # a pickled Python object: code would run on load
            return f"not a plain weights file ({what}); refused for safety"
        return f"not a readable weights file ({what or 'corrupt'})"
    if isinstance(exc, EOFError):
        return "truncated weights file (it ends early)"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"not a readable weights file: {first.split('. ')[0]}"


def load_stage(folder: str | os.PathLike[str]) -> StageModel:
    """One network of a model folder: ``folder/model.json`` (checked) and ``folder/model.pt``.

    Raises:
        FacekeysError: One line naming the file that cannot be used and why.
    """
    from facekeys.errors import FacekeysError
    from facekeys.train import load_model

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
        raise FacekeysError(f"{weights}: {_torch_load_reason(exc)}") from None
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "state_dict" in first:  # the weights are of another network than the card describes
            raise FacekeysError(f"{weights}: does not fit {card_path}: {first}") from None
        raise FacekeysError(f"{weights}: {_torch_load_reason(exc)}") from None
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
        from facekeys.detect import DetectorFraming

        data = self.first.policy.get("detector")
        return DetectorFraming.from_dict(data) if data else None

    def require_detector(self) -> Any:
        """The ``DetectorFraming`` of the crop policy.

        Raises:
            FacekeysError: The model carries no detector calibration.
        """
        from facekeys.errors import FacekeysError

        framing = self.detector
        if framing is None:
            raise FacekeysError(
                "the model has no face detector calibration (crop_policy.detector in its "
                "model.json; rerun the augment and train stages); use --detect none"
            )
        return framing

    def predict_faces(self, image: np.ndarray) -> tuple[list[Box], np.ndarray]:
        """Finds faces with the model's calibrated detector and predicts each one.

        Returns:
            Detector boxes ``(x, y, w, h)`` (largest first) and keypoints ``(faces, P, 2)`` in
            original pixels.

        Raises:
            FacekeysError: The model carries no detector calibration.
        """
        from facekeys.detect import detect_faces
        from facekeys.images import to_model_color

        framing = self.require_detector()

        boxes = detect_faces(image, framing.settings)
        frames: list[Box | None] = [framing.frame_box(box) for box in boxes]
        if self.refine is None or self.refine.color == self.first.color:
            image = to_model_color(image, self.first.color)  # once per photo, not per face
        return boxes, self.predict([image] * len(boxes), frames)

    def predict(
        self, images: list[np.ndarray], boxes: list[Box | None] | None = None
    ) -> np.ndarray:
        """Keypoints ``(N, P, 2)`` in original pixels (centres on integers) of each image.

        Args:
            images: Decoded images, uint8 gray / BGR / BGRA (as OpenCV reads them).
            boxes: Face box ``(x, y, w, h)`` per image, or None for the whole image.
        """
        from facekeys.images import to_model_color

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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def prediction_columns(fmt_name: str) -> list[str]:
    """Coordinate columns of a prediction CSV, in the data set's own layout: ``x0, y0, ...``
    for the 68-point format, Kaggle's named columns (``left_eye_center_x``, ...) for 15 points."""
    from facekeys.schemes import FORMATS

    fmt = FORMATS[fmt_name]
    if fmt.has_image_column:
        return fmt.coordinate_columns()
    return [f"{axis}{i}" for i in range(fmt.num_points) for axis in ("x", "y")]


def list_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """``(folder, name)`` per image: a folder contributes its image files (sorted, not
    recursive; symlinks leaving it are refused later, by ``load_image``), a file itself."""
    from facekeys.errors import FacekeysError

    found: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            names = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            found += [(str(path), name) for name in names]
        elif path.exists() or path.is_symlink():
            found.append((str(path.parent), path.name))
        else:
            raise FacekeysError(f"{item}: no such file or folder")
    if not found:
        raise FacekeysError(f"no images in {', '.join(inputs)} (suffixes {IMAGE_SUFFIXES})")
    return found


FACE_COLUMNS = ["face", "face_x", "face_y", "face_w", "face_h"]


def errors_path_for(out_csv: str | os.PathLike[str]) -> Path:
    """The default errors file of a prediction CSV: ``<stem>.errors.csv`` beside it."""
    out = Path(out_csv)
    return out.with_name(f"{out.stem}.errors.csv")


def _same_file(a: Path, b: Path) -> bool:
    # samefile sees through links and hard links; realpath covers files not there yet.
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    out_csv: str | os.PathLike[str],
    errors_csv: str | os.PathLike[str],
    items: list[tuple[str, str]] | None = None,
) -> None:
    """Refuses outputs that would destroy something, before any image is predicted.

    Both must be ``.csv`` files, different from each other and from every input image (``items``
    as ``list_inputs`` returns them), in folders that can be written now.

    Raises:
        FacekeysError: One line naming the output and the problem.
    """
    from facekeys.atomic import check_writable
    from facekeys.errors import FacekeysError

    out, errors = Path(out_csv), Path(errors_csv)
    for path, option in ((out, "--out"), (errors, "--errors")):
        if path.suffix.lower() != ".csv":
            raise FacekeysError(f"{path}: {option} must name a .csv file")
    if _same_file(out, errors):
        raise FacekeysError(f"{out}: --out and --errors are the same file")
    for folder, name in items or []:
        image = Path(folder) / name
        for path, option in ((out, "--out"), (errors, "--errors")):
            if _same_file(path, image):
                raise FacekeysError(f"{path}: {option} is one of the input images")
    check_writable(out)
    check_writable(errors)


class _ProgressLines:
    """Progress for logs: where stderr is no terminal (tqdm's bar is off there), one line every
    ``every`` images or ``seconds``, whichever comes first, so a long batch shows it is alive."""

    def __init__(self, total: int, every: int = 100, seconds: float = 10.0) -> None:
        import sys
        import time

        self.total, self.every, self.seconds = total, every, seconds
        self.enabled = not sys.stderr.isatty()
        self.start = self.last_time = time.monotonic()
        self.done = self.last_done = 0

    def update(self, count: int) -> None:
        import sys
        import time

        self.done += count
        now = time.monotonic()
        crossed = self.done // self.every > self.last_done // self.every
        if not self.enabled or self.done >= self.total:
            return  # the command's summary line follows at the end
        if crossed or now - self.last_time >= self.seconds:
            rate = self.done / max(now - self.start, 1e-9)
            print(
                f"predict: {self.done} of {self.total} images ({100 * self.done / self.total:.0f} "
                f"%), {rate:.1f} images/s",
                file=sys.stderr,
                flush=True,
            )
            self.last_time, self.last_done = now, self.done


def predict_files(
    predictor: KeypointPredictor,
    inputs: list[str],
    out_csv: str | os.PathLike[str],
    errors_csv: str | os.PathLike[str],
    batch_size: int = 32,
    detect: str = "none",
    progress_every: int = 100,
) -> tuple[int, int, int]:
    """Predicts every image of ``inputs`` into ``out_csv``.

    ``detect="none"``: each whole image is the face (the data sets' images are face crops), one
    row per image. ``detect="haar"``: faces are found with the model's calibrated detector, one
    row per face with its index (largest first) and detector box (``FACE_COLUMNS``) after the
    keypoints; an image without a face is listed in ``errors_csv`` as ``no_face_found``.

    A bad image (unreadable, too large, unsafe path, ...) goes to ``errors_csv`` with its reason
    and the others are still predicted. ``errors_csv`` is always written, with its header only
    where no image failed, so that it never lists the failures of an earlier run. Both files are
    written together (``write_files_together``): either both are this run's or, where writing
    fails, both are as they were. Where stderr is not a terminal a progress line is printed
    every ``progress_every`` images (or 10 s).

    Returns:
        ``(images predicted, images failed, images without a face)``.

    Raises:
        FacekeysError: Unusable outputs (see ``check_outputs``), checked before any image is
            read; a write that fails at the end (full disk) in one line, nothing changed.
    """
    import csv
    import sys

    from tqdm import tqdm

    from facekeys.atomic import write_files_together
    from facekeys.errors import FacekeysError
    from facekeys.images import ImageLimits, ImageProblem, load_image

    if detect not in ("none", "haar"):
        raise FacekeysError(f"--detect must be none or haar, not {detect!r}")
    if detect == "haar":
        predictor.require_detector()  # before reading any image
    items = list_inputs(inputs)
    check_outputs(out_csv, errors_csv, items)
    columns = prediction_columns(predictor.card["format"])
    rows: list[list[str]] = []
    errors: list[list[str]] = []
    done, no_face = 0, 0
    bar = tqdm(total=len(items), desc="predict", unit="img", disable=None, file=sys.stderr)
    progress = _ProgressLines(len(items), progress_every)
    for start in range(0, len(items), batch_size):
        names, images = [], []
        for folder, name in items[start : start + batch_size]:
            shown = str(Path(folder) / name)
            try:
                images.append(load_image(folder, name, ImageLimits()))
                names.append(shown)
            except ImageProblem as problem:
                errors.append([shown, problem.code, problem.detail])
        if images and detect == "none":
            points = predictor.to_label_convention(predictor.predict(images))
            for name, pts in zip(names, points, strict=True):
                rows.append([name, *(f"{v:.3f}" for v in pts.reshape(-1))])
            done += len(images)
        for name, image in zip(names, images, strict=True) if detect == "haar" else ():
            boxes, points = predictor.predict_faces(image)
            if not boxes:
                errors.append([name, "no_face_found", "the face detector found no face"])
                no_face += 1
                continue
            points = predictor.to_label_convention(points)
            for face, (box, pts) in enumerate(zip(boxes, points, strict=True)):
                coords = (f"{v:.3f}" for v in pts.reshape(-1))
                rows.append([name, *coords, str(face), *(f"{v:.1f}" for v in box)])
            done += 1
        bar.update(len(items[start : start + batch_size]))
        progress.update(len(items[start : start + batch_size]))
    bar.close()

    def write_predictions(handle: Any) -> None:
        writer = csv.writer(handle)
        writer.writerow(["name", *columns, *(FACE_COLUMNS if detect == "haar" else [])])
        writer.writerows(rows)

    def write_errors(handle: Any) -> None:
        writer = csv.writer(handle)
        writer.writerow(["name", "reason", "detail"])
        writer.writerows(errors)

    write_files_together(
        [(out_csv, write_predictions), (errors_csv, write_errors)],
        "w",
        encoding="utf-8",
        newline="",
    )
    return done, len(errors) - no_face, no_face


def load_any_model(spec: str) -> KeypointPredictor:
    """A predictor from a trained model folder, an export folder, an exported ``.onnx`` file, or
    an MLflow model URI (``models:/NAME@ALIAS``, ``runs:/RUN/model``) in the tracking store of
    ``MLFLOW_TRACKING_URI`` (default: the project's ``mlflow.db``).

    Raises:
        FacekeysError: ``spec`` is none of those.
    """
    from facekeys.errors import FacekeysError

    if spec.startswith(("models:/", "runs:/")):
        return _load_registered(spec)
    path = Path(spec)
    if path.is_file() and path.suffix == ".onnx":
        from facekeys.exported_runtimes import load_exported

        runtime = "onnx_int8" if path.name.endswith(".int8.onnx") else "onnx"
        return load_exported(path.parent, runtime)
    if (path / "model.pt").is_file() and (path / "model.json").is_file():
        return KeypointPredictor.from_dir(path)
    if (path / "model.json").is_file() and any(path.glob("*.onnx")):
        from facekeys.exported_runtimes import load_exported

        return load_exported(path, "onnx")
    raise FacekeysError(
        f"{spec}: not a model (a folder with model.pt and model.json, an export folder, or "
        "an .onnx file)"
    )


def local_store_path(uri: str) -> Path | None:
    """The file or folder of a local MLflow store URI (``sqlite:///``, ``file:``, a plain path);
    None for a server or an in-memory database."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("sqlite:///"):
        return Path(unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (or a drive letter)
        return Path(uri)
    return None


def _load_registered(uri: str) -> KeypointPredictor:
    """The predictor inside a logged facekeys MLflow model (same networks, same path)."""
    from facekeys.errors import FacekeysError
    from facekeys.mlflow_stores import default_tracking_uri

    tracking = default_tracking_uri(".")
    registry = os.environ.get("MLFLOW_REGISTRY_URI", tracking)
    for store in dict.fromkeys((tracking, registry)):
        # MLflow creates a missing local store (an empty mlflow.db in the current folder) and
        # then reports the model as not found; say what is missing instead, creating nothing.
        local = local_store_path(store)
        if local is not None and not local.exists():
            raise FacekeysError(
                f"{uri}: no MLflow store at {local} (run in the project folder, or set "
                "MLFLOW_TRACKING_URI)"
            )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow
    from mlflow.exceptions import MlflowException

    from facekeys.mlflow_stores import mlflow_uris

    try:
        with mlflow_uris(tracking, registry):
            model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    except (MlflowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FacekeysError(f"{uri}: cannot load from {tracking}: {reason}") from None
    predictor = getattr(model, "predictor", None)
    if not isinstance(predictor, KeypointPredictor):
        raise FacekeysError(f"{uri}: not a facekeys keypoint model")
    return predictor
