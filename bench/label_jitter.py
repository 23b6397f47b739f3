"""The labels' own frame-to-frame jitter: the reference for `bench_video.py`'s jitter.

youtube-faces-68 holds consecutive frames of the same clips (``Name_41.jpg``, ``Name_42.jpg``).
Where two consecutive frames are nearly the same picture (same size, mean absolute gray
difference below ``--still``: the face did not move), their labels should be equal, so how far
the labelled points move between them is the labelling noise as a viewer would see it from frame
to frame (with whatever motion is left: an upper bound). Reported like the video benchmark's
jitter: the mean distance a point moves, over the outer-eye-corner distance, in %.

Usage: python bench/label_jitter.py [--data ../shared/data/youtube-faces-68] [--still 4.0]
Prints one line: pairs found, still pairs, and the labels' jitter on them (mean and median).
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from facekeys.data.images import ImageLimits, load_image
from facekeys.data.images import to_model_color as gray_of

PAIR = (36, 45)  # outer eye corners


def consecutive_pairs(names: list[str]) -> list[tuple[int, int]]:
    """Row pairs of the same clip whose frame numbers follow each other."""
    clips: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row, name in enumerate(names):
        found = re.fullmatch(r"(.+)_(\d+)\.\w+", name)
        if found:
            clips[found[1]].append((int(found[2]), row))
    pairs = []
    for frames in clips.values():
        frames.sort()
        pairs += [(i, j) for (a, i), (b, j) in itertools.pairwise(frames) if b == a + 1]
    return pairs


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/youtube-faces-68"))
    parser.add_argument("--still", type=float, default=4.0, help="gray difference (0-255)")
    args = parser.parse_args()
    table = pd.read_csv(args.data / "training_frames_keypoints.csv")
    names = table.iloc[:, 0].astype(str).tolist()
    points = table.iloc[:, 1:].to_numpy(np.float64).reshape(-1, 68, 2)
    pairs = consecutive_pairs(names)
    moves = []
    for i, j in pairs:
        a, b = (gray_of(load_image(args.data / "training", names[k], ImageLimits()), "gray")
                for k in (i, j))  # fmt: skip
        if a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).mean() >= args.still:
            continue
        eyes = np.linalg.norm(points[i, PAIR[0]] - points[i, PAIR[1]])
        moves.append(np.linalg.norm(points[i] - points[j], axis=1).mean() / eyes)
    moves_pct = 100 * np.array(moves)
    print(
        f"label_jitter: consecutive_pairs={len(pairs)} still_pairs={len(moves)} "
        f"(mean gray difference < {args.still}) | jitter={moves_pct.mean():.2f}% "
        f"median={np.median(moves_pct):.2f}% of the outer-eye-corner distance"
    )


if __name__ == "__main__":
    main()
