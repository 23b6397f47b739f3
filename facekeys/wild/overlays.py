"""RGBA overlays for face filters and the two anchor points that place each one on a face.

An overlay's two anchors are points in its own pixels (pixel centres on integers, like the
keypoints) that land on a pair of face points, its *target*:

* ``eyes``: the eye centres;
* ``brows``: the outer ends of the brows;
* ``mouth``: the mouth corners;
* ``upper_lip``: the mouth corners' span, moved up to midway between the nose and the top of the
  upper lip (where a moustache sits).

The first anchor lands on the image-left point of the pair (the subject's right), the second on
the image-right one. Anchors may lie outside the overlay: a hat's anchors are where the brows
are, below the hat.

The three built-in overlays are the files of ``../shared/data/sample-images``, never copied into
the project: they are read from ``--overlays-dir`` (default: ``FACEKEYS_OVERLAYS_DIR``, else
``../shared/data/sample-images`` beside the project) and checked against the size their anchors
were measured on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekeys.data.images import ImageLimits, ImageProblem, decode_image, read_image_bytes
from facekeys.errors import FacekeysError

TARGETS = ("eyes", "brows", "mouth", "upper_lip")
OVERLAYS_DIR_VARIABLE = "FACEKEYS_OVERLAYS_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OVERLAYS_DIR = PROJECT_ROOT.parent / "shared" / "data" / "sample-images"


@dataclass(frozen=True)
class BuiltIn:
    """A built-in overlay: its file and where its anchors are.

    Attributes:
        file: File name inside the overlays folder.
        size: Width and height the anchors were measured on (the file must have them).
        anchors: ``x1, y1, x2, y2`` as fractions of width and height (from the left and top
            edges), so ``x = fraction * width - 0.5`` in pixel-centre coordinates.
        target: The face points the anchors land on (one of ``TARGETS``).
    """

    file: str
    size: tuple[int, int]
    anchors: tuple[float, float, float, float]
    target: str


BUILT_INS: dict[str, BuiltIn] = {
    # Lens centres: the deepest point of each half's opaque area (the maximum of the alpha
    # mask's distance transform) lies at (0.226, 0.498) and (0.765, 0.510); both take the mean
    # height, so level eyes give level glasses instead of a half-degree tilt.
    "sunglasses": BuiltIn("sunglasses.png", (3064, 1123), (0.226, 0.504, 0.765, 0.504), "eyes"),
    # The drooping arms start at x 0.2 and 0.8 (the mouth corners sit under them, the curls reach
    # beyond); y 0.55 is just below the alpha centroid (0.527), so the moustache's top, 0.22 at
    # the centre, meets the nose.
    "moustache": BuiltIn("moustache.png", (960, 480), (0.2, 0.55, 0.8, 0.55), "upper_lip"),
    # The dark band spans x 0.259..0.744 (centre 0.502), its lower edge at y 0.645. The anchors
    # are where the brows' outer ends are, below the band: a head is taken as 1.45 brow spans
    # wide at the band, whose lower edge sits 0.35 brow spans above the brows (so the brim
    # reaches the brows), as looked right on youtube-faces-68 and kaggle-15 training faces.
    "straw_hat": BuiltIn("straw_hat.png", (960, 678), (0.335, 0.82, 0.669, 0.82), "brows"),
}


@dataclass
class Overlay:
    """An RGBA picture and the two anchors that place it on a face.

    Attributes:
        name: The built-in name or the file, for messages.
        bgra: ``HxWx4`` uint8, colour in BGR order as OpenCV reads it, straight (not
            premultiplied) alpha.
        anchors: ``(2, 2)`` anchor points in overlay pixels (pixel centres on integers); the first
            lands on the image-left point of the target pair.
        target: The face points the anchors land on (one of ``TARGETS``).
    """

    name: str
    bgra: np.ndarray
    anchors: np.ndarray
    target: str
    _levels: dict[int, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.anchors = np.asarray(self.anchors, np.float64).reshape(2, 2)
        if self.bgra.ndim != 3 or self.bgra.shape[2] != 4 or self.bgra.dtype != np.uint8:
            raise FacekeysError(f"{self.name}: the overlay is not an 8-bit RGBA picture")
        if self.target not in TARGETS:
            raise FacekeysError(f"{self.name}: target {self.target!r} is none of {TARGETS}")
        check_anchors(self.name, self.anchors)

    def level(self, index: int) -> tuple[np.ndarray, float, float]:
        """The overlay shrunk ``2**index`` times, colour premultiplied by alpha.

        Premultiplied colour interpolates correctly at transparent edges (straight colour would
        bleed the colour of invisible pixels into the border); shrinking before the warp keeps
        a 3000-pixel picture from aliasing when it lands on a 60-pixel face.

        Returns:
            The level and its ``x`` and ``y`` scale against the full overlay.
        """
        import cv2

        height, width = self.bgra.shape[:2]
        if index not in self._levels:
            alpha = self.bgra[..., 3:4].astype(np.float32) / 255.0
            colour = np.rint(self.bgra[..., :3] * alpha).astype(np.uint8)
            image = np.concatenate([colour, self.bgra[..., 3:4]], axis=2)
            size = (max(1, round(width / 2**index)), max(1, round(height / 2**index)))
            if index:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            self._levels[index] = image
        image = self._levels[index]
        return image, image.shape[1] / width, image.shape[0] / height


def check_anchors(name: str, anchors: np.ndarray) -> None:
    """Refuses anchors that cannot place an overlay: not finite, or the second point not to the
    right of the first (the overlay would land upside down or on its side)."""
    if not np.isfinite(anchors).all():
        raise FacekeysError(f"{name}: the anchors must be finite numbers")
    if anchors[1, 0] - anchors[0, 0] < 1.0:
        raise FacekeysError(
            f"{name}: the second anchor (X2,Y2 of --anchors) must lie at least a pixel right of "
            f"the first (got X1 {anchors[0, 0]:g}, X2 {anchors[1, 0]:g})"
        )


def parse_anchors(text: str) -> np.ndarray:
    """``"X1,Y1,X2,Y2"`` (overlay pixels) as a ``(2, 2)`` array.

    Raises:
        FacekeysError: Not four finite numbers, in one line naming the option.
    """
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise FacekeysError(
            f"--anchors {text!r}: expected four numbers X1,Y1,X2,Y2 (overlay pixels)"
        )
    return np.array(values).reshape(2, 2)


def image_problem_line(path: str | os.PathLike[str], problem: ImageProblem) -> str:
    """One line naming the file once, whether or not the problem's detail names it."""
    detail = problem.detail
    return detail if os.fspath(path) in detail else f"{path}: {detail}"


def read_rgba(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> np.ndarray:
    """Reads an overlay picture as 8-bit BGRA (the one place overlays are decoded).

    Raises:
        FacekeysError: The file cannot be read or decoded, or has no alpha channel.
    """
    limits = limits or ImageLimits()
    try:
        image = decode_image(read_image_bytes(path, limits), limits)
    except ImageProblem as exc:
        raise FacekeysError(image_problem_line(path, exc)) from None
    if image.ndim != 3 or image.shape[2] != 4:
        raise FacekeysError(
            f"{path}: the overlay has no alpha channel (an RGBA PNG is needed, transparent "
            "where the photo should show)"
        )
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if not image[..., 3].any():
        raise FacekeysError(f"{path}: the overlay is transparent everywhere (alpha 0)")
    return image


def overlays_folder(option: str | None) -> Path:
    """The folder of the built-in overlays: ``--overlays-dir``, else ``FACEKEYS_OVERLAYS_DIR``,
    else ``../shared/data/sample-images`` beside the project.

    Raises:
        FacekeysError: The folder does not exist, in one line naming it and where it came from.
    """
    if option:
        folder, source = Path(option), "--overlays-dir"
    elif os.environ.get(OVERLAYS_DIR_VARIABLE):
        folder, source = Path(os.environ[OVERLAYS_DIR_VARIABLE]), OVERLAYS_DIR_VARIABLE
    else:
        folder, source = DEFAULT_OVERLAYS_DIR, "the default of --overlays-dir"
    if not folder.is_dir():
        raise FacekeysError(
            f"{folder}: no such folder ({source}); the built-in overlays are read from "
            f"--overlays-dir, else {OVERLAYS_DIR_VARIABLE}, else {DEFAULT_OVERLAYS_DIR}"
        )
    return folder


def load_built_in(name: str, overlays_dir: str | None = None) -> Overlay:
    """A built-in overlay from the overlays folder, its size checked against its anchors.

    Raises:
        FacekeysError: The folder or file is missing or unusable, or the file's size is not the
            one the anchors were measured on.
    """
    spec = BUILT_INS[name]
    path = overlays_folder(overlays_dir) / spec.file
    if not path.is_file():
        raise FacekeysError(
            f"{path}: no such file (--overlay {name} is read from --overlays-dir or "
            f"{OVERLAYS_DIR_VARIABLE})"
        )
    bgra = read_rgba(path)
    height, width = bgra.shape[:2]
    if (width, height) != spec.size:
        raise FacekeysError(
            f"{path}: {width}x{height}, but the anchors of --overlay {name} were measured on "
            f"{spec.size[0]}x{spec.size[1]}; give the file as --overlay FILE.png --anchors ..."
        )
    fractions = np.array(spec.anchors).reshape(2, 2)
    return Overlay(name, bgra, fractions * [width, height] - 0.5, spec.target)


def load_overlay(
    choice: str,
    overlays_dir: str | None = None,
    anchors: str | None = None,
    target: str | None = None,
) -> Overlay:
    """The overlay ``--overlay`` names: a built-in name or an RGBA PNG file.

    Args:
        choice: ``sunglasses``, ``moustache``, ``straw_hat`` or the path of a PNG file.
        overlays_dir: ``--overlays-dir`` (built-ins only).
        anchors: ``--anchors X1,Y1,X2,Y2`` in the file's pixels (a file only; required there).
        target: ``--to``: which face points the anchors land on (a file only; default eyes).

    Raises:
        FacekeysError: One line naming the option or file that cannot be used.
    """
    if choice in BUILT_INS:
        if anchors is not None or target is not None:
            raise FacekeysError(
                f"--overlay {choice}: a built-in overlay has its own anchors; --anchors and "
                "--to go with a PNG file of yours"
            )
        return load_built_in(choice, overlays_dir)
    path = Path(choice)
    if not path.is_file():
        raise FacekeysError(
            f"--overlay {choice}: neither a built-in overlay ({', '.join(BUILT_INS)}) nor a file"
        )
    if anchors is None:
        raise FacekeysError(
            f"--overlay {choice}: a PNG of yours needs --anchors X1,Y1,X2,Y2 (its pixels that "
            f"land on the face) and --to ({'|'.join(TARGETS)}; default eyes)"
        )
    points = parse_anchors(anchors)
    return Overlay(str(path), read_rgba(path), points, target or "eyes")
