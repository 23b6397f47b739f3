"""``facekeys predict`` on files: image folders and files in, the prediction CSV and its errors
CSV out, written together.

Images are read as photos (``facekeys.data.photos``): turned upright by their EXIF orientation,
so the points of a photo stored sideways are in the upright picture's pixels (a note on stderr
names such photos), and refused as ``image_too_small`` under ``MIN_FACE_SIDE`` px a side.
Inputs are listed (``list_inputs``), outputs checked before any image is read
(``check_outputs``), images predicted in batches through ``facekeys.inference.predictor`` (whole
images or detected faces), and both CSVs written at once (``write_files_together``). Names:
``list_inputs``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from facekeys.data.atomic_files import check_writable, write_files_together
from facekeys.data.images import ImageLimits, ImageProblem, resolve_inside
from facekeys.data.photos import check_face_size, load_photo
from facekeys.errors import FacekeysError
from facekeys.inference.drawing import write_drawing
from facekeys.inference.predictor import KeypointPredictor, prediction_columns

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

FACE_COLUMNS = ["face", "face_x", "face_y", "face_w", "face_h"]


class InputImage(NamedTuple):
    """One image to predict.

    Attributes:
        folder: The folder ``name`` is loaded from (``resolve_inside`` refuses paths leaving it).
        name: The file name inside ``folder``.
        shown: The ``name`` column of the CSVs: ``name`` for an image of a folder given, the
            path as given for a file given by path.
    """

    folder: str
    name: str
    shown: str


def list_inputs(inputs: list[str]) -> list[InputImage]:
    """One ``InputImage`` per image: a folder contributes its image files (sorted, not
    recursive; symlinks leaving it are refused later, by ``resolve_inside``), a file itself.
    A folder given alone shows its images by name, beside other inputs as ``folder/name`` (two
    folders may hold the same names). FacekeysError: an input missing, no images, or one image
    given twice (also through a link)."""
    found: list[InputImage] = []
    alone = len(inputs) == 1
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            names = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            found += [
                InputImage(str(path), name, name if alone else str(path / name)) for name in names
            ]
        elif path.exists() or path.is_symlink():
            found.append(InputImage(str(path.parent), path.name, item))
        else:
            raise FacekeysError(f"{item}: no such file or folder")
    if not found:
        raise FacekeysError(f"no images in {', '.join(inputs)} (suffixes {IMAGE_SUFFIXES})")
    seen: dict[str, str] = {}
    for image in found:
        real = os.path.realpath(Path(image.folder) / image.name)
        if real in seen:
            raise FacekeysError(f"{image.shown}: given twice (also as {seen[real]})")
        seen[real] = image.shown
    return found


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
    items: list[InputImage] | None = None,
) -> None:
    """Refuses outputs that would destroy something, before any image is predicted.

    Both must be ``.csv`` files, different from each other and from every input image (``items``
    as ``list_inputs`` returns them), in folders that can be written now.

    Raises:
        FacekeysError: One line naming the output and the problem.
    """
    out, errors = Path(out_csv), Path(errors_csv)
    for path, option in ((out, "--out"), (errors, "--errors")):
        if path.suffix.lower() != ".csv":
            raise FacekeysError(f"{path}: {option} must name a .csv file")
    if _same_file(out, errors):
        raise FacekeysError(f"{out}: --out and --errors are the same file")
    for item in items or []:
        image = Path(item.folder) / item.name
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


@dataclass
class _Table:
    """What a run has produced so far: prediction rows, error rows and counts."""

    rows: list[list[str]] = field(default_factory=list)
    errors: list[list[str]] = field(default_factory=list)
    done: int = 0
    no_face: int = 0
    turned: list[str] = field(default_factory=list)


def predict_files(
    predictor: KeypointPredictor,
    inputs: list[str],
    out_csv: str | os.PathLike[str],
    errors_csv: str | os.PathLike[str],
    batch_size: int = 32,
    detect: str = "none",
    progress_every: int = 100,
    draw_dir: str | os.PathLike[str] | None = None,
) -> tuple[int, int, int]:
    """Predicts every image of ``inputs`` into ``out_csv``.

    ``detect="none"``: each whole image is the face (the data sets' images are face crops), one
    row per image. ``detect="auto"``, ``"yuface"`` or ``"haar"``: faces are found with that
    calibrated detector of the model (``auto``: the best one it has), one row per face with its
    index (largest first) and detector box (``FACE_COLUMNS``) after the keypoints; an image
    without a face is listed in ``errors_csv`` as ``no_face_found``. The ``name`` column of
    both files is relative to the folder given, or a file's path as given (``InputImage.shown``).

    Photos are turned upright by their EXIF orientation first: the points of a photo stored
    sideways are in the upright picture's pixels, as photo viewers show it, and stderr gets one
    line naming such photos. A bad image (unreadable, too large, too small to hold a face,
    unsafe path, ...) goes to ``errors_csv`` with its reason and the others are still predicted.
    ``errors_csv`` is always written, with its header only where no image failed, so that it
    never lists the failures of an earlier run. Both files are written together
    (``write_files_together``): either both are this run's or, where writing fails, both are as
    they were. Where stderr is not a terminal a progress line is printed every
    ``progress_every`` images (or 10 s). With ``draw_dir``, each predicted picture is also
    written there annotated (boxes, keypoints, face index; ``drawing.drawing_path``).

    Returns:
        ``(images predicted, images failed, images without a face)``.

    Raises:
        FacekeysError: Unusable outputs (see ``check_outputs``), checked before any image is
            read; a write that fails at the end (full disk) in one line, nothing changed.
    """
    if detect != "none":
        detect = predictor.require_detector(detect)  # before reading any image
    items = list_inputs(inputs)
    check_outputs(out_csv, errors_csv, items)
    if draw_dir is not None:
        check_writable(Path(draw_dir) / "drawing.png")  # before any image is predicted
    columns = prediction_columns(predictor.card["format"])
    table = _predict_items(predictor, items, batch_size, detect, progress_every, draw_dir)
    header = ["name", *columns, *(FACE_COLUMNS if detect != "none" else [])]
    _write_tables(out_csv, errors_csv, header, table)
    _note_turned(table.turned)
    return table.done, len(table.errors) - table.no_face, table.no_face


def _predict_items(
    predictor: KeypointPredictor,
    items: list[InputImage],
    batch_size: int,
    detect: str,
    progress_every: int,
    draw_dir: str | os.PathLike[str] | None,
) -> _Table:
    """Loads and predicts ``items`` in batches, with a progress bar (terminal) or lines (logs)."""
    import sys

    from tqdm import tqdm

    table = _Table()
    bar = tqdm(total=len(items), desc="predict", unit="img", disable=None, file=sys.stderr)
    progress = _ProgressLines(len(items), progress_every)
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        names, images = _load_batch(batch, table)
        if detect != "none":
            _predict_faces(predictor, names, images, table, detect, draw_dir)
        else:
            _predict_whole_images(predictor, names, images, table, draw_dir)
        bar.update(len(batch))
        progress.update(len(batch))
    bar.close()
    return table


def _load_batch(batch: list[InputImage], table: _Table) -> tuple[list[str], list[np.ndarray]]:
    """The shown names and upright pictures of ``batch``; images that cannot be used (too
    small to hold a face among them) go to the errors with their reason."""
    names, images = [], []
    for item in batch:
        try:
            photo = load_photo(resolve_inside(item.folder, item.name), ImageLimits())
            check_face_size(photo)
        except ImageProblem as problem:
            table.errors.append([item.shown, problem.code, problem.detail])
            continue
        images.append(photo.pixels)
        names.append(item.shown)
        if photo.turned:
            table.turned.append(item.shown)
    return names, images


def _note_turned(turned: list[str], shown: int = 3) -> None:
    """One stderr line naming the photos turned upright by their EXIF orientation (the first
    ``shown`` of them), whose points are in the upright picture's pixels, not the stored ones."""
    import sys

    if not turned:
        return
    names = ", ".join(turned[:shown])
    if len(turned) > shown:
        names += f" and {len(turned) - shown} more"
    print(
        f"predict: {len(turned)} photo{'s' if len(turned) > 1 else ''} turned upright by the EXIF "
        f"orientation ({names}): points are in the upright picture's pixels",
        file=sys.stderr,
    )


def _predict_whole_images(
    predictor: KeypointPredictor,
    names: list[str],
    images: list[np.ndarray],
    table: _Table,
    draw_dir: str | os.PathLike[str] | None,
) -> None:
    """One row per image: the whole image is the face (the data sets' face crops)."""
    if not images:
        return
    pixels = predictor.predict(images)
    points = predictor.to_label_convention(pixels)
    for name, image, pts, drawn in zip(names, images, points, pixels, strict=True):
        table.rows.append([name, *(f"{v:.3f}" for v in pts.reshape(-1))])
        if draw_dir is not None:
            write_drawing(draw_dir, name, image, [None], drawn[None])
    table.done += len(images)


def _predict_faces(
    predictor: KeypointPredictor,
    names: list[str],
    images: list[np.ndarray],
    table: _Table,
    detector: str,
    draw_dir: str | os.PathLike[str] | None,
) -> None:
    """One row per detected face, with its index and detector box; an image without a face is
    listed in the errors as ``no_face_found``."""
    for name, image in zip(names, images, strict=True):
        boxes, points = predictor.predict_faces(image, detector)
        if draw_dir is not None:
            write_drawing(draw_dir, name, image, list(boxes), points)
        if not boxes:
            table.errors.append([name, "no_face_found", "the face detector found no face"])
            table.no_face += 1
            continue
        points = predictor.to_label_convention(points)
        for face, (box, pts) in enumerate(zip(boxes, points, strict=True)):
            coords = (f"{v:.3f}" for v in pts.reshape(-1))
            table.rows.append([name, *coords, str(face), *(f"{v:.1f}" for v in box)])
        table.done += 1


def _write_tables(
    out_csv: str | os.PathLike[str],
    errors_csv: str | os.PathLike[str],
    header: list[str],
    table: _Table,
) -> None:
    """Writes the predictions and the errors together: both this run's, or both unchanged."""
    import csv

    def write_predictions(handle: Any) -> None:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table.rows)

    def write_errors(handle: Any) -> None:
        writer = csv.writer(handle)
        writer.writerow(["name", "reason", "detail"])
        writer.writerows(table.errors)

    write_files_together(
        [(out_csv, write_predictions), (errors_csv, write_errors)],
        "w",
        encoding="utf-8",
        newline="",
    )
