"""Face crop for the stream: fixed box, whole frame, and the Haar detector's fallbacks."""

import numpy as np
import pytest

from fad_edge.runtime.face import FaceCropper


def test_box_and_none_modes():
    frame = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    assert FaceCropper("none")(frame) is frame
    crop = FaceCropper("box", box=(10, 20, 30, 40))(frame)
    assert crop.shape == (40, 30, 3) and np.array_equal(crop, frame[20:60, 10:40])
    # a box reaching outside the frame is clamped, never empty
    assert FaceCropper("box", box=(110, 90, 50, 50))(frame).shape == (10, 10, 3)
    with pytest.raises(ValueError):
        FaceCropper("box")


def test_detector_falls_back_to_the_whole_frame_without_a_face():
    cropper = FaceCropper("detect")
    blank = np.full((120, 160, 3), 128, np.uint8)
    assert cropper(blank).shape == blank.shape
