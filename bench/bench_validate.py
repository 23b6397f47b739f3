"""Validation benchmark on the real data: rows/s with start-up included, against a baseline.

Each case runs in a fresh process, as a user's command would. The baseline in the same run is the
floor of a naive loader: pandas reads the CSV and every image is decoded on one thread, with no
checks, no Great Expectations and no outputs.

Usage: python bench/bench_validate.py [--data ../shared/data]
Prints one line per case: case, rows, seconds, rows/s, peak RSS, time relative to the baseline.
Goal (issue 2): the youtube-faces-68 training CSV (3462 images) validated in under 10 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timed

BASELINE = """
import sys, cv2, numpy as np, pandas as pd
cv2.setNumThreads(1)
df = pd.read_csv(sys.argv[1])
if len(sys.argv) > 2:
    for name in df.iloc[:, 0]:
        data = open(sys.argv[2] + "/" + name, "rb").read()
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
"""


def goal(name: str, seconds: float) -> str:
    if not name.startswith("youtube68"):
        return ""
    return f" | goal<10s {'MET' if seconds < 10 else 'MISSED'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    repo = Path(__file__).resolve().parents[1]
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data")
    args = parser.parse_args()
    yt = args.data / "youtube-faces-68"
    if not (yt / "training_frames_keypoints.csv").is_file():
        sys.exit(f"real data not found under {args.data}")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.data / "kaggle-format-15pt" / "training.zip") as zf:
            zf.extract("training.csv", tmp)
        kaggle_csv = str(Path(tmp) / "training.csv")
        yt_csv, yt_images = str(yt / "training_frames_keypoints.csv"), str(yt / "training")
        cases = [
            ("youtube68_training", 3462, [py, "-c", BASELINE, yt_csv, yt_images],
             [py, "-m", "facekeys.cli", "validate", "--format", "youtube68", "--csv", yt_csv,
              "--images", yt_images, "--out", f"{tmp}/yt"]),
            ("kaggle15_training", 3462, [py, "-c", BASELINE, kaggle_csv],
             [py, "-m", "facekeys.cli", "validate", "--format", "kaggle15", "--csv", kaggle_csv,
              "--out", f"{tmp}/kaggle"]),
        ]  # fmt: skip
        print(f"# cpus={os.cpu_count()} python={sys.version.split()[0]}")
        for name, rows, baseline_cmd, cmd in cases:
            base_s, base_mb, _ = timed(baseline_cmd)
            seconds, peak_mb, _ = timed(cmd)
            print(
                f"{name}: rows={rows} seconds={seconds:.2f} rows_per_s={rows / seconds:.0f} "
                f"peak_rss_mb={peak_mb:.0f} | baseline_naive_load seconds={base_s:.2f} "
                f"rows_per_s={rows / base_s:.0f} peak_rss_mb={base_mb:.0f} "
                f"| ratio={seconds / base_s:.2f}"
                + (
                    f" | goal<10s {'MET' if seconds < 10 else 'MISSED'}"
                    if "youtube" in name
                    else ""
                )
            )


if __name__ == "__main__":
    main()
