"""Shared fixtures: tiny generated data sets, and the real data where the machine has it."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.data.keypoint_formats import KAGGLE15

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FACEKEYS_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


_MLFLOW_VARIABLES = {
    name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
}


@pytest.fixture(autouse=True)
def _isolated_mlflow_uris():
    """Tests run several to a process: a store's URI that one test sets (MLflow keeps it
    process-wide and exports it) must not reach the next test or the DVC children it starts."""
    yield
    if "mlflow" in sys.modules:
        from facekeys.tracking.stores import restore_mlflow_uris

        restore_mlflow_uris(None, None, _MLFLOW_VARIABLES)


def face_points_68(width: int = 100, height: int = 100) -> np.ndarray:
    """A plausible 68-point layout in a width x height image (subject's right eye on the left)."""
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(0.2, 0.8, 68) * width, rng.uniform(0.2, 0.8, 68) * height])
    # Eyes on their sides (subject's right on the image's left), so that eye centres taken as
    # means of the six eye points (the Kaggle layout derived from this) are not mirrored.
    pts[36:42, 0] = rng.uniform(0.25, 0.4, 6) * width
    pts[42:48, 0] = rng.uniform(0.6, 0.75, 6) * width
    pts[36] = (0.3 * width, 0.4 * height)
    pts[45] = (0.7 * width, 0.4 * height)
    return pts.round(2)


def png_bytes(width: int = 100, height: int = 100, channels: int = 4, depth: int = 8) -> bytes:
    dtype = np.uint16 if depth == 16 else np.uint8
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = (np.arange(np.prod(shape)) % 250).astype(dtype).reshape(shape)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def jpeg_bytes(width: int = 100, height: int = 100) -> bytes:
    image = np.full((height, width, 3), 128, np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def row68(name: str, pts: np.ndarray) -> list[str]:
    return [name, *(f"{v:g}" for v in pts.reshape(-1))]


HEADER68 = ["", *(str(i) for i in range(136))]


def write_csv(path: Path, header: list[str], rows: list[list[str]], **kwargs) -> Path:
    with open(path, "w", newline="", encoding=kwargs.pop("encoding", "utf-8")) as handle:
        csv.writer(handle, lineterminator=kwargs.pop("lineterminator", "\n")).writerows(
            [header, *rows]
        )
    return path


@pytest.fixture
def tiny68(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Factory: writes images and a 68-pt CSV; returns (csv, image folder).

    ``rows`` are lists of fields; by default three good rows a.png, b.png, c.png.
    ``images`` maps names to bytes (default: a 100x100 RGBA PNG for every good row).
    """

    def make(rows: list[list[str]] | None = None, images: dict[str, bytes] | None = None):
        folder = tmp_path / "images"
        folder.mkdir(exist_ok=True)
        if rows is None:
            rows = [row68(n, face_points_68()) for n in ("a.png", "b.png", "c.png")]
        if images is None:
            images = {r[0]: png_bytes() for r in rows if r and r[0]}
        for name, data in images.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        return write_csv(tmp_path / "keypoints.csv", HEADER68, rows), folder

    return make


def kaggle_row(missing_optional: bool = False, pixels: str | None = None, **points) -> dict:
    """A Kaggle row as a dict: eyes at x 30 (subject's right) and 66 (subject's left)."""
    row = {}
    for k, name in enumerate(KAGGLE15.point_names):
        row[f"{name}_x"], row[f"{name}_y"] = f"{20 + 4 * k}", f"{30 + 3 * k}"
    row["right_eye_center_x"], row["left_eye_center_x"] = "30", "66"
    if missing_optional:
        for k in range(len(KAGGLE15.point_names)):
            if k not in KAGGLE15.required:
                row[f"{KAGGLE15.point_names[k]}_x"] = row[f"{KAGGLE15.point_names[k]}_y"] = ""
    for key, value in points.items():
        row[key] = value
    row["Image"] = (
        pixels
        if pixels is not None
        else " ".join(str((i * 7 + len(points)) % 256) for i in range(9216))
    )
    return row


KAGGLE_HEADER = [*KAGGLE15.coordinate_columns(), "Image"]


@pytest.fixture
def tiny_kaggle(tmp_path: Path) -> Callable[[list[dict]], Path]:
    """Factory: writes a Kaggle-format CSV from row dicts (see ``kaggle_row``)."""

    def make(rows: list[dict], name: str = "training.csv", unique_images: bool = True) -> Path:
        distinct = []
        for k, row in enumerate(rows):
            row = dict(row)
            if unique_images and row["Image"].count(" ") == 9215 and row["Image"][0].isdigit():
                values = row["Image"].split()
                values[0] = str(k % 256)
                values[1] = str(k // 256)
                row["Image"] = " ".join(values)
            distinct.append([row.get(c, "") for c in KAGGLE_HEADER])
        return write_csv(tmp_path / name, KAGGLE_HEADER, distinct)

    return make


@pytest.fixture
def shared_data() -> Path:
    """The real data sets; skips with a reason where this machine does not have them."""
    if not (SHARED_DATA / "youtube-faces-68" / "training_frames_keypoints.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set FACEKEYS_SHARED_DATA)")
    return SHARED_DATA


def synthetic_face_images(count: int, size: int = 48, seed: int = 0):
    """Images with a bright dot on each of 68 points that move from image to image: a task a
    small model can learn in seconds."""
    rng = np.random.default_rng(seed)
    base = face_points_68(size, size)
    images, points = [], []
    for _ in range(count):
        pts = np.clip(base + rng.normal(0, size * 0.03, base.shape), 2, size - 3)
        pts[36, 0], pts[45, 0] = min(pts[36, 0], pts[45, 0] - 4), max(pts[45, 0], pts[36, 0] + 4)
        image = np.full((size, size), 40, np.uint8)
        for x, y in np.round(pts).astype(int):
            image[y - 1 : y + 2, x - 1 : x + 2] = 230
        images.append(image)
        points.append(pts.round(2))
    return images, points


@pytest.fixture
def tiny_augmented(tmp_path: Path) -> Path:
    """A small augmented youtube68-format data set (train/val/test npz + meta.json)."""
    from facekeys.augment.dataset import augment_dataset
    from facekeys.augment.settings import AugmentSettings

    folder = tmp_path / "tiny_images"
    folder.mkdir()
    images, points = synthetic_face_images(40)
    rows = []
    for k, (image, pts) in enumerate(zip(images, points, strict=True)):
        name = f"person{k % 10}_{k:02d}.png"
        cv2.imwrite(str(folder / name), image)
        rows.append(row68(name, pts))
    training = write_csv(tmp_path / "tiny_training.csv", HEADER68, rows[:32])
    test = write_csv(tmp_path / "tiny_test.csv", HEADER68, rows[32:])
    settings = AugmentSettings(
        image_size=32, copies=1, val_fraction=0.2, rotate_deg=5, workers=1, preview_samples=2
    )
    out = tmp_path / "augmented"
    augment_dataset(
        "youtube68",
        {"training": (training, str(folder)), "test": (test, str(folder))},
        out,
        settings,
    )
    return out
