"""Augmentation: flips relabel left/right, geometry is exact, splits respect identity, reruns are
byte-identical, masks survive, out-of-frame points follow the policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from facekeys.augment.dataset import augment_dataset
from facekeys.augment.identity_split import identity_of, identity_split
from facekeys.augment.settings import AugmentSettings
from facekeys.data.crop_geometry import apply_to_points, flip_points, jitter_matrix
from facekeys.data.keypoint_formats import IBUG68_FLIP, KAGGLE15_FLIP, KAGGLE_POINTS
from facekeys.data.labelled_splits import load_npz
from facekeys.errors import FacekeysError
from tests.conftest import HEADER68, KAGGLE_HEADER, face_points_68, kaggle_row, row68, write_csv

QUIET = AugmentSettings(
    image_size=64,
    copies=3,
    val_fraction=0.0,
    new_people_fraction=0.0,
    brightness_contrast=0.0,
    gamma_range=(1.0, 1.0),
    blur_p=0.0,
    noise_p=0.0,
    occlusion_p=0.0,
    workers=1,
    preview_samples=4,
)


def dot_image(points: np.ndarray, width: int = 100, height: int = 80) -> np.ndarray:
    """Black image with a white 3x3 dot on each of ``points``."""
    image = np.zeros((height, width), np.uint8)
    for x, y in np.round(points).astype(int):
        image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = 255
    return image


def youtube_dataset(tmp_path: Path, names: list[str], points: np.ndarray, image=None) -> dict:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for name in names:
        img = image if image is not None else dot_image(points)
        cv2.imwrite(str(folder / name), img)
    rows = [row68(n, points) for n in names]
    training = write_csv(tmp_path / "training.csv", HEADER68, rows)
    test = write_csv(tmp_path / "test.csv", HEADER68, rows[:1])
    return {"training": (training, str(folder)), "test": (test, str(folder))}


def test_flip_twice_is_identity():
    pts = np.random.default_rng(1).uniform(0, 63, (68, 2))
    twice = flip_points(flip_points(pts, 64, IBUG68_FLIP), 64, IBUG68_FLIP)
    assert np.allclose(twice, pts, rtol=0, atol=1e-12)
    image = np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)
    assert np.array_equal(cv2.flip(cv2.flip(image, 1), 1), image)
    m = jitter_matrix(64, 0, 1, 0, 0, flip=True)
    assert np.allclose(m @ m, np.eye(3))


def test_flip_keeps_subject_right_on_image_left(tmp_path):
    points = face_points_68()
    splits = youtube_dataset(tmp_path, [f"p{i}_01.png" for i in range(3)], points)
    settings = dataclasses.replace(QUIET, flip_p=1.0, rotate_deg=10)
    augment_dataset("youtube68", splits, tmp_path / "out", settings)
    train = load_npz(tmp_path / "out" / "train.npz")
    flipped = train["copy"] > 0
    assert flipped.sum() == 9
    assert (train["points"][flipped, 36, 0] < train["points"][flipped, 45, 0]).all()


def test_kaggle_pairs_swap():
    pts = np.array([[10.0 + k, 20.0 + k] for k in range(15)])
    flipped = flip_points(pts, 96, KAGGLE15_FLIP)
    le, re_ = KAGGLE_POINTS.index("left_eye_center"), KAGGLE_POINTS.index("right_eye_center")
    ml, mr = KAGGLE_POINTS.index("mouth_left_corner"), KAGGLE_POINTS.index("mouth_right_corner")
    nose = KAGGLE_POINTS.index("nose_tip")
    assert flipped[le, 0] == 95 - pts[re_, 0] and flipped[le, 1] == pts[re_, 1]
    assert flipped[ml, 0] == 95 - pts[mr, 0]
    assert flipped[nose, 0] == 95 - pts[nose, 0]


@pytest.mark.parametrize("angle", [-30.0, 7.5, 45.0])
def test_rotation_preserves_distances_up_to_scale(angle):
    pts = np.random.default_rng(3).uniform(0, 100, (20, 2))
    moved = apply_to_points(jitter_matrix(128, angle, 1.1, 0.05, -0.02, flip=False), pts)
    before = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    after = np.linalg.norm(moved[:, None] - moved[None], axis=-1)
    off_diagonal = ~np.eye(20, dtype=bool)
    assert np.allclose(after[off_diagonal] / before[off_diagonal], 1.1)


def test_pixels_and_points_move_together(tmp_path):
    points = np.array([[20.0, 20.0], [80.0, 25.0], [50.0, 60.0]])
    full = face_points_68()
    full[[36, 45, 30]] = points  # three dots we can find again in the augmented image
    image = dot_image(points)
    splits = youtube_dataset(tmp_path, ["a_01.png"], full, image=image)
    settings = dataclasses.replace(QUIET, copies=6, flip_p=0.5, out_of_frame="mask")
    augment_dataset("youtube68", splits, tmp_path / "out", settings)
    train = load_npz(tmp_path / "out" / "train.npz")
    for k in range(len(train["images"])):
        img = train["images"][k].astype(float)
        for j in (36, 45, 30):
            if not train["mask"][k, j]:
                continue
            x, y = train["points"][k, j]
            xi, yi = round(x), round(y)
            assert img[yi, xi] > 60, f"sample {k} point {j}: no dot under ({x:.1f}, {y:.1f})"


def test_identity_of_and_split():
    assert identity_of("Luis_Fonsi_21.jpg") == "Luis_Fonsi"
    assert identity_of("sub/Zoë-Ñ 003.png") == "Zoë-Ñ"
    assert identity_of("42.png") == "42"
    names = [f"person{p}_{f:02d}.jpg" for p in range(30) for f in range(p % 4 + 1)]
    ids = [identity_of(n) for n in names]
    parts = identity_split(ids, {"new_people": 0.2, "val": 0.2}, seed=7)
    people = {part: {ids[i] for i in rows} for part, rows in parts.items()}
    assert people["train"].isdisjoint(people["val"] | people["new_people"])
    assert people["val"].isdisjoint(people["new_people"])
    assert sorted(np.concatenate(list(parts.values()))) == list(range(len(names)))
    for part in ("val", "new_people"):
        assert 0.15 <= len(parts[part]) / len(names) <= 0.35
    # The reported new people stay the same whatever share goes to selection.
    wider = identity_split(ids, {"new_people": 0.2, "val": 0.4}, seed=7)
    assert np.array_equal(wider["new_people"], parts["new_people"])
    assert len(wider["val"]) > len(parts["val"])


def test_split_by_identity_in_outputs(tmp_path):
    names = [f"person{p}_{f:02d}.png" for p in range(10) for f in range(3)]
    splits = youtube_dataset(tmp_path, names, face_points_68())
    settings = dataclasses.replace(QUIET, val_fraction=0.3, new_people_fraction=0.2)
    augment_dataset("youtube68", splits, tmp_path / "out", settings)
    people = {
        part: {identity_of(n) for n in load_npz(tmp_path / "out" / f"{part}.npz")["names"]}
        for part in ("train", "val", "new_people")
    }
    assert len(people["val"]) >= 3 and len(people["new_people"]) >= 2
    assert people["train"].isdisjoint(people["val"] | people["new_people"])
    assert people["val"].isdisjoint(people["new_people"])
    for part in ("val", "new_people"):
        assert (load_npz(tmp_path / "out" / f"{part}.npz")["copy"] == 0).all()  # never augmented


def test_both_networks_hold_out_the_same_people(tmp_path):
    """The refinement data is split like the first network's: neither network trains on a
    person of the selection or new-people rows."""
    names = [f"person{p}_{f:02d}.png" for p in range(10) for f in range(2)]
    splits = youtube_dataset(tmp_path, names, face_points_68())
    first = dataclasses.replace(QUIET, val_fraction=0.2, new_people_fraction=0.2, copies=1)
    refine = dataclasses.replace(first, face_box="keypoints", margin=0.15, image_size=48)
    augment_dataset("youtube68", splits, tmp_path / "first", first)
    augment_dataset("youtube68", splits, tmp_path / "refine", refine)

    def people(folder: str, part: str) -> set[str]:
        return {identity_of(n) for n in load_npz(tmp_path / folder / f"{part}.npz")["names"]}

    held_out = people("first", "val") | people("first", "new_people")
    assert held_out and held_out == people("refine", "val") | people("refine", "new_people")
    for folder in ("first", "refine"):
        assert people(folder, "train").isdisjoint(held_out)


@pytest.mark.parametrize("key", ["seed", "val_fraction", "new_people_fraction"])
def test_refinement_data_cannot_split_otherwise(key):
    params = {"image_size": 64, "refine": {"youtube-faces-68": {"image_size": 96, key: 0.3}}}
    with pytest.raises(FacekeysError, match=rf"augment\.refine\.youtube-faces-68: {key} cannot"):
        AugmentSettings.refine_from_params(params, "youtube-faces-68")


def test_rows_without_names_get_no_new_people_split(tmp_path):
    rows = [[kaggle_row()[c] for c in KAGGLE_HEADER] for _ in range(20)]
    training = write_csv(tmp_path / "training.csv", KAGGLE_HEADER, rows)
    test = write_csv(tmp_path / "test.csv", KAGGLE_HEADER, rows[:2])
    settings = dataclasses.replace(QUIET, image_size=96, val_fraction=0.2, new_people_fraction=0.2)
    meta = augment_dataset(
        "kaggle15", {"training": (training, None), "test": (test, None)}, tmp_path / "o", settings
    )
    assert meta["split"]["kind"].startswith("random rows")
    assert meta["counts"]["source_rows"]["new_people"] == 0
    assert len(load_npz(tmp_path / "o" / "new_people.npz")["images"]) == 0
    assert meta["counts"]["source_rows"]["val"] == 4


def test_byte_identical_reruns_whatever_the_worker_count(tmp_path):
    names = [f"person{p}_{f:02d}.png" for p in range(6) for f in range(12)]
    splits = youtube_dataset(tmp_path, names, face_points_68())
    full = dataclasses.replace(AugmentSettings(), image_size=48, copies=2, val_fraction=0.2)
    augment_dataset("youtube68", splits, tmp_path / "a", dataclasses.replace(full, workers=1))
    augment_dataset("youtube68", splits, tmp_path / "b", dataclasses.replace(full, workers=2))
    for name in ("train.npz", "val.npz", "test.npz", "meta.json", "preview.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = dataclasses.replace(full, seed=full.seed + 1, workers=1)
    augment_dataset("youtube68", splits, tmp_path / "c", other)
    assert (tmp_path / "a" / "train.npz").read_bytes() != (
        tmp_path / "c" / "train.npz"
    ).read_bytes()


def test_kaggle_masks_survive_every_transform(tmp_path):
    rows = [kaggle_row(missing_optional=k % 2 == 0) for k in range(6)]
    for k, row in enumerate(rows):
        row["Image"] = " ".join(str((i * (k + 3)) % 256) for i in range(9216))
    path = write_csv(
        tmp_path / "t.csv", KAGGLE_HEADER, [[r[c] for c in KAGGLE_HEADER] for r in rows]
    )
    settings = dataclasses.replace(AugmentSettings(), image_size=96, copies=5, val_fraction=0.0,
                                   workers=1, out_of_frame="resample")  # fmt: skip
    meta = augment_dataset("kaggle15", {"training": (path, None), "test": (path, None)},
                           tmp_path / "out", settings)  # fmt: skip
    train = load_npz(tmp_path / "out" / "train.npz")
    assert len(train["images"]) == 6 * 6
    perm = list(KAGGLE15_FLIP)
    for k in range(len(train["images"])):
        src = train["source_index"][k]
        present = np.ones(15, bool) if src % 2 else np.isin(np.arange(15), [0, 1, 10, 14])
        expected = present[perm] if train["flipped"][k] else present
        assert np.array_equal(train["mask"][k], expected), k
    assert meta["counts"]["flipped"] > 0


def test_out_of_frame_policies(tmp_path):
    points = face_points_68()
    points[0] = (0.5, 40.0)  # on the left edge: most jitters push it out of the crop
    splits = youtube_dataset(tmp_path, [f"p{i}_01.png" for i in range(4)], points)
    strong = dataclasses.replace(QUIET, copies=8, shift_fraction=0.3, rotate_deg=30, flip_p=0.0)

    meta = augment_dataset("youtube68", splits, tmp_path / "r", strong)
    train = load_npz(tmp_path / "r" / "train.npz")
    assert train["mask"].all(), "resample never drops a label"
    inside = (train["points"] >= -0.5) & (train["points"] <= strong.image_size - 0.5)
    assert inside.all(), "resample keeps every point inside the crop"
    assert meta["counts"]["resampled_for_out_of_frame"] > 0

    meta = augment_dataset(
        "youtube68", splits, tmp_path / "m", dataclasses.replace(strong, out_of_frame="mask")
    )
    train = load_npz(tmp_path / "m" / "train.npz")
    out = ~((train["points"] >= -0.5) & (train["points"] <= strong.image_size - 0.5)).all(-1)
    assert out.any() and meta["counts"]["points_masked_out"] == int(out.sum())
    assert not train["mask"][out].any(), "pushed-out points are masked"


def test_meta_and_preview(tmp_path):
    splits = youtube_dataset(tmp_path, [f"p{i}_01.png" for i in range(4)], face_points_68())
    meta = augment_dataset("youtube68", splits, tmp_path / "out", QUIET)
    assert meta["crop_policy"] == {
        "size": 64,
        "face_box": "whole_image",
        "margin": 0.0,
        "pad_value": 0,
    }
    assert meta["keypoints"]["flip_permutation"][36] == 45
    assert meta["keypoints"]["sides"][36] == "right" and meta["keypoints"]["sides"][45] == "left"
    preview = cv2.imread(str(tmp_path / "out" / "preview.png"))
    assert preview is not None and preview.shape[0] > 200


def test_padding_not_stretching(tmp_path):
    # A 100x80 image becomes a 64x64 square with padding at top and bottom, aspect kept.
    splits = youtube_dataset(
        tmp_path, ["a_01.png"], face_points_68(), image=np.full((80, 100), 200, np.uint8)
    )
    augment_dataset("youtube68", splits, tmp_path / "out", dataclasses.replace(QUIET, copies=0))
    test = load_npz(tmp_path / "out" / "test.npz")
    image = test["images"][0]
    rows_with_content = np.flatnonzero(image.max(axis=1) > 100)
    assert 49 <= len(rows_with_content) <= 53  # 80/100 of 64 = 51.2 rows
    assert image[:, 32].min() == 0 and image[32, :].min() == 200


def test_one_based_labels_land_on_their_pixel(tmp_path):
    """A dot drawn at pixel (40, 30) and labelled (41, 31), as the 1-based data sets label it:
    read with label_pixel_offset 1.0, the crop's point lies on the dot and evaluation reads the
    label at the dot's pixel (a wrong sign would put both 2 px away)."""
    from facekeys.data.labelled_images import labelled_sha256, load_labelled

    points = face_points_68()
    points[30] = (41.0, 31.0)
    image = np.zeros((80, 100), np.uint8)
    image[30, 40] = 255
    splits = youtube_dataset(tmp_path, ["a_01.png"], points, image=image)
    settings = dataclasses.replace(QUIET, copies=0, image_size=100, label_pixel_offset=1.0)
    augment_dataset("youtube68", splits, tmp_path / "out", settings)
    crop = load_npz(tmp_path / "out" / "train.npz")
    dot_y, dot_x = np.unravel_index(np.argmax(crop["images"][0]), crop["images"][0].shape)
    assert np.allclose(crop["points"][0, 30], (dot_x, dot_y), atol=0.01)

    labelled = load_labelled("youtube68", splits["training"][0], splits["training"][1], 1.0)
    x, y = labelled.points[0, 30]
    assert (x, y) == (40.0, 30.0) and labelled.images[0][round(y), round(x)] == 255
    # The data's hash is the source's labels: models with other conventions score the same data.
    half = load_labelled("youtube68", splits["training"][0], splits["training"][1], 0.5)
    assert labelled_sha256(half) == labelled_sha256(labelled)
    assert not np.allclose(half.points, labelled.points)
