"""Face crop for live frames and for files: a face detector (OpenCV's Haar cascade or dlib's HOG), a box, or none.

The model was trained on frames that a face fills, so a speaker filmed in a room must be cropped
to the face first. The detector runs every `every` frames; its box is followed from frame to frame
and smoothed (`BoxSmoother`), so a jittery box does not shake the crop, and a frame where no face
is found keeps the last box. A detection away from the face being followed (another face, or a
false positive on a textured wall) moves the crop only once it has been seen `confirm` times with
no sight of the followed face in between. Until a face has been seen, the whole frame is used (a
file fills those frames in afterwards with the first face found, see `track_faces`).

The detector was chosen by measurement on real photographs (bench/face_detectors.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import cv2.data
import numpy as np

from fad_edge.errors import DataError, FadEdgeError
from fad_edge.runtime.box_filter import BoxSmoother

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
MIN_BOX_SIDE = 2  # pixels of a box, and of its part inside the frame
FACE_MODES = ("detect", "none", "box")


class FaceDetector(Protocol):
    name: str

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Face boxes (K, 4) as x, y, width, height in the pixels of an (H, W, 3) uint8 RGB frame."""
        ...


@dataclass
class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade on a grey copy whose longer side is at most `max_side`."""

    max_side: int = 640  # detect on a copy this size: smaller is faster but misses small faces
    scale_factor: float = 1.1
    min_neighbors: int = 4
    min_size: int = 24  # smallest face, in pixels of the downscaled copy
    cascade: str = "haarcascade_frontalface_default.xml"

    def __post_init__(self) -> None:
        path = cv2.data.haarcascades + self.cascade
        self._classifier = cv2.CascadeClassifier(path)
        if self._classifier.empty():
            raise RuntimeError(f"OpenCV's face cascade is missing ({path}); opencv-python-headless 5 dropped it")
        short = self.cascade.removeprefix("haarcascade_frontalface_").removesuffix(".xml")
        self.name = f"opencv-haar {short} @{self.max_side}"

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        scale = min(1.0, self.max_side / max(frame.shape[:2]))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        faces = self._classifier.detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                  minSize=(self.min_size, self.min_size))
        return np.asarray(faces, np.float64).reshape(-1, 4) / scale


@dataclass
class HogFaceDetector:
    """dlib's HOG frontal-face detector, on a copy whose longer side is at most `max_side`.

    Needs dlib (`pip install 'fad-edge[face]'`, which brings the dlib-bin wheel). `upsample` doubles
    the copy that many times first: 1 finds faces down to about 40 px in a 640 px frame.
    """

    max_side: int = 640
    upsample: int = 1
    grey: bool = False  # detect on a grey copy: faster, see bench/results/face_detectors.md

    def __post_init__(self) -> None:
        import dlib  # optional: ImportError tells the caller to fall back

        self._detector = dlib.get_frontal_face_detector()
        self.name = f"dlib-hog upsample {self.upsample}{' grey' if self.grey else ''} @{self.max_side}"

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        scale = min(1.0, self.max_side / max(frame.shape[:2]))
        small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
        image = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if self.grey else np.ascontiguousarray(small)
        found = self._detector(image, self.upsample)
        return np.array([[r.left(), r.top(), r.width(), r.height()] for r in found], np.float64).reshape(-1, 4) / scale


def file_detector() -> tuple[FaceDetector, str | None]:
    """The detector for files, chosen by measurement: dlib's HOG where dlib is installed, else OpenCV's Haar.

    Returns the detector and, for the fallback, a note saying what is missing.
    """
    try:
        return HogFaceDetector(), None
    except ImportError:
        note = ("dlib is not installed, so OpenCV's Haar cascade is used: it misses more turned and small faces "
                "(pip install 'fad-edge[face]')")
        return HaarFaceDetector(max_side=640, cascade="haarcascade_frontalface_alt2.xml"), note


def checked_box(box: object) -> Box:
    """A box given in code: four whole pixel numbers x, y, width, height, with width and height at least 2."""
    try:
        values = [float(v) for v in box]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) and v == int(v) for v in values) \
            or min(values[2:]) < MIN_BOX_SIDE:
        raise ValueError(f"face mode 'box' needs a box of whole pixels (x, y, width, height), width and height at "
                         f"least {MIN_BOX_SIDE}, got {box!r}")
    x, y, w, h = (int(v) for v in values)
    return x, y, w, h


def parse_box(text: str) -> Box:
    """'x,y,w,h' (pixels, w and h at least 2) -> a Box; a clear error for anything else."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y, w, h = (int(part) for part in parts)
    except ValueError:
        raise FadEdgeError(f"--box {text!r} is not x,y,w,h in whole pixels (e.g. --box 200,80,160,160)") from None
    if min(w, h) < MIN_BOX_SIDE:
        raise FadEdgeError(f"--box {text!r}: width and height must be at least {MIN_BOX_SIDE} pixels")
    return x, y, w, h


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) with each of boxes b (K, 4), all x, y, width, height."""
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2]), np.minimum(a[1] + a[3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (a[2] * a[3] + b[:, 2] * b[:, 3] - inter)


@dataclass
class FaceCropper:
    """mode: "none" (whole frame), "detect" (a face detector), or "box" with `box` given."""

    mode: str = "detect"
    box: Box | None = None
    every: int = 5  # run the detector on every n-th frame
    margin: float = 0.25  # grow the face box by this share of its side on each side
    confirm: int = 3  # detections away from the followed face (and none on it) before the crop moves there
    detector: FaceDetector | None = None  # default: HaarFaceDetector(max_side=320), cheap enough for a stream
    smoother: BoxSmoother | None = None  # default: a BoxSmoother at 30 / every updates per second
    frames: int = field(default=0, init=False)  # frames seen in detect mode
    frames_checked: int = field(default=0, init=False)  # frames the detector ran on
    frames_without_face: int = field(default=0, init=False)  # ... and found no face (the last box was kept)
    note: str | None = field(default=None, init=False)  # what a person should know about the detector

    def __post_init__(self) -> None:
        if self.mode not in FACE_MODES:
            raise ValueError(f"face mode must be detect, none or box, got {self.mode!r}")
        if self.mode == "box":
            self.box = checked_box(self.box)
        if self.mode == "detect" and self.detector is None:
            self.detector = HaarFaceDetector(max_side=320)
        if self.smoother is None:
            self.smoother = BoxSmoother(rate_hz=30.0 / self.every)
        self._away: np.ndarray | None = None  # a detection away from the followed face, and how often seen
        self._away_count = 0

    @classmethod
    def for_files(cls, mode: str = "detect", box: Box | None = None) -> FaceCropper:
        """The cropper `fad-edge generate` uses: `file_detector()` on every frame."""
        if mode != "detect":
            return cls(mode, box, every=1)
        detector, note = file_detector()
        cropper = cls(mode, box, every=1, detector=detector)
        cropper.note = note
        return cropper

    @property
    def detector_name(self) -> str | None:
        return self.detector.name if self.mode == "detect" and self.detector is not None else None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The face crop of an (H, W, 3) uint8 frame (square in detect mode), or the frame itself."""
        box = self.locate(frame)
        return frame if box is None else crop(frame, box, square=self.mode == "detect")

    def locate(self, frame: np.ndarray) -> np.ndarray | None:
        """The crop box (x, y, width, height) for this frame; None for the whole frame."""
        if self.mode == "none":
            return None
        if self.mode == "box":
            box = np.asarray(self.box, np.float64)
            height, width = frame.shape[:2]
            inside_x = min(box[0] + box[2], width) - max(box[0], 0)
            inside_y = min(box[1] + box[3], height) - max(box[1], 0)
            if min(inside_x, inside_y) < MIN_BOX_SIDE:
                raise DataError(f"the face box {self.box} (x, y, width, height) lies outside the "
                                f"{width}x{height} frame")
            return box
        assert self.detector is not None and self.smoother is not None
        if self.frames % self.every == 0:
            self.frames_checked += 1
            face = self._follow(self.detector(frame))
            if face is None:
                self.frames_without_face += 1
            self.smoother.update(face)
        self.frames += 1
        face = self.smoother.box
        if face is None:
            return None
        grow = self.margin * face[2]
        return face + np.array([-grow, -grow, 2 * grow, 2 * grow])

    def _follow(self, faces: np.ndarray) -> np.ndarray | None:
        """The detection that continues the followed face; a new face only once seen `confirm` times in a row."""
        assert self.smoother is not None
        if len(faces) == 0:
            return None
        current = self.smoother.box
        if current is None:
            return faces[np.argmax(faces[:, 2] * faces[:, 3])]
        overlap = box_iou(current, faces)
        if overlap.max() > 0.1:
            self._away, self._away_count = None, 0
            return faces[np.argmax(overlap)]
        largest = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        seen_before = self._away is not None and box_iou(self._away, largest[None])[0] > 0.3
        self._away, self._away_count = largest, (self._away_count + 1 if seen_before else 1)
        if self._away_count < self.confirm:
            return None
        self.smoother.reset()  # the face has moved for good (or the followed one was a false positive)
        self._away, self._away_count = None, 0
        return largest


def crop(frame: np.ndarray, box: np.ndarray, square: bool = False) -> np.ndarray:
    """The part of the frame inside box, never empty (`crop_region`)."""
    x, y, w, h = crop_region(frame.shape[:2], box, square)
    return frame[y : y + h, x : x + w]


def crop_region(frame_shape: tuple[int, ...], box: np.ndarray, square: bool = False) -> tuple[int, int, int, int]:
    """The region (x, y, width, height, whole pixels inside the frame) that a crop to `box` takes.

    A box is moved inside the frame and shrunk about its centre only where it is larger than the
    frame, so its shape is kept: a face box given or found near an edge is never squeezed. A square
    box is kept square (shrunk to the frame's shorter side if larger), so that resizing it to the
    model's square input never stretches the face.
    """
    height, width = frame_shape[:2]
    x, y, w, h = (float(v) for v in box)
    if square:
        side = min(w, height, width)
        x, y, w, h = x + (w - side) / 2, y + (h - side) / 2, side, side
    else:
        fit_w, fit_h = min(w, width), min(h, height)
        x, y, w, h = x + (w - fit_w) / 2, y + (h - fit_h) / 2, fit_w, fit_h
    x, y = float(np.clip(x, 0, width - w)), float(np.clip(y, 0, height - h))
    x0, y0 = int(np.clip(round(x), 0, width - 1)), int(np.clip(round(y), 0, height - 1))
    x1, y1 = int(np.clip(round(x + w), x0 + 1, width)), int(np.clip(round(y + h), y0 + 1, height))
    return x0, y0, x1 - x0, y1 - y0


@dataclass
class FaceTrack:
    """Where the face is in every frame of a file, and how often it was not found."""

    boxes: list[np.ndarray | None]  # the region cropped in each frame (inside it); None = the whole frame
    frames_without_face: int  # frames where the detector ran and found no face
    face_found: bool  # False when detect mode found no face in any frame (the whole frame was used)
    mode: str
    detector: str | None
    note: str | None = None

    def record(self) -> dict:
        """The JSON-ready summary that generate stores."""
        return {"mode": self.mode, "detector": self.detector, "frames_without_face": self.frames_without_face,
                "face_found": self.face_found,
                "boxes": [None if b is None else [int(round(v)) for v in b] for b in self.boxes]}


def track_faces(frames: Iterable[np.ndarray], cropper: FaceCropper) -> FaceTrack:
    """Crop boxes for all frames of a file, read once; frames before the first face found take that face's box."""
    boxes: list[np.ndarray | None] = []
    shape: tuple[int, int] | None = None
    square = cropper.mode == "detect"
    for frame in frames:
        if shape is None:
            shape = frame.shape[:2]
            _check_box_inside(cropper, shape)
        box = cropper.locate(frame)
        # The region each crop takes, as generate records it (a box near an edge is moved inside the frame).
        boxes.append(None if box is None else np.array(crop_region(shape, box, square), np.float64))
    first = next((box for box in boxes if box is not None), None)
    face_found = cropper.mode != "detect" or first is not None
    if first is not None:
        lead = next(i for i, box in enumerate(boxes) if box is not None)
        boxes[:lead] = [first] * lead
    return FaceTrack(boxes, cropper.frames_without_face, face_found, cropper.mode, cropper.detector_name, cropper.note)


def _check_box_inside(cropper: FaceCropper, shape: tuple[int, int]) -> None:
    """A --box outside the video, in --box's words, before any frame is cropped."""
    if cropper.mode != "box":
        return
    height, width = shape
    x, y, w, h = cropper.box  # type: ignore[misc]
    if w <= 0 or h <= 0 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise DataError(f"--box {x},{y},{w},{h} lies outside the {width}x{height} video; give x,y,w,h inside it")


def crop_faces(frames: Iterable[np.ndarray], boxes: Iterable[np.ndarray | None], mode: str,
               sizes: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """Each frame's face crop at each of `sizes` (INTER_AREA), as (T, size, size, 3) arrays, and T: frames are
    read once and only their crops kept, so a long video costs the crops' memory, not its frames'. Frames and
    boxes pair up until either ends."""
    crops: dict[int, list[np.ndarray]] = {size: [] for size in sizes}
    square, count = mode == "detect", 0
    for frame, box in zip(frames, boxes):
        face = frame if box is None else crop(frame, box, square)
        for size, kept in crops.items():
            kept.append(cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA))
        count += 1
    return {size: np.stack(kept) for size, kept in crops.items() if kept}, count
