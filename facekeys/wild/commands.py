"""The ``facekeys`` commands for faces in the wild (``filter``, ``serve``, ``video``): their
arguments and the few lines that call this wing. ``facekeys.cli`` registers them, so ``--help``
still answers at once: heavy libraries are imported inside the commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from facekeys.errors import FacekeysError

EXIT_USER_ERROR = 1

FILTER_DESCRIPTION = """\
Find the faces of PHOTO with the model's calibrated detector, predict their keypoints and place
an RGBA overlay on each face: scaled to the span of two face points, turned with the line between
the eyes, alpha-blended, clipped at the photo's border. Works with 68-point and 15-point models.

An overlay has two anchor points (its own pixels) that land on two face points, --to:
  eyes       the eye centres
  brows      the outer ends of the brows
  mouth      the mouth corners
  upper_lip  the mouth corners' span, moved up to midway between the nose and the upper lip
The first anchor lands on the image-left point (the subject's right), the second on the
image-right one; anchors may lie outside the picture (a hat's are below it, at the brows).

Built-in overlays (files read from --overlays-dir, else $FACEKEYS_OVERLAYS_DIR, else
../shared/data/sample-images beside the project; never copied into it):
  sunglasses  lens centres -> eyes
  moustache   where its arms start -> upper_lip
  straw_hat   where the brows are, below the brim -> brows
Your own PNG (it must have an alpha channel): --overlay FILE.png --anchors X1,Y1,X2,Y2 --to ...

OUT (.jpg or .png; .mp4 for a video) is written atomically. A photo without a face is written
without an overlay, with a note on stderr, and the exit status is 0. A video (.mp4, .avi, .mov,
.mkv, .webm, ...) gets the overlay on every face followed through it, as `facekeys video
--filter` with its default tracking settings. Errors (a missing or unreadable file, an overlay
without alpha, bad anchors, a model without a detector calibration) are one line and exit
status 1.

Examples:
  facekeys filter ../shared/data/sample-images/obamas.jpg --overlay sunglasses \\
      --model models/youtube-faces-68 --out obamas-cool.jpg
  facekeys filter me.jpg --overlay crown.png --anchors 40,210,360,210 --to brows \\
      --model models:/facekeys-youtube-faces-68@champion --out me-king.png"""


def add_filter(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "filter",
        help="put sunglasses, a moustache, a hat or your own overlay on every face of a photo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=FILTER_DESCRIPTION,
    )
    p.add_argument("source", metavar="PHOTO", help="a photo (PNG or JPEG)")
    p.add_argument(
        "--overlay",
        required=True,
        metavar="NAME_OR_PNG",
        help="sunglasses, moustache, straw_hat, or an RGBA PNG file (with --anchors)",
    )
    p.add_argument(
        "--anchors", metavar="X1,Y1,X2,Y2", help="your PNG's pixels that land on the face"
    )
    p.add_argument(
        "--to",
        dest="target",
        choices=("eyes", "brows", "mouth", "upper_lip"),
        help="the face points your PNG's anchors land on (default: eyes)",
    )
    p.add_argument("--overlays-dir", help="folder of the built-in overlays (see above)")
    p.add_argument(
        "--model",
        required=True,
        help="a model with a detector calibration: a model folder, an export folder, an "
        ".onnx file or models:/NAME@ALIAS (as for facekeys predict)",
    )
    p.add_argument("--out", required=True, help="the filtered photo to write (.jpg or .png)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    p.set_defaults(run=run_filter)


def run_filter(args: argparse.Namespace) -> int:
    from facekeys.wild.filter_files import filter_file
    from facekeys.wild.overlays import load_overlay

    overlay = load_overlay(args.overlay, args.overlays_dir, args.anchors, args.target)
    filter_file(
        args.source,
        args.out,
        overlay,
        # Loaded after the photo and the output are checked: models load slowly.
        lambda: _load_model(args.model, args.threads),
        lambda line: print(line, file=sys.stderr),
    )
    return 0


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page and JSON API to find faces and keypoints in photos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Serve a web app on this machine: a page to upload a photo and see its faces, keypoints and a
filter; POST /v1/keypoints (form field image -> JSON faces) and POST /v1/filter (fields image
and overlay -> PNG). Only loopback hosts are accepted: the app has no authentication.
Photos are recognised by content and capped in bytes and pixels; errors are one line of JSON
with a 4xx status. See README.md, "Web app".

Example:
  facekeys serve --model models/youtube-faces-68 --samples ../shared/data/sample-images""",
    )
    p.add_argument(
        "--model",
        default="models:/facekeys-youtube-faces-68@champion",
        help="registered model URI (default: models:/facekeys-youtube-faces-68@champion; store: "
        "MLFLOW_TRACKING_URI, default ./mlflow.db), a trained model folder, an export folder or "
        "an .onnx file; it must carry a face detector calibration",
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (8000)")
    p.add_argument("--max-bytes", type=int, default=20_000_000, help="photo cap (20000000)")
    p.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="width x height cap (40000000)"
    )
    p.add_argument("--samples", metavar="DIR", help="folder of photos the page offers to try")
    p.add_argument(
        "--overlays-dir",
        help="folder of the built-in filter overlays (default: FACEKEYS_OVERLAYS_DIR, else "
        "../shared/data/sample-images); without it the page offers no filter",
    )
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        from facekeys.wild.web_serve import serve
    except ImportError as exc:  # FastAPI and uvicorn come with the orchestration extra
        raise FacekeysError(
            f"{exc.name or exc}: not installed; pip install 'facekeys[orchestration]'"
        ) from None
    from facekeys.wild.web_uploads import UploadLimits

    if args.max_bytes < 1 or args.max_pixels < 1 or not 0 <= args.port <= 65535:
        raise FacekeysError("--max-bytes and --max-pixels must be >= 1, --port 0..65535")
    limits = UploadLimits(max_bytes=args.max_bytes, max_pixels=args.max_pixels)
    overlays = _built_in_overlays(args.overlays_dir)
    serve(args.model, args.host, args.port, limits, samples_dir=args.samples, overlays=overlays)
    return 0


def _built_in_overlays(overlays_dir: str | None) -> dict[str, Any]:
    """The built-in overlays found in the overlays folder. A folder named on the command line
    must hold them all; where only the default is missing, the app serves without filters and
    says so."""
    import os

    from facekeys.errors import FacekeysError
    from facekeys.wild.overlays import BUILT_INS, OVERLAYS_DIR_VARIABLE, load_built_in

    try:
        return {name: load_built_in(name, overlays_dir) for name in BUILT_INS}
    except FacekeysError as exc:
        if overlays_dir or os.environ.get(OVERLAYS_DIR_VARIABLE):
            raise
        print(f"facekeys serve: no filters offered: {exc}", file=sys.stderr)
        return {}


def add_video(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "video",
        help="keypoints on a video, a folder of frames or a camera, faces tracked",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Find and follow the faces of a video and write it annotated (keypoints and face numbers) to OUT
(.mp4), and with --csv every face's keypoints: frame, face, then the model's coordinate columns
(x0, y0, ..., x67, y67 for 68 points; Kaggle's names for 15), in frame pixels and the model's
label convention (the same numbers `facekeys predict` gives for that frame as an image).

INPUT is a video file, a folder of image frames (in natural name order: frame2 before frame10)
or a camera index (0; stop with Ctrl-C or --max-frames, the outputs are still written).

Tracking: the keypoints of one frame place the first network's crop in the next; the detector
runs on the first frame, every --detect-every frames, when a face is lost (the image under its
points no longer looks like the face: --presence-threshold) and on each frame while no face is
followed. A One Euro filter smooths the points (--min-cutoff, --beta; --no-smoothing).

Bad frames are skipped, named at the end, and make the exit status 1. Both outputs are written
to hidden files beside them and renamed at the end: a failed run leaves the previous ones.

Example:
  facekeys video clip.mp4 --model models/youtube-faces-68 --out clip.faces.mp4 --csv clip.csv""",
    )
    p.add_argument("input", metavar="INPUT", help="video file, folder of frames, or camera index")
    p.add_argument("--model", required=True, help="as for `facekeys predict` (needs a detector "
                   "calibration in the model card)")  # fmt: skip
    p.add_argument("--out", required=True, help="annotated video to write (.mp4)")
    p.add_argument("--csv", help="keypoint CSV to write (.csv)")
    p.add_argument("--detect-every", type=int, default=30, metavar="N",
                   help="run the detector again after N frames (30; 1: every frame)")  # fmt: skip
    p.add_argument("--max-faces", type=int, default=4, help="faces followed at most (4)")
    p.add_argument("--presence-threshold", type=float, default=0.3, metavar="R",
                   help="a face is lost when the look of its patch correlates less than R with "
                   "its look at detection and in the last frame (0.3)")  # fmt: skip
    p.add_argument("--min-cutoff", type=float, default=1.0, metavar="HZ",
                   help="One Euro cutoff at rest; lower smooths more (1.0)")  # fmt: skip
    p.add_argument("--beta", type=float, default=50.0,
                   help="One Euro speed coefficient; higher lags less (50)")  # fmt: skip
    p.add_argument("--no-smoothing", action="store_true", help="write the raw points")
    p.add_argument(
        "--filter",
        metavar="OVERLAY",
        help="also place an overlay on every face (sunglasses, moustache, straw_hat or an RGBA "
        "FILE.png with --anchors/--to, as for `facekeys filter`); the keypoints are then not drawn",
    )
    p.add_argument("--anchors", metavar="X1,Y1,X2,Y2", help="the --filter FILE.png's anchors")
    p.add_argument("--to", dest="target", help="face points the anchors land on (eyes)")
    p.add_argument("--overlays-dir", help="folder of the built-in overlays (see facekeys filter)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of a folder of frames (25)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    p.set_defaults(run=run_video)


def run_video(args: argparse.Namespace) -> int:
    from facekeys.wild.video_run import video_settings, video_with_faces

    settings = video_settings(
        detect_every=args.detect_every, max_faces=args.max_faces,
        presence_threshold=args.presence_threshold, min_cutoff=args.min_cutoff, beta=args.beta,
        smoothing=not args.no_smoothing, max_frames=args.max_frames, fps=args.fps,
    )  # fmt: skip
    overlay = None
    if args.filter:
        from facekeys.wild.overlays import load_overlay

        overlay = load_overlay(args.filter, args.overlays_dir, args.anchors, args.target)
    summary = video_with_faces(
        args.input, args.out, args.csv, lambda: _load_model(args.model, args.threads),
        lambda line: print(line, file=sys.stderr), overlay=overlay, settings=settings,
        fps=args.fps, max_frames=args.max_frames,
    )  # fmt: skip
    return EXIT_USER_ERROR if summary.bad_frames else 0


def _load_model(spec: str, threads: int) -> Any:
    """The model of ``--model``, its CPU threads set first (0: one per core)."""
    import os

    import torch

    from facekeys.tracking.model_specs import load_any_model

    torch.set_num_threads(threads or os.cpu_count() or 1)
    return load_any_model(spec)
