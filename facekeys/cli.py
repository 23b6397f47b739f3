"""The ``facekeys`` command line. Heavy libraries are imported inside the commands, so that
``--help`` answers at once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from facekeys.errors import FacekeysError, describe_os_error
from facekeys.wild.commands import add_filter, add_serve, add_video

EXIT_USER_ERROR = 1

DESCRIPTION = """\
facekeys: learn and serve facial keypoints.

The pipeline itself runs through DVC (`dvc repro`, settings in params.yaml); these commands are
the same steps for ad-hoc use on any files.
"""


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch",
        help="bring a data set into a fixed folder layout",
        description=(
            "Copy, extract or download one data set into OUT in its fixed layout and write "
            "OUT/manifest.json with the sha256 of every CSV. The source may be a local folder, "
            "a local .zip, or an http(s) URL of a .zip (downloaded with a progress bar into a "
            "temporary file, then moved into place). OUT is replaced atomically: a failed fetch "
            "leaves the previous OUT (or nothing) behind, never half a data set. Kaggle's "
            "competition URL gets the Kaggle credentials (KAGGLE_USERNAME/KAGGLE_KEY or "
            "~/.kaggle/kaggle.json); `derived:` sources are made by the pipeline's fetch stage."
        ),
    )
    p.add_argument("dataset", choices=["youtube-faces-68", "kaggle-15"], help="data set id")
    p.add_argument("--source", required=True, help="folder, .zip file, or http(s) URL of a .zip")
    p.add_argument("--out", required=True, help="output folder, e.g. data/raw/youtube-faces-68")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds without network progress (60)"
    )
    p.set_defaults(run=_run_fetch)


def _run_fetch(args: argparse.Namespace) -> int:
    from facekeys.data.fetch import fetch_dataset
    from facekeys.data.kaggle_credentials import find_credentials, is_competition_download
    from facekeys.data.source_plan import FetchSettings

    settings = FetchSettings(timeout_s=args.timeout)
    kaggle = is_competition_download(args.source, settings.kaggle_hosts)
    manifest = fetch_dataset(
        args.dataset,
        args.source,
        args.out,
        settings,
        credentials=find_credentials() if kaggle else None,
    )
    print(f"{args.out}: {args.dataset} fetched from {manifest['source']}", file=sys.stderr)
    return 0


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="validate a keypoint CSV; quarantine bad rows",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Validate one keypoint CSV with Great Expectations and write to OUT:
  valid.csv       rows that pass, values as in the input
  quarantine.csv  rows that fail: the original row plus extra_fields, row and reasons
  flagged.csv     rows kept with a warning (e.g. a point a few pixels outside the image)
  report.json     rows_total = rows_valid + rows_quarantined, counts per reason and flag
  data_docs/      Great Expectations Data Docs: open data_docs/index.html in a browser

Exit status: 0 = usable, 1 = unusable (unreadable, empty, wrong schema, binary, or more than
--max-quarantine-fraction of the rows quarantined). Rows are numbered from 1, header excluded.""",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["youtube68", "kaggle15"],
        dest="fmt",
        help="youtube68: name + x0,y0..x67,y67 with an image folder; kaggle15: 30 named "
        "coordinates + Image (96x96 gray values)",
    )
    p.add_argument("--csv", required=True, help="the keypoint CSV file")
    p.add_argument("--images", help="image folder (youtube68: required; names are relative to it)")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument(
        "--params",
        default=None,
        help="params.yaml whose `validate` section sets the thresholds (default: built-in)",
    )
    p.add_argument(
        "--max-quarantine-fraction",
        type=float,
        default=None,
        metavar="F",
        help="unusable when a larger share of rows is quarantined (default 0.1)",
    )
    p.add_argument("--no-data-docs", action="store_true", help="skip the Data Docs HTML")
    p.set_defaults(run=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    import dataclasses

    from facekeys.data.keypoint_formats import FORMATS
    from facekeys.data.validate import ValidationSettings, validate_csv
    from facekeys.params import load_params

    settings = ValidationSettings()
    if args.params:
        settings = ValidationSettings.from_params(load_params(args.params).get("validate", {}))
    if args.max_quarantine_fraction is not None:
        settings = dataclasses.replace(
            settings, max_quarantine_fraction=args.max_quarantine_fraction
        )
    if args.no_data_docs:
        settings = dataclasses.replace(settings, data_docs=False)
    validate_csv(
        FORMATS[args.fmt],
        args.csv,
        args.out,
        images_dir=args.images,
        settings=settings,
        log=lambda line: print(line, file=sys.stderr),
    )
    return 0


PREDICT_DESCRIPTION = """\
Predict keypoints on images with a trained model folder (models/<dataset>: the first model and,
where trained, the refinement model in refine/). Ground truth is never read.

--detect none (default): each whole image is the face, as in the data sets (their images are
face crops). --detect auto|yuface|haar: faces are found first (photos) and each is cropped the
way the model's training images were framed (the calibrations stored in the model card).
yuface (YuNet) finds turned (up to about 30 degrees), small and off-centre faces and turns each
crop upright by the eyes it finds; haar (OpenCV) finds upright frontal faces; auto takes yuface
where the model is calibrated for it, else haar.

Images: JPEG, PNG, WebP, BMP or TIFF, recognised by content (not by name), their sizes checked
against caps on the header before decoding. A photo with an EXIF orientation (a phone photo
stored sideways) is turned upright as photo viewers show it: its points are in the upright
picture's pixels, and a line on stderr names such photos. An image under 16 px on a side is
too small to hold a face: it is listed in the errors file as image_too_small.

Writes OUT (CSV in the data set's own layout, original image pixels of the upright picture,
the data set's label convention): name, x0, y0, ..., x67, y67 for 68 points; name + Kaggle's
named columns for 15.
name is the image's name inside the folder given, or the path of a file as given.
With a detector: one row per face, then face (0 = largest), face_x, face_y, face_w, face_h
(the detector box). Images that cannot be used go to OUT's sibling <stem>.errors.csv (name,
reason, detail); the others are still predicted, and the exit status is then 1. Images without
a face are listed there too (reason no_face_found) but do not change the exit status. The errors
file is always written (header only when nothing failed), together with OUT: both are from the
same run. OUT and the errors file must be .csv files, different from each other and from every
input. Without a terminal, a progress line is printed every 100 images (or 10 s).

Example:
  facekeys predict ../shared/data/sample-images/obamas.jpg --detect auto \
      --model models/youtube-faces-68 --out faces.csv"""


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict keypoints on image files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=PREDICT_DESCRIPTION,
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGES_DIR_OR_FILES", help="folders or images")
    p.add_argument(
        "--model",
        required=True,
        help="a trained model folder (models/<dataset>), an export folder (models/<dataset>/"
        "export), an exported .onnx file (its folder's model.json describes it), or a "
        "registered model, models:/NAME@ALIAS (e.g. models:/facekeys-youtube-faces-68@champion; "
        "store: MLFLOW_TRACKING_URI, default ./mlflow.db)",
    )
    p.add_argument("--out", required=True, help="prediction CSV to write")
    p.add_argument("--errors", help="errors CSV (default: <out stem>.errors.csv beside OUT)")
    p.add_argument(
        "--detect",
        choices=("none", "auto", "yuface", "haar"),
        default="none",
        help="none: the whole image is the face (face crops); auto, yuface, haar: find faces "
        "first (photos; auto: yuface where calibrated, else haar)",
    )
    p.add_argument(
        "--draw",
        metavar="DIR",
        help="also write each picture annotated (boxes, keypoints, face index) into DIR as "
        "<name>.png (sub-folders joined by __)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    import torch

    from facekeys.inference.predict_files import check_outputs, errors_path_for, predict_files
    from facekeys.tracking.model_specs import load_any_model

    out = Path(args.out)
    errors = Path(args.errors) if args.errors else errors_path_for(out)
    check_outputs(out, errors)  # before loading a model; the inputs are checked once listed
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    predictor = load_any_model(args.model)
    done, failed, no_face = predict_files(
        predictor, args.inputs, out, errors, detect=args.detect, draw_dir=args.draw
    )
    faces = f"; {no_face} without a face" if args.detect != "none" else ""
    print(f"{out}: {done} images predicted; {failed} failed{faces} (see {errors})", file=sys.stderr)
    return EXIT_USER_ERROR if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``facekeys`` argument parser with one subcommand per step."""
    parser = argparse.ArgumentParser(
        prog="facekeys",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from facekeys import __version__

    parser.add_argument("--version", action="version", version=f"facekeys {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_fetch(sub)
    _add_validate(sub)
    _add_predict(sub)
    add_filter(sub)
    add_serve(sub)
    add_video(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: runs one subcommand; user errors and the operating system's errors (read-only
    folder, full disk, ...) print one line and exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = f"facekeys {args.run.__name__.removeprefix('_').removeprefix('run_')}"
    try:
        return args.run(args)
    except FacekeysError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        print(f"{command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
