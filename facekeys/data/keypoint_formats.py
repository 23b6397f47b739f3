"""Keypoint schemes and the CSV formats that carry them.

Two formats are supported:

* ``youtube68``: ``name, x0, y0, ..., x67, y67`` (iBUG 68-point order), images in a folder.
* ``kaggle15``: Kaggle "Facial Keypoints Detection": 30 named coordinate columns and an ``Image``
  column of 96x96 gray values. Kaggle's "left"/"right" are the subject's, so the subject's left eye
  lies on the image's right side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KAGGLE_POINTS: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
# Points present in every Kaggle row; the other 11 may be blank.
KAGGLE_REQUIRED: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "nose_tip",
    "mouth_center_bottom_lip",
)
KAGGLE_IMAGE_SIDE = 96
KAGGLE_IMAGE_VALUES = KAGGLE_IMAGE_SIDE * KAGGLE_IMAGE_SIDE


@dataclass(frozen=True)
class CsvFormat:
    """What a keypoint CSV of one format looks like.

    Attributes:
        name: Format id used on the command line.
        num_points: Keypoints per row.
        point_names: One name per keypoint, in column order of the coordinates.
        required: Indices of points that must be present in every row.
        eye_pair: Indices (image-left, image-right) of the points whose order and distance are
            checked: the subject's right and left outer eye corners for 68-pt, eye centres for 15.
        has_image_column: Whether pixels travel inside the CSV (``Image``) instead of a file.
    """

    name: str
    num_points: int
    point_names: tuple[str, ...]
    required: tuple[int, ...]
    eye_pair: tuple[int, int]
    has_image_column: bool

    def coordinate_columns(self) -> list[str]:
        """Canonical coordinate column names, x then y per point."""
        cols: list[str] = []
        for point in self.point_names:
            cols += [f"{point}_x", f"{point}_y"]
        return cols


YOUTUBE68 = CsvFormat(
    name="youtube68",
    num_points=68,
    point_names=tuple(f"p{i}" for i in range(68)),
    required=tuple(range(68)),
    eye_pair=(36, 45),
    has_image_column=False,
)

KAGGLE15 = CsvFormat(
    name="kaggle15",
    num_points=15,
    point_names=KAGGLE_POINTS,
    required=tuple(KAGGLE_POINTS.index(p) for p in KAGGLE_REQUIRED),
    # right_eye_center is the subject's right eye: on the image's left.
    eye_pair=(KAGGLE_POINTS.index("right_eye_center"), KAGGLE_POINTS.index("left_eye_center")),
    has_image_column=True,
)

FORMATS: dict[str, CsvFormat] = {f.name: f for f in (YOUTUBE68, KAGGLE15)}


def youtube68_header_variants() -> list[list[str]]:
    """Accepted headers for the 136 coordinate columns of the 68-point CSV.

    The CVND files number them ``0..135``; ``x0, y0, ..., x67, y67`` is accepted too.
    """
    numbered = [str(i) for i in range(136)]
    named = [f"{axis}{i}" for i in range(68) for axis in ("x", "y")]
    return [numbered, named]


def _permutation(pairs: list[tuple[int, int]], size: int) -> tuple[int, ...]:
    perm = list(range(size))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


# iBUG 68: after a horizontal flip, point i of the mirrored face is point FLIP[i] of the original.
_IBUG_PAIRS = [
    *((i, 16 - i) for i in range(8)),  # jaw
    *((17 + i, 26 - i) for i in range(5)),  # brows
    (31, 35),
    (32, 34),  # nostrils
    (36, 45),
    (37, 44),
    (38, 43),
    (39, 42),
    (40, 47),
    (41, 46),  # eyes
    (48, 54),
    (49, 53),
    (50, 52),
    (55, 59),
    (56, 58),  # outer lip
    (60, 64),
    (61, 63),
    (65, 67),  # inner lip
]
IBUG68_FLIP = _permutation(_IBUG_PAIRS, 68)
# The subject's right side (the image's left on a frontal face), for drawing left and right apart.
IBUG68_SUBJECT_RIGHT = frozenset(
    [*range(8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67]
)

KAGGLE15_FLIP = _permutation(
    [
        (KAGGLE_POINTS.index(f"left_{part}"), KAGGLE_POINTS.index(f"right_{part}"))
        for part in (
            "eye_center",
            "eye_inner_corner",
            "eye_outer_corner",
            "eyebrow_inner_end",
            "eyebrow_outer_end",
        )
    ]
    + [(KAGGLE_POINTS.index("mouth_left_corner"), KAGGLE_POINTS.index("mouth_right_corner"))],
    15,
)
KAGGLE15_SUBJECT_RIGHT = frozenset(i for i, n in enumerate(KAGGLE_POINTS) if "right" in n)

FLIP_PERMUTATION: dict[str, tuple[int, ...]] = {"youtube68": IBUG68_FLIP, "kaggle15": KAGGLE15_FLIP}
SUBJECT_RIGHT: dict[str, frozenset[int]] = {
    "youtube68": IBUG68_SUBJECT_RIGHT,
    "kaggle15": KAGGLE15_SUBJECT_RIGHT,
}


def point_side(fmt: str, index: int) -> str:
    """'right', 'left' (the subject's) or 'center' for a keypoint of scheme ``fmt``."""
    if FLIP_PERMUTATION[fmt][index] == index:
        return "center"
    return "right" if index in SUBJECT_RIGHT[fmt] else "left"


def eye_groups(point_names: list[str] | tuple[str, ...]) -> tuple[list[int], list[int]] | None:
    """Indices of the points of the eye on the image's left and of the one on its right, for the
    two layouts: iBUG 68 (points 36-41 are the subject's right eye, on the image's left) and
    Kaggle 15 (``left_eye_center`` is the subject's left eye, on the image's right); None for a
    layout without eyes."""
    names = list(point_names)
    if names == list(YOUTUBE68.point_names):
        return list(range(36, 42)), list(range(42, 48))
    if "left_eye_center" in names and "right_eye_center" in names:
        return [names.index("right_eye_center")], [names.index("left_eye_center")]
    return None


def upright_angle(points: np.ndarray, point_names: list[str] | tuple[str, ...]) -> float | None:
    """The angle (radians) that turns ``(P, 2)`` points so their eye line is level, image-left
    eye on the left; None without both eyes."""
    groups = eye_groups(point_names)
    if groups is None:
        return None
    left, right = (np.nanmean(points[idx], axis=0) for idx in groups)
    dx, dy = right - left
    if not np.isfinite([dx, dy]).all() or dx == dy == 0:
        return None
    return float(-np.arctan2(dy, dx))
