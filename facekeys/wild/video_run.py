"""``facekeys video``: frames in, faces followed, an annotated mp4 (and a keypoint CSV) out.

Each good frame goes through the tracker (``face_tracks``), then through the drawing steps
(``FrameStep``: the keypoints and face numbers by default; an overlay such as a face filter is
one more step before them), then into the writer. A bad frame is skipped (not written) and
reported at the end. Both outputs are staged beside their targets and renamed into place only
when the whole video is done, so a failed or interrupted run leaves the previous files.
"""

from __future__ import annotations

import contextlib
import csv
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facekeys.data.atomic_files import atomic_file, atomic_path
from facekeys.errors import FacekeysError
from facekeys.wild.face_tracks import FaceTracker, TrackedFace, TrackerSettings
from facekeys.wild.one_euro import OneEuroSettings
from facekeys.wild.video_io import CameraSource, Frame, Mp4Writer

# A drawing step: the frame (BGR, may be changed in place) and its faces -> the frame to write.
FrameStep = Callable[[np.ndarray, list[TrackedFace]], np.ndarray]

# Bad frames named one by one at the end; the rest are counted.
LISTED_BAD_FRAMES = 5


def draw_keypoints(image: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
    """Draws each face's keypoints and its number (above the face) onto ``image``."""
    import cv2

    for face in faces:
        present = face.points[np.isfinite(face.points).all(axis=1)]
        if not len(present):
            continue
        extent = float(np.ptp(present, axis=0).max())
        radius = max(1, round(extent / 80))  # visible on small and large faces alike
        for x, y in present:
            cv2.circle(image, (round(x), round(y)), radius, (0, 255, 0), -1, cv2.LINE_AA)
        left, top = present.min(axis=0)
        scale = max(0.4, extent / 250)
        origin = (round(left), max(12, round(top - 6 * scale)))
        cv2.putText(image, str(face.face), origin, cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 255, 255), max(1, round(2 * scale)), cv2.LINE_AA)  # fmt: skip
    return image


@dataclass
class VideoSummary:
    """What a run did, for the closing lines.

    Attributes:
        frames: Good frames processed.
        faces: Face numbers handed out (distinct faces, as far as tracking can tell).
        tracking_s: Seconds spent finding and following faces (decoding, drawing and encoding
            excluded).
        detector_runs: Frames the detector ran on.
        losses: Times a followed face failed the presence check.
        bad_frames: ``(frame name, problem)`` of each frame that could not be used.
        stopped: Why the run ended early (Ctrl-C on a camera, ``max_frames``), or None.
    """

    frames: int = 0
    faces: int = 0
    tracking_s: float = 0.0
    detector_runs: int = 0
    losses: int = 0
    bad_frames: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.tracking_s if self.tracking_s > 0 else 0.0

    def lines(self, out: Path, source_name: str) -> list[str]:
        """The closing report: bad frames (the first few by name), then one summary line."""
        lines = [f"{name}: {problem}" for name, problem in self.bad_frames[:LISTED_BAD_FRAMES]]
        if len(self.bad_frames) > LISTED_BAD_FRAMES:
            lines.append(f"... and {len(self.bad_frames) - LISTED_BAD_FRAMES} more bad frames")
        if self.stopped:
            lines.append(f"{source_name}: {self.stopped}")
        if self.frames and not self.faces:
            lines.append(f"{source_name}: no face found in any frame")
        lines.append(
            f"{out}: {self.frames} frames, {self.faces} faces, {self.frames_per_s:.1f} frames/s "
            f"tracked (decoding and drawing excluded), {self.detector_runs} detector runs, "
            f"{self.losses} faces lost, {len(self.bad_frames)} bad frames"
        )
        return lines


@dataclass
class VideoOutputs:
    """Where a run writes: the annotated video, the keypoint CSV (optional), its columns."""

    video: Path
    csv: Path | None = None
    columns: list[str] = field(default_factory=list)
    label_offset: float = 0.0  # added to pixel-centre points in the CSV (the model's convention)


def overlay_step(keypoint_names: list[str], overlay: Any) -> FrameStep:
    """A frame step that places ``overlay`` (``facekeys.wild.overlays.Overlay``) on every
    followed face, as ``facekeys filter`` does on a photo."""
    from facekeys.wild.filters import apply_overlay, layout_for

    layout = layout_for(keypoint_names)

    def place(image: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
        if not faces:
            return image
        return apply_overlay(image, np.stack([face.points for face in faces]), overlay, layout)

    return place


def run_video(
    predictor: Any,
    source: Any,
    outputs: VideoOutputs,
    settings: TrackerSettings | None = None,
    steps: Iterable[FrameStep] = (draw_keypoints,),
    max_frames: int | None = None,
) -> VideoSummary:
    """Follows the faces of every frame of ``source`` and writes the outputs.

    Args:
        predictor: A ``KeypointPredictor`` (or an object with the methods ``FaceTracker`` uses).
        source: A frame source of ``facekeys.wild.video_io`` (iterable of ``Frame``, with
            ``name``, ``fps`` and ``total``).
        outputs: The files to write.
        settings: Tracking settings.
        steps: Drawing steps applied in order to each frame.
        max_frames: Stop after this many frames (good or bad) of the source.

    Raises:
        FacekeysError: No frame of the source could be used (nothing is written then).
    """
    tracker = FaceTracker(predictor, settings)
    summary = VideoSummary()
    with contextlib.ExitStack() as stack:
        video_tmp = stack.enter_context(atomic_path(outputs.video))
        table = None
        if outputs.csv is not None:
            table = csv.writer(stack.enter_context(atomic_file(outputs.csv, newline="")))
            table.writerow(["frame", "face", *outputs.columns])
        writer = _process(tracker, source, video_tmp, table, outputs, steps, max_frames, summary)
        if writer is None:
            raise FacekeysError(f"{source.name}: no frame could be decoded")
        writer.close()
    summary.faces, summary.detector_runs = tracker.faces, tracker.detector_runs
    summary.losses = tracker.losses
    return summary


def _process(tracker, source, video_tmp, table, outputs, steps, max_frames, summary):
    """The frame loop of ``run_video``; returns the writer (None when no frame was good)."""
    from tqdm import tqdm

    total = min(filter(None, (source.total, max_frames)), default=None)
    bar = tqdm(total=total, desc="video", unit="frame", disable=None, file=sys.stderr)
    writer = None
    frames = iter(source)
    try:
        while max_frames is None or bar.n < max_frames:
            frame = next(frames, None)
            if frame is None:
                break
            bar.update(1)
            if frame.image is None:
                summary.bad_frames.append((frame.name, frame.problem or "unusable"))
                continue
            writer = writer or Mp4Writer(video_tmp, source.fps, *frame.image.shape[1::-1])
            _one_frame(tracker, frame, writer, table, outputs, steps, summary)
        else:
            if source.total is None or source.total > max_frames:
                summary.stopped = f"stopped after {max_frames} frames (--max-frames)"
    except KeyboardInterrupt:
        if not isinstance(source, CameraSource):
            raise
        summary.stopped = f"stopped by Ctrl-C after {bar.n} frames"
    finally:
        bar.close()
    return writer


def _one_frame(tracker, frame: Frame, writer, table, outputs, steps, summary) -> None:
    start = time.perf_counter()
    faces = tracker.step(frame.image, frame.time_s)
    summary.tracking_s += time.perf_counter() - start
    summary.frames += 1
    image = frame.image
    for step in steps:
        image = step(image, faces)
    writer.write(image)
    if table is not None:
        for face in faces:
            coords = (face.points + outputs.label_offset).reshape(-1)
            table.writerow([frame.index, face.face, *(f"{v:.2f}" for v in coords)])


def video_settings(
    *,
    detect_every: int,
    max_faces: int,
    presence_threshold: float,
    min_cutoff: float,
    beta: float,
    smoothing: bool,
    max_frames: int | None,
    fps: float,
) -> TrackerSettings:
    """The tracker settings of ``facekeys video``'s options.

    Raises:
        FacekeysError: One line naming the option out of range (``--detect-every: must be ...``).
    """
    settings = TrackerSettings(
        detect_every=detect_every,
        max_faces=max_faces,
        min_likeness=presence_threshold,
        smoothing=OneEuroSettings(min_cutoff, beta) if smoothing else None,
    )
    try:
        settings.check()
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, not {max_frames}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, not {fps}")
    except ValueError as exc:
        name, _, problem = str(exc).partition(" ")  # "detect_every must be >= 1, not 0"
        option = {"min_likeness": "presence_threshold"}.get(name, name).replace("_", "-")
        raise FacekeysError(f"--{option}: {problem}") from None
    return settings


def check_video_outputs(source: str, out: str, table: str | None) -> tuple[Path, Path | None]:
    """OUT (.mp4) and the CSV (.csv; so never the same file): not the input, writable; checked
    before any work.

    Raises:
        FacekeysError: One line naming the output that cannot be written, and why.
    """
    from facekeys.data.atomic_files import check_writable

    video, csv_path = Path(out), Path(table) if table else None
    if video.suffix.lower() != ".mp4":
        raise FacekeysError(f"{video}: --out must be an .mp4 file")
    if csv_path is not None and csv_path.suffix.lower() != ".csv":
        raise FacekeysError(f"{csv_path}: --csv must be a .csv file")
    given = Path(source).resolve()
    for path in filter(None, (video, csv_path)):
        if path.resolve() == given:
            raise FacekeysError(f"{path}: is the input; write somewhere else")
        check_writable(path)
    return video, csv_path


def video_with_faces(
    source_spec: str,
    out: str,
    table: str | None,
    load_predictor: Callable[[], Any],
    log: Callable[[str], None],
    *,
    overlay: Any = None,
    settings: TrackerSettings | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> VideoSummary:
    """A whole run of ``facekeys video`` (and of ``facekeys filter`` on a video): the outputs
    and the source are checked before the model loads (a bad input fails fast), then the faces
    are followed and drawn (the keypoints, or ``overlay`` on every face), the outputs written and
    the summary lines given to ``log``."""
    from facekeys.inference.predictor import prediction_columns
    from facekeys.wild.video_io import open_source

    video, csv_path = check_video_outputs(source_spec, out, table)
    source = open_source(source_spec, fps=fps)
    predictor = load_predictor()
    predictor.require_detector()
    columns = prediction_columns(predictor.card["format"])
    outputs = VideoOutputs(video, csv_path, columns, predictor.label_pixel_offset)
    steps = (
        (draw_keypoints,) if overlay is None else (overlay_step(predictor.keypoint_names, overlay),)
    )
    summary = run_video(predictor, source, outputs, settings, steps, max_frames=max_frames)
    for line in summary.lines(video, source.name):
        log(line)
    return summary
