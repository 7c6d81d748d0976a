"""A preview a person can judge by eye: the speaker's video beside a stylized listener face.

The face is drawn from the coefficients of each frame: head rotation turns, nods and tilts it,
the jaw opens the mouth, and the three leading expression components (standardized with the
model's statistics, so that one standard deviation is a visible change) raise the brows, close
the eyes and curve the mouth. It is a drawing, not a FLAME render, made so that timing and the
size of reactions are easy to see.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from fad_edge.constants import EXPRESSION, FPS, HEAD, JAW
from fad_edge.data.media import write_video

SIDE = 256


def draw_listener(coefficients: np.ndarray, mean: np.ndarray, std: np.ndarray, side: int = SIDE) -> np.ndarray:
    """One (side, side, 3) uint8 RGB image of the listener for one frame's 56 coefficients."""
    z = (coefficients - mean) / np.maximum(std, 1e-6)
    pitch, yaw, roll = coefficients[HEAD]
    jaw = max(float(coefficients[JAW][0]), 0.0)
    brow, blink, smile = (float(np.clip(v, -3, 3)) for v in z[EXPRESSION][:3])
    canvas = np.full((side, side, 3), 235, np.uint8)
    centre = np.array([side / 2 + side * 0.8 * math.sin(yaw), side / 2 + side * 0.8 * math.sin(pitch)])
    angle = math.degrees(roll)
    rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), -angle, 1.0)

    def point(dx: float, dy: float) -> tuple[int, int]:
        x, y = rotation @ np.array([centre[0] + dx * side, centre[1] + dy * side, 1.0])
        return int(round(x)), int(round(y))

    squash = max(0.55, math.cos(yaw))
    cv2.ellipse(canvas, point(0, 0), (int(0.3 * side * squash), int(0.38 * side)), -angle, 0, 360, (236, 196, 160), -1)
    eye_open = max(1, int(0.03 * side * (1 - 0.3 * blink)))
    for side_sign in (-1, 1):
        dx = side_sign * 0.11 * squash + 0.05 * math.sin(yaw)
        cv2.ellipse(canvas, point(dx, -0.06), (int(0.035 * side), eye_open), -angle, 0, 360, (40, 40, 40), -1)
        lift = -0.15 - 0.025 * brow
        cv2.line(canvas, point(dx - 0.05, lift + 0.01 * side_sign * 0), point(dx + 0.05, lift), (90, 60, 40), 4)
    mouth_y, width = 0.17, 0.12 * squash
    opening = int(min(0.12, jaw * 0.6) * side) + 1
    curve = int(np.clip(smile, -2, 2) * 0.02 * side)
    left, right = point(-width + 0.03 * math.sin(yaw), mouth_y), point(width + 0.03 * math.sin(yaw), mouth_y)
    middle = point(0.03 * math.sin(yaw), mouth_y + curve / side)
    cv2.fillConvexPoly(canvas, np.array([left, (middle[0], middle[1] - opening // 2), right,
                                         (middle[0], middle[1] + opening)], np.int32), (150, 60, 70))
    return canvas


def render_preview(speaker_frames: np.ndarray, motion: np.ndarray, mean: np.ndarray, std: np.ndarray,
                   path: Path, fps: float = FPS) -> Path:
    """An MP4 with the speaker (left) and the listener drawing (right), one frame per motion frame.

    The frames are drawn and written one at a time: a 30-minute preview would otherwise hold 42 GB of them.
    """
    def composed() -> Iterator[np.ndarray]:
        for frame, coefficients in zip(speaker_frames, motion):
            left = cv2.resize(frame, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
            right = draw_listener(coefficients, mean, std)
            both = np.concatenate([left, right], axis=1)
            cv2.putText(both, "speaker", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            cv2.putText(both, "listener (fad-edge)", (SIDE + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40), 1,
                        cv2.LINE_AA)
            yield both

    return write_video(path, composed(), fps)
