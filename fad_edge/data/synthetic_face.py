"""The synthetic speaker's face, drawn with OpenCV: a head, eyes, brows, nose and mouth moved by the motion signals.

The drawing is part of the data contract: the frames behind every published figure come from it, so a
change here that moves a single pixel changes the datasets (`tests/test_synthetic.py` holds the point
placement to its bit-exact form).
"""

from __future__ import annotations

import cv2
import numpy as np


def canvas_positions(xy: np.ndarray, size: int, rotation: np.ndarray, shift: np.ndarray,
                     centre: np.ndarray) -> np.ndarray:
    """(n, 2) face coordinates -> (n, 2) canvas positions in pixels: each point's `rotation @ v + centre`.

    One batched product computes each point as its own product does, to the bit (a (2, n) product may sum in
    another order), so the frames are those of the datasets behind every published figure, drawn point by point.
    """
    v = xy * size + shift
    return (rotation[None] @ v[:, :, None])[:, :, 0] + centre


def canvas_points(xy: np.ndarray, size: int, rotation: np.ndarray, shift: np.ndarray,
                  centre: np.ndarray) -> np.ndarray:
    """`canvas_positions` as int points with 4 fractional bits (cv2's shift=4)."""
    return np.round(canvas_positions(xy, size, rotation, shift, centre) * 16).astype(np.int64)


def draw_face(canvas: np.ndarray, pose: np.ndarray, smile: float, brow: float, blink: float, mouth: float,
               skin: tuple, offset: tuple[float, float]) -> None:
    """Draw one speaker frame in place: pose = (pitch, yaw, roll) in radians."""
    size = canvas.shape[0]
    pitch, yaw, roll = pose
    cx, cy = size / 2 + offset[0] + yaw * 0.35 * size, size / 2 + offset[1] + pitch * 0.35 * size
    angle = np.degrees(roll)
    rotation = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    shift = np.array([yaw * 0.3 * size, pitch * 0.3 * size])  # features slide as the head turns
    centre = np.array([cx, cy])

    def positions(xy: np.ndarray) -> np.ndarray:
        return canvas_points(xy, size, rotation, shift, centre)

    lift = 0.05 * brow
    # The features' anchor points in one call: the head's centre; per side the eye and the brow's two ends; the nose.
    anchors = [(0, 0)] + [point for side in (-1, 1) for point in (
        (side * 0.13, -0.08), (side * 0.07, -0.17 - lift), (side * 0.2, -0.16 - lift - 0.02 * brow * side * 0))]
    head, left_eye, left_brow, left_brow_end, right_eye, right_brow, right_brow_end, nose_top, nose_tip = (
        (int(x), int(y)) for x, y in positions(np.array(anchors + [(0, -0.02), (0.01, 0.08)], dtype=np.float64)))
    axes = (int(0.34 * size * 16), int(0.44 * size * 16))
    cv2.ellipse(canvas, head, axes, angle, 0, 360, skin, -1, cv2.LINE_AA, 4)
    dark = tuple(int(c * 0.35) for c in skin)
    for eye, brow_start, brow_end in ((left_eye, left_brow, left_brow_end), (right_eye, right_brow, right_brow_end)):
        opening = max(1, int(0.035 * size * 16 * (1 - 0.9 * blink)))
        cv2.ellipse(canvas, eye, (int(0.06 * size * 16), opening), angle, 0, 360, (250, 250, 250), -1, cv2.LINE_AA, 4)
        cv2.circle(canvas, eye, int(0.022 * size * 16 * (1 - 0.9 * blink)) + 1, (40, 30, 20), -1, cv2.LINE_AA, 4)
        cv2.line(canvas, brow_start, brow_end, dark, max(1, size // 40), cv2.LINE_AA, 4)
    cv2.line(canvas, nose_top, nose_tip, dark, max(1, size // 64), cv2.LINE_AA, 4)
    width = 0.11 * (1 + 0.3 * smile)
    xs = np.linspace(-width, width, 15)
    curve = (xs / width) ** 2
    upper = 0.2 - 0.06 * smile * curve - 0.01 - 0.5 * 0.09 * mouth * (1 - curve)
    lower = 0.2 - 0.06 * smile * curve + 0.01 + 0.5 * 0.09 * mouth * (1 - curve) + 0.02 * smile * (1 - curve)
    outline = np.concatenate([np.stack([xs, upper], 1), np.stack([xs[::-1], lower[::-1]], 1)])
    cv2.fillPoly(canvas, [positions(outline).astype(np.int32)], (150, 40, 50), cv2.LINE_AA, 4)


def speaker_video(rng: np.random.Generator, size: int, head: np.ndarray, smile: np.ndarray, brow: np.ndarray,
                  blink: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """(n, size, size, 3) uint8 RGB frames of the speaker's face, one per row of the motion signals, over a
    background, lighting gradient and framing jitter drawn from `rng`."""
    n = len(head)
    background = np.array(rng.uniform(30, 220, 3))
    skin = tuple(float(c) for c in rng.uniform([150, 100, 70], [240, 190, 160]))
    gradient = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.2), size)
    light = (gradient[None, :, None] if rng.random() < 0.5 else gradient[:, None, None]).astype(np.float32)
    jitter = np.cumsum(rng.normal(0, 0.3, (n, 2)), axis=0)
    jitter = np.clip(jitter, -3, 3)
    frames = np.empty((n, size, size, 3), np.uint8)
    base = np.empty((size, size, 3), np.uint8)
    base[:] = background.astype(np.uint8)
    for i in range(n):
        canvas = base.copy()
        draw_face(canvas, head[i], smile[i], brow[i], blink[i], mouth[i], skin, (jitter[i, 0], jitter[i, 1]))
        frames[i] = np.clip(canvas * light, 0, 255).astype(np.uint8)
    return frames
