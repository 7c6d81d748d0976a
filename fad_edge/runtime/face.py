"""Face crop for live frames: OpenCV's bundled Haar cascade, a fixed box, or the whole frame.

The detector runs on a downscaled grey copy every `every` frames and the box is smoothed, so a
missed detection or a jittery box does not make the crop jump; until a face has been seen, and
whenever none is found, the last box (or the whole frame) is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


@dataclass
class FaceCropper:
    """mode: "none" (whole frame), "detect" (Haar cascade), or "box" with `box` given."""

    mode: str = "detect"
    box: Box | None = None
    every: int = 5  # run the detector on every n-th frame
    margin: float = 0.25  # grow the detected box by this share on each side
    smoothing: float = 0.6  # weight of the previous box

    def __post_init__(self) -> None:
        if self.mode not in ("none", "detect", "box"):
            raise ValueError(f"face mode must be none, detect or box, got {self.mode!r}")
        if self.mode == "box" and self.box is None:
            raise ValueError("face mode 'box' needs a box (x, y, width, height)")
        self._cascade = None
        if self.mode == "detect":
            path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
            self._cascade = cv2.CascadeClassifier(path)
            if self._cascade.empty():
                raise RuntimeError(f"OpenCV's face cascade is missing ({path})")
        self._current: np.ndarray | None = None
        self._count = 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The square face crop of an (H, W, 3) uint8 frame."""
        height, width = frame.shape[:2]
        if self.mode == "none":
            return frame
        if self.mode == "box":
            return _crop(frame, np.asarray(self.box, np.float64))
        if self._count % self.every == 0:
            found = self._detect(frame)
            if found is not None:
                self._current = found if self._current is None else self.smoothing * self._current + (1 - self.smoothing) * found
        self._count += 1
        return frame if self._current is None else _crop(frame, self._current)

    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        assert self._cascade is not None
        scale = 320.0 / max(frame.shape[:2]) if max(frame.shape[:2]) > 320 else 1.0
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1.0 else frame
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        faces = self._cascade.detectMultiScale(grey, scaleFactor=1.15, minNeighbors=4, minSize=(24, 24))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3]) / scale
        grow = self.margin * max(w, h)
        side = max(w, h) + 2 * grow
        return np.array([x + w / 2 - side / 2, y + h / 2 - side / 2, side, side])


def _crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Crop a box clamped to the frame (never empty)."""
    height, width = frame.shape[:2]
    x, y, w, h = box
    x0, y0 = int(np.clip(round(x), 0, width - 1)), int(np.clip(round(y), 0, height - 1))
    x1, y1 = int(np.clip(round(x + w), x0 + 1, width)), int(np.clip(round(y + h), y0 + 1, height))
    return frame[y0:y1, x0:x1]
