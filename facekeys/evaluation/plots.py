"""Pictures of an evaluation: the gallery of best, median and worst predictions, the error plots
(CED curves and per-landmark NME), and figures as PNG bytes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


def draw_gallery(
    images: list[np.ndarray],
    pred: np.ndarray,
    target: np.ndarray,
    nme: np.ndarray,
    names: list[str],
    tile: int = 256,
) -> np.ndarray:
    """A BGR row per group (best, median, worst NME): ground truth green, prediction red."""
    import cv2

    from facekeys.data.images import to_model_color

    order = np.argsort(np.where(np.isnan(nme), np.inf, nme))
    order = order[: int((~np.isnan(nme)).sum())]
    if len(order) == 0:
        return np.full((tile, tile, 3), 255, np.uint8)
    k = min(4, len(order))
    middle = len(order) // 2 - k // 2
    groups = {
        "best": order[:k],
        "median": order[middle : middle + k],
        "worst": order[::-1][:k],
    }
    rows = []
    for label, picks in groups.items():
        row = np.full((tile + 20, tile * k, 3), 255, np.uint8)
        cv2.putText(row, label, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for c, i in enumerate(picks):
            image = cv2.cvtColor(to_model_color(images[i], "gray"), cv2.COLOR_GRAY2BGR)
            scale = tile / max(image.shape[:2])
            image = cv2.resize(
                image, (round(image.shape[1] * scale), round(image.shape[0] * scale))
            )
            canvas = np.zeros((tile, tile, 3), np.uint8)
            canvas[: image.shape[0], : image.shape[1]] = image
            for points, color in ((target[i], (60, 200, 60)), (pred[i], (40, 40, 230))):
                for x, y in points:
                    if not np.isnan(x):
                        centre = (round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5))
                        cv2.circle(canvas, centre, 2, color, -1, cv2.LINE_AA)
            text = f"{Path(names[i]).name[:24]} {100 * nme[i]:.1f}%"
            cv2.putText(canvas, text, (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 255, 255), 1, cv2.LINE_AA)  # fmt: skip
            row[20:, c * tile : (c + 1) * tile] = canvas
        rows.append(row)
    legend = np.full((22, tile * k, 3), 255, np.uint8)
    cv2.putText(legend, "green: ground truth   red: prediction", (4, 15),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return np.vstack([legend, *rows])


def error_plots(results: dict[str, dict], fmt_name: str) -> bytes:
    """CED curves (model and mean-shape baseline, per split) and per-landmark NME: PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, (label, result) in enumerate(results.items()):
        curve = result["ced"]
        style = "--" if "baseline" in label else "-"
        left.plot([100 * p["nme"] for p in curve], [p["share"] for p in curve], style,
                  color=f"C{k}", label=label)  # fmt: skip
    left.set_xlabel("NME (% of outer-eye-corner distance)")
    left.set_ylabel("share of images")
    left.set_title("cumulative error distribution")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    width = 0.4
    model_splits = [label for label in results if "baseline" not in label]
    for k, label in enumerate(model_splits):
        values = [100 * (v or 0.0) for v in results[label]["metrics"]["nme_by_landmark"]]
        xs = np.arange(len(values)) + (k - 0.5) * width
        right.bar(xs, values, width, label=label, color=f"C{k}")
    right.set_xlabel("landmark index")
    right.set_ylabel("NME (%)")
    right.set_title("error per landmark")
    right.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
