"""The augment stage's ``preview.png``: a grid of training samples with their points drawn, so a
person can see at a glance what the network is fed."""

from __future__ import annotations

import numpy as np

from facekeys.data.keypoint_formats import point_side


def preview_grid(
    samples: dict[str, np.ndarray], fmt: str, count: int, columns: int = 4
) -> np.ndarray:
    """A BGR grid of samples with points drawn: subject's right red, left blue, midline green."""
    import cv2

    n = len(samples["images"])
    if n == 0:
        return np.zeros((64, 64, 3), np.uint8)
    picks = np.linspace(0, n - 1, min(count, n)).round().astype(int)
    tile = 256
    colors = {"right": (40, 40, 230), "left": (230, 120, 30), "center": (60, 200, 60)}
    rows = -(-len(picks) // columns)
    grid = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
    for k, i in enumerate(picks):
        image = samples["images"][i]
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
        scale = tile / image.shape[0]
        image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_LINEAR)
        for j, (x, y) in enumerate(samples["points"][i]):
            if samples["mask"][i, j]:
                centre = (round((x + 0.5) * scale - 0.5), round((y + 0.5) * scale - 0.5))
                cv2.circle(image, centre, 3, colors[point_side(fmt, j)], -1, cv2.LINE_AA)
        label = f"{samples['names'][i][:22]} c{samples['copy'][i]}" + (
            " flip" if samples["flipped"][i] else ""
        )
        cv2.putText(image, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1)
        r, c = divmod(k, columns)
        grid[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = image
    legend = np.full((24, grid.shape[1], 3), 255, np.uint8)
    for k, (side, color) in enumerate(colors.items()):
        cv2.putText(
            legend, f"subject's {side}" if side != "center" else "midline",
            (8 + 170 * k, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA,
        )  # fmt: skip
    return np.vstack([legend, grid])
