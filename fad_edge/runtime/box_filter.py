"""Temporal smoothing of a face box: a one-euro filter on its centre and size, holding on misses.

A detector's box jitters by a few pixels from frame to frame even when the face is still, and the
model sees that jitter as motion of the speaker's face. A fixed low-pass filter trades that jitter
for lag when the speaker really moves; the one-euro filter (Casiez, Roussel and Vogel, CHI 2012)
lowers its cut-off while the box is still and raises it with the box's speed, so it does both. It
is written here (a few lines) rather than taken from a package: the small PyPI ports filter one
scalar at a time and know nothing of boxes, misses or face-relative speed.

The filter runs on (centre x, centre y, log side) of a square box; speed is measured in face sides
per second, so the same settings serve a face of 40 px and of 400 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def _alpha(cutoff_hz: float, rate_hz: float) -> float:
    """Smoothing factor of a first-order low-pass filter at `cutoff_hz` sampled at `rate_hz`."""
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau * rate_hz)


@dataclass
class BoxSmoother:
    """Feed one box per update (x, y, side, side) or None for a miss; get the smoothed box back."""

    rate_hz: float = 30.0  # updates per second (the frame rate divided by how often the detector runs)
    min_cutoff_hz: float = 0.5  # cut-off of a still face: lower is steadier, with more lag
    beta: float = 1.0  # how fast the cut-off rises with the face's speed (per face side per second)
    derivative_cutoff_hz: float = 1.0  # cut-off of the speed estimate itself
    _state: np.ndarray | None = field(default=None, init=False, repr=False)  # (cx, cy, log side)
    _speed: np.ndarray = field(default_factory=lambda: np.zeros(3), init=False, repr=False)

    def reset(self) -> None:
        """Forget the current box: the next box is taken as it is (a new face, or a cut)."""
        self._state = None
        self._speed = np.zeros(3)

    @property
    def box(self) -> np.ndarray | None:
        """The current smoothed box (x, y, side, side), or None before the first box."""
        if self._state is None:
            return None
        cx, cy, log_side = self._state
        side = math.exp(log_side)
        return np.array([cx - side / 2, cy - side / 2, side, side])

    def update(self, box: np.ndarray | None) -> np.ndarray | None:
        """Smooth in a new detection; None (no face found) holds the last box unchanged."""
        if box is None:
            return self.box
        x, y, w, h = np.asarray(box, np.float64)
        side = max(w, h, 1.0)
        measured = np.array([x + w / 2, y + h / 2, math.log(side)])
        if self._state is None:
            self._state = measured
            return self.box
        raw_speed = (measured - self._state) * self.rate_hz
        raw_speed[:2] /= math.exp(self._state[2])  # centre speed in face sides per second
        self._speed += _alpha(self.derivative_cutoff_hz, self.rate_hz) * (raw_speed - self._speed)
        cutoff = self.min_cutoff_hz + self.beta * float(np.abs(self._speed).sum())
        self._state = self._state + _alpha(cutoff, self.rate_hz) * (measured - self._state)
        return self.box
