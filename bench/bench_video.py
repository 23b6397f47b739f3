"""Video: how fast and how steady `facekeys video` follows a face, against running the detector on
every frame, in the same run on the same frames.

Synthetic clips with exact ground truth: each of --faces test faces (youtube-faces-68 test split,
image and labels) is pasted onto a fixed textured 640x480 background and moved across it for
--frames frames at 30 frames/s: along a figure of eight, turning in the image plane by up to
+-20 degrees and scaling by +-25 %; the labels move with the same affine map. All frames are made
before timing starts (decoding excluded). One line per case:

- detect_every_frame: ``predict_faces`` on every frame (the detector, then the keypoints).
- tracking: ``FaceTracker`` with its defaults (detector every 30 frames and when lost, One Euro).
- tracking_unsmoothed: the same without the One Euro filter.
- dlib_hog_68: dlib's HOG detector + 68-point shape predictor, where ``dlib`` and
  ``face_recognition_models`` are installed (else a line says it was skipped).

Numbers: frames/s (detection and keypoints only), found (frames where a reported face lies on the
true one), NME per frame (outer eye corners, in %), jitter (mean over points of the frame-to-frame
movement of the points minus that of the ground truth, / the eye-corner distance, in %: what a
viewer sees as shaking), detector runs and faces lost (presence check). The tracking lines add the
speed-up and the NME difference to detecting on every frame, on the frames where both found the
face (Haar misses turned faces, so its own NME is over the easier frames), and the issue's goals.

Usage: python bench/bench_video.py [--model models/youtube-faces-68]
       [--data ../shared/data/youtube-faces-68] [--faces 4] [--frames 150] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from facekeys.errors import FacekeysError

SIZE = (480, 640)
FPS = 30.0
PAIR = (36, 45)  # outer eye corners of the 68-point layout


def _background(rng: np.random.Generator) -> np.ndarray:
    """Smooth coloured texture: no face in it, but edges for a detector to consider."""
    import cv2

    small = rng.integers(0, 255, (SIZE[0] // 16, SIZE[1] // 16, 3), np.uint8)
    texture = cv2.resize(small, SIZE[::-1], interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(texture, (0, 0), 3)


def make_clip(image: np.ndarray, points: np.ndarray, frames: int, rng: np.random.Generator):
    """Frames (BGR) and true points ``(frames, 68, 2)`` of one face moving over a background."""
    import cv2

    from facekeys.wild.video_io import to_bgr8

    face, background = to_bgr8(image), _background(rng)
    centroid = np.nanmean(points, axis=0)
    base = 150.0 / np.nanmax(np.ptp(points, axis=0))  # a face about 150 px across
    mask = np.full(face.shape[:2], 255, np.uint8)
    clip, truth = [], []
    for t in range(frames):
        phase = 2 * np.pi * t / frames
        matrix = cv2.getRotationMatrix2D(
            (float(centroid[0]), float(centroid[1])),
            20.0 * np.sin(2 * phase),
            base * (1 + 0.25 * np.sin(3 * phase)),
        )
        target = np.array([320 + 180 * np.sin(phase), 240 + 90 * np.sin(2 * phase)])
        matrix[:, 2] += target - centroid
        warped = cv2.warpAffine(face, matrix, SIZE[::-1], flags=cv2.INTER_LINEAR)
        inside = cv2.warpAffine(mask, matrix, SIZE[::-1], flags=cv2.INTER_NEAREST) > 0
        clip.append(np.where(inside[..., None], warped, background))
        truth.append(points @ matrix[:, :2].T + matrix[:, 2])
    return clip, np.array(truth)


def _on_face(faces: list[np.ndarray], truth: np.ndarray) -> np.ndarray | None:
    """The reported face whose centroid lies nearest the true one, within an eye distance."""
    eyes = np.linalg.norm(truth[PAIR[0]] - truth[PAIR[1]])
    best = min(faces, key=lambda p: np.linalg.norm(np.nanmean(p - truth, axis=0)), default=None)
    if best is None or np.linalg.norm(np.nanmean(best - truth, axis=0)) > eyes:
        return None
    return best


def score(found: list[np.ndarray | None], truth: np.ndarray) -> dict[str, float]:
    """Found share, NME per frame (NaN where not found) and jitter (in eye distances) of one
    clip's per-frame points."""
    eyes = np.linalg.norm(truth[:, PAIR[0]] - truth[:, PAIR[1]], axis=-1)
    nme, jitter = np.full(len(found), np.nan), []
    for t, points in enumerate(found):
        if points is None:
            continue
        nme[t] = np.nanmean(np.linalg.norm(points - truth[t], axis=-1)) / eyes[t]
        if t and found[t - 1] is not None:
            moved = (points - found[t - 1]) - (truth[t] - truth[t - 1])
            jitter.append(np.nanmean(np.linalg.norm(moved, axis=-1)) / eyes[t])
    return {"found": int(np.isfinite(nme).sum()), "nme": float(np.nansum(nme)),
            "jitter": float(np.sum(jitter)), "pairs": len(jitter), "per_frame": nme}  # fmt: skip


class DetectEveryFrame:
    """``predict_faces`` on each frame: the detector, then the keypoints of every face."""

    def __init__(self, predictor) -> None:
        self.predictor, self.losses = predictor, None

    def start_clip(self) -> None:
        pass

    def __call__(self, frame: np.ndarray, _time_s: float) -> tuple[list[np.ndarray], int]:
        return list(self.predictor.predict_faces(frame)[1]), 1


class Tracking:
    """A ``FaceTracker`` per clip; counts detector runs and faces lost over all clips."""

    def __init__(self, predictor, smoothing: bool) -> None:
        from facekeys.wild.face_tracks import TrackerSettings

        self.predictor, self.losses, self.tracker = predictor, 0, None
        self.settings = TrackerSettings() if smoothing else TrackerSettings(smoothing=None)

    def start_clip(self) -> None:
        from facekeys.wild.face_tracks import FaceTracker

        self.losses += self.tracker.losses if self.tracker else 0
        self.tracker = FaceTracker(self.predictor, self.settings)

    def __call__(self, frame: np.ndarray, time_s: float) -> tuple[list[np.ndarray], int]:
        runs = self.tracker.detector_runs
        faces = self.tracker.step(frame, time_s)
        return [f.points for f in faces], self.tracker.detector_runs - runs


class Dlib:
    """dlib's HOG detector and 68-point shape predictor on every frame (the issue's yardstick)."""

    def __init__(self) -> None:
        import importlib.util

        import dlib

        # The models package's own import needs pkg_resources (gone from recent setuptools):
        # find its file without importing it.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("face_recognition_models is not installed")
        folder = next(iter(spec.submodule_search_locations))
        self.losses = None
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(f"{folder}/models/shape_predictor_68_face_landmarks.dat")

    def start_clip(self) -> None:
        pass

    def __call__(self, frame: np.ndarray, _time_s: float) -> tuple[list[np.ndarray], int]:
        rgb = np.ascontiguousarray(frame[..., ::-1])
        faces = []
        for rect in self.detector(rgb, 0):
            parts = self.shapes(rgb, rect).parts()
            faces.append(np.array([(p.x, p.y) for p in parts], np.float64))
        return faces, 1


def run_case(method, clips) -> dict[str, float]:
    """Runs one method over every clip; sums what ``score`` measures, and the time."""
    total = {"frames": 0, "seconds": 0.0, "runs": 0, "found": 0, "nme": 0.0, "jitter": 0.0,
             "pairs": 0, "per_frame": np.zeros(0)}  # fmt: skip
    for frames, truth in clips:
        method.start_clip()
        found = []
        for t, frame in enumerate(frames):
            start = time.perf_counter()
            faces, runs = method(frame, t / FPS)
            total["seconds"] += time.perf_counter() - start
            total["runs"] += runs
            found.append(_on_face(faces, truth[t]))
        for key, value in score(found, truth).items():
            total[key] = np.r_[total[key], value] if key == "per_frame" else total[key] + value
        total["frames"] += len(frames)
    if isinstance(method, Tracking):
        method.start_clip()  # adds the last clip's losses
    return total


def line(name: str, total: dict[str, float], losses: int | None = None) -> str:
    found = total["found"]
    text = (
        f"{name}: frames={total['frames']} frames_per_s={total['frames'] / total['seconds']:.1f} "
        f"found={100 * found / total['frames']:.1f}% "
        f"nme={100 * total['nme'] / max(found, 1):.2f}% "
        f"jitter={100 * total['jitter'] / max(total['pairs'], 1):.2f}% "
        f"detector_runs={total['runs']}"
    )
    return text + (f" faces_lost={losses}" if losses is not None else "")


def _load(args):
    """The predictor and the clips; one line and exit 1 where either cannot be had."""
    import torch

    from facekeys.data.labelled_images import load_labelled
    from facekeys.tracking.model_specs import load_any_model

    torch.set_num_threads(args.threads)
    try:
        predictor = load_any_model(args.model)
        predictor.require_detector()
        if predictor.card["format"] != "youtube68":
            raise FacekeysError(
                f"{args.model}: a 68-point model is needed, not {predictor.card['format']}"
            )
        data_dir = Path(args.data)
        csv_path = data_dir / "test_frames_keypoints.csv"
        if not csv_path.is_file():
            raise FacekeysError(f"{csv_path}: no such file (--data: a youtube-faces-68 folder)")
        rows = sum(1 for _ in csv_path.open(encoding="utf-8")) - 1
        keep = np.linspace(0, rows - 1, min(args.faces, rows)).round().astype(int)
        data = load_labelled("youtube68", csv_path, data_dir / "test",
                             predictor.label_pixel_offset, keep)  # fmt: skip
    except FacekeysError as exc:
        sys.exit(f"bench_video: error: {exc}")
    rng = np.random.default_rng(2026)
    clips = [
        make_clip(im, p, args.frames, rng) for im, p in zip(data.images, data.points, strict=True)
    ]
    return predictor, clips


def _versus(total: dict[str, float], baseline: dict[str, float]) -> str:
    """Speed and NME against detecting on every frame (on the frames both found the face), and
    the issue's goals."""
    fps = total["frames"] / total["seconds"]
    base_fps = baseline["frames"] / baseline["seconds"]
    both = np.isfinite(total["per_frame"]) & np.isfinite(baseline["per_frame"])
    gap = 100 * (total["per_frame"][both].mean() - baseline["per_frame"][both].mean())
    return (
        f" | vs detect_every_frame: speed x{fps / base_fps:.1f} nme {gap:+.2f} points on the "
        f"{both.sum()} frames both found | goals: >=200 frames/s "
        f"{'MET' if fps >= 200 else 'NOT MET'}, nme within 0.5 points "
        f"{'MET' if gap <= 0.5 else 'NOT MET'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/youtube-faces-68")
    parser.add_argument("--data", default="../shared/data/youtube-faces-68")
    parser.add_argument("--faces", type=int, default=4, help="test faces, one clip each (4)")
    parser.add_argument("--frames", type=int, default=150, help="frames per clip (150)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    args = parser.parse_args()
    predictor, clips = _load(args)
    predictor.predict_faces(clips[0][0][0])  # warm-up: cascade loaded, first inference done
    baseline = run_case(DetectEveryFrame(predictor), clips)
    print(line("detect_every_frame", baseline), flush=True)
    for name, smoothing in (("tracking", True), ("tracking_unsmoothed", False)):
        method = Tracking(predictor, smoothing)
        total = run_case(method, clips)
        print(line(name, total, method.losses) + _versus(total, baseline), flush=True)
    try:
        dlib = Dlib()
    except ImportError:
        print("dlib_hog_68: skipped (dlib and face_recognition_models are not installed)")
        return
    total = run_case(dlib, clips)
    print(line("dlib_hog_68", total) + _versus(total, baseline))


if __name__ == "__main__":
    main()
