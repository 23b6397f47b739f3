"""The One Euro filter (Casiez, Roussel and Vogel, CHI 2012): smoothing that removes jitter at
rest without lagging behind fast motion.

A first-order low-pass filter whose cutoff frequency rises with the signal's speed: a slowly
moving point is smoothed hard (jitter goes), a fast one barely (no lag). Each coordinate is
filtered on its own. Time comes from the frames' timestamps, so the filter behaves the same at
any frame rate and across dropped frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroSettings:
    """How much to smooth.

    Attributes:
        min_cutoff: Cutoff frequency at rest, Hz: lower smooths more (and lags more when slow).
        beta: How fast the cutoff rises with speed, per (face size / s): higher lags less.
        d_cutoff: Cutoff frequency of the speed estimate, Hz.
    """

    min_cutoff: float = 1.0
    beta: float = 50.0
    d_cutoff: float = 1.0

    def check(self) -> None:
        """Raises ValueError naming a setting out of range."""
        for name in ("min_cutoff", "d_cutoff"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a number >= 0, not {self.beta}")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass filter with ``cutoff`` Hz sampled every
    ``dt`` seconds."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over arrays of any fixed shape (e.g. ``(P, 2)`` keypoints).

    Args:
        settings: Cutoffs and speed coefficient.
    """

    def __init__(self, settings: OneEuroSettings | None = None) -> None:
        self.settings = settings or OneEuroSettings()
        self.settings.check()
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time = 0.0

    def reset(self) -> None:
        """Forgets the past: the next value passes through unchanged (a new face, a jump)."""
        self._value = self._speed = None

    def __call__(self, value: np.ndarray, time_s: float, scale: float = 1.0) -> np.ndarray:
        """Filters one sample.

        Args:
            value: The new raw sample; NaN entries pass through and restart their coordinate.
            time_s: Its timestamp, seconds; a time that does not advance keeps the last output.
            scale: Size of the tracked object in the value's unit (a face's spread in pixels):
                speeds are divided by it, so ``beta`` means the same for a small and a large face.

        Returns:
            The smoothed sample, same shape as ``value``.
        """
        value = np.asarray(value, np.float64)
        if self._value is None or self._value.shape != value.shape:
            self._value, self._speed, self._time = value.copy(), np.zeros_like(value), time_s
            return value.copy()
        dt = time_s - self._time
        if not dt > 0:
            return self._value.copy()
        s = self.settings
        speed = (value - self._value) / dt
        a_d = _alpha(s.d_cutoff, dt)
        self._speed = a_d * speed + (1.0 - a_d) * self._speed
        cutoff = s.min_cutoff + s.beta * np.abs(self._speed) / max(scale, 1e-9)
        a = _alpha(cutoff, dt)
        smoothed = a * value + (1.0 - a) * self._value
        # A coordinate that was or is NaN restarts from the raw value (no NaN lingers).
        restart = ~np.isfinite(smoothed)
        smoothed[restart] = value[restart]
        self._speed[~np.isfinite(self._speed)] = 0.0
        self._value, self._time = smoothed, time_s
        return smoothed.copy()
