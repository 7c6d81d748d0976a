"""Face crop for the stream: fixed box, whole frame, and the Haar detector's fallbacks."""

import numpy as np
import pytest

from fad_edge.runtime.face import FaceCropper


def test_box_and_none_modes():
    frame = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    assert FaceCropper("none")(frame) is frame
    crop = FaceCropper("box", box=(10, 20, 30, 40))(frame)
    assert crop.shape == (40, 30, 3) and np.array_equal(crop, frame[20:60, 10:40])
    # a box reaching outside the frame is moved inside it, keeping its shape (never cut, so never stretched)
    assert np.array_equal(FaceCropper("box", box=(110, 90, 50, 50))(frame), frame[50:100, 70:120])
    # ... and one larger than the frame is shrunk about its centre to fit
    assert FaceCropper("box", box=(-100, 10, 400, 80))(frame).shape == (80, 120, 3)
    with pytest.raises(ValueError):
        FaceCropper("box")


def test_detector_falls_back_to_the_whole_frame_without_a_face():
    cropper = FaceCropper("detect")
    blank = np.full((120, 160, 3), 128, np.uint8)
    assert cropper(blank).shape == blank.shape
