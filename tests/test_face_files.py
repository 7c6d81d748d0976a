"""Face crop for files: box smoothing, held boxes, the no-face count, and `fad-edge generate --face/--box`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import run_cli, tiny_checkpoint

from fad_edge.data.media import write_video
from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.errors import FadEdgeError
from fad_edge.runtime.box_filter import BoxSmoother
from fad_edge.runtime.face import (
    FaceCropper,
    HaarFaceDetector,
    HogFaceDetector,
    box_iou,
    crop,
    file_detector,
    parse_box,
    track_faces,
)


class ScriptedDetector:
    """Returns the given boxes frame by frame (None = no face), whatever the frame."""

    name = "scripted"

    def __init__(self, script: list[list[tuple[float, float, float, float]] | None]) -> None:
        self.script = iter(script)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        boxes = next(self.script)
        return np.zeros((0, 4)) if boxes is None else np.asarray(boxes, np.float64)


def _cropper(script: list, **options) -> FaceCropper:
    return FaceCropper("detect", every=1, margin=0.0, detector=ScriptedDetector(script), **options)


def test_smoothing_makes_a_jittery_box_steadier_and_still_follows_a_move():
    rng = np.random.default_rng(0)
    truth = np.tile([200.0, 150.0, 100.0, 100.0], (150, 1))
    truth[90:, 0] += np.minimum(np.arange(60) * 4, 120)  # the face then moves 120 px
    jittery = truth + rng.normal(0, 4, truth.shape)
    smoother = BoxSmoother()
    smoothed = np.array([smoother.update(box) for box in jittery])

    def step(boxes: np.ndarray) -> float:
        return float(np.abs(np.diff(boxes[10:90, :2], axis=0)).mean())

    assert step(smoothed) < step(jittery) / 3
    assert np.abs(smoothed[10:90, :2] - truth[10:90, :2]).mean() < np.abs(jittery[10:90, :2] - truth[10:90, :2]).mean()
    assert abs(smoothed[-1, 0] - truth[-1, 0]) < 8  # caught up with the moved face


def test_a_missing_detection_holds_the_last_box_and_is_counted():
    box = (100.0, 80.0, 60.0, 60.0)
    cropper = _cropper([[box], [box], None, None, [box]])
    frame = np.zeros((240, 320, 3), np.uint8)
    located = [cropper.locate(frame) for _ in range(5)]
    assert np.allclose(located[2], located[1]) and np.allclose(located[3], located[1])
    assert cropper.frames_without_face == 2 and cropper.frames_checked == 5


def test_track_faces_fills_the_frames_before_the_first_face_and_counts_misses():
    box = (40.0, 30.0, 50.0, 50.0)
    frames = np.zeros((5, 120, 160, 3), np.uint8)
    track = track_faces(frames, _cropper([None, None, [box], None, [box]]))
    assert track.face_found and track.frames_without_face == 3
    assert all(np.allclose(b, box) for b in track.boxes)  # backfilled, held, and one smooth box
    record = track.record()
    assert record["frames_without_face"] == 3 and record["boxes"][0] == [40, 30, 50, 50]


def test_no_face_in_any_frame_falls_back_to_the_whole_frame_counted():
    frames = np.zeros((4, 120, 160, 3), np.uint8)
    track = track_faces(frames, _cropper([None] * 4))
    assert not track.face_found and track.frames_without_face == 4 and track.boxes == [None] * 4


def test_a_lone_detection_elsewhere_does_not_move_the_crop_but_a_lasting_one_does():
    face, elsewhere = (100.0, 80.0, 60.0, 60.0), (250.0, 20.0, 40.0, 40.0)
    cropper = _cropper([[face], [elsewhere], [face]] + [[elsewhere]] * 3)
    frame = np.zeros((240, 320, 3), np.uint8)
    located = [cropper.locate(frame) for _ in range(6)]
    assert np.allclose(located[1], face) and np.allclose(located[3], face) and np.allclose(located[4], face)
    assert np.allclose(located[5], elsewhere)  # the third time in a row it is taken


def test_square_crops_stay_square_at_the_frame_edge():
    frame = np.zeros((100, 120, 3), np.uint8)
    assert crop(frame, np.array([100.0, 70.0, 40.0, 40.0]), square=True).shape == (40, 40, 3)
    assert crop(frame, np.array([-30.0, -30.0, 200.0, 200.0]), square=True).shape == (100, 100, 3)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,10,0,20", "1.5,2,3,4"])
def test_parse_box_rejects_bad_values(text):
    with pytest.raises(FadEdgeError, match="--box"):
        parse_box(text)
    assert parse_box(" 5, 6,70,80") == (5, 6, 70, 80)


@pytest.mark.parametrize("kind", ["haar", "hog"])
def test_the_file_detectors_find_a_real_face_off_centre(kind):
    """scikit-image's astronaut photograph, her face 80 px wide, in the right part of a 640x480 frame."""
    astronaut = pytest.importorskip("skimage.data").astronaut()
    if kind == "hog":
        pytest.importorskip("dlib")
    detector = HogFaceDetector() if kind == "hog" else HaarFaceDetector(cascade="haarcascade_frontalface_alt2.xml")
    frame = np.full((480, 640, 3), 120, np.uint8)
    head = cv2.resize(astronaut[10:250, 120:330], None, fx=80 / 96, fy=80 / 96, interpolation=cv2.INTER_AREA)
    frame[200 : 200 + head.shape[0], 420 : 420 + head.shape[1]] = head
    face = np.array([420 + (176 - 120) * 80 / 96, 200 + (70 - 10) * 80 / 96, 80, 80])  # her face, hand-labelled
    track = track_faces(np.stack([frame] * 3), FaceCropper("detect", every=1, margin=0.0, detector=detector))
    assert track.face_found and track.frames_without_face == 0
    assert box_iou(face, track.boxes[-1][None])[0] > 0.5


def test_files_fall_back_to_the_haar_cascade_with_a_note_without_dlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    detector, note = file_detector()
    assert isinstance(detector, HaarFaceDetector) and note is not None and "fad-edge[face]" in note
    assert FaceCropper.for_files("detect").note == note


# -- generate end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def room_video(tmp_path_factory) -> tuple[Path, Path, tuple[int, int, int, int]]:
    """A synthetic speaker (128 px) placed off-centre in a 400x300 grey room, and its audio."""
    session = generate_session(4, SyntheticConfig(seconds=1.0 + 1 / 3, image_size=128))
    folder = tmp_path_factory.mktemp("room")
    frames = np.full((len(session.frames), 300, 400, 3), 90, np.uint8)
    placed = (250, 150, 128, 128)
    frames[:, 150:278, 250:378] = session.frames
    video = write_video(folder / "room.mp4", frames, 30.0)
    import soundfile

    soundfile.write(folder / "room.wav", session.audio, 16000)
    return Path(video), folder / "room.wav", placed


def _motion_for(checkpoint: Path, frames: np.ndarray, audio: Path) -> np.ndarray:
    from fad_edge.data.media import read_audio
    from fad_edge.runtime.select import open_runner

    samples, rate = read_audio(audio)
    runner = open_runner(checkpoint, "auto", "fp32")
    return runner.run(frames, samples, rate)


@pytest.mark.slow
def test_generate_finds_the_face_off_centre(room_video, tmp_path, monkeypatch, capsys):
    video, audio, (x, y, w, h) = room_video
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", video, "--audio", audio, "--out", tmp_path / "out")
    assert code == 0, output
    assert "face: found in" in output
    if importlib.util.find_spec("dlib") is None:
        assert "fad-edge[face]" in output  # the note on the fallback, printed as written
    record = json.loads((tmp_path / "out" / "listener.json").read_text())
    face = record["face"]
    assert face["mode"] == "detect" and face["face_found"] and face["frames_without_face"] <= len(face["boxes"]) // 4
    boxes = np.array(face["boxes"], float)
    centre = np.median(boxes[:, :2] + boxes[:, 2:] / 2, axis=0)
    assert np.abs(centre - (x + w / 2, y + h / 2)).max() < 25
    assert 0.8 * w < np.median(boxes[:, 2]) < 1.8 * w


@pytest.mark.slow
def test_generate_says_so_when_no_frame_has_a_face(room_video, tmp_path, monkeypatch, capsys):
    _, audio, _ = room_video
    video = write_video(tmp_path / "empty_room.mp4", np.full((20, 240, 320, 3), 90, np.uint8), 30.0)
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", video, "--audio", audio, "--out", tmp_path / "out")
    assert code == 0, output
    assert "NO FACE FOUND in any of the 20 frames" in output
    face = json.loads((tmp_path / "out" / "listener.json").read_text())["face"]
    assert not face["face_found"] and face["frames_without_face"] == 20 and face["boxes"] == [None] * 20


@pytest.mark.slow
def test_generate_with_a_given_box_and_with_the_whole_frame(room_video, tmp_path, monkeypatch, capsys):
    from fad_edge.data.media import read_video

    video, audio, (x, y, w, h) = room_video
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    frames, _ = read_video(video)
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", checkpoint, "--video", video, "--audio", audio,
                           "--out", tmp_path / "box", "--face", "box", "--box", f"{x},{y},{w},{h}")
    assert code == 0, output
    record = json.loads((tmp_path / "box" / "listener.json").read_text())
    assert record["face"]["mode"] == "box" and record["face"]["boxes"][0] == [x, y, w, h]
    expected = _motion_for(checkpoint, frames[:, y : y + h, x : x + w], audio)
    assert np.allclose(np.load(tmp_path / "box" / "listener_coeffs.npy"), expected, atol=1e-5)

    code, output = run_cli(monkeypatch, capsys, "generate", "--model", checkpoint, "--video", video, "--audio", audio,
                           "--out", tmp_path / "none", "--face", "none")
    assert code == 0, output
    record = json.loads((tmp_path / "none" / "listener.json").read_text())
    assert record["face"] == {"mode": "none", "detector": None, "frames_without_face": 0, "face_found": True,
                              "boxes": [None] * len(frames)}
    assert np.allclose(np.load(tmp_path / "none" / "listener_coeffs.npy"), _motion_for(checkpoint, frames, audio),
                       atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("args", [["--face", "box", "--box", "10,20,30"], ["--box", "a,b,c,d"],
                                  ["--face", "box"], ["--face", "none", "--box", "1,1,5,5"],
                                  ["--face", "eyes"], ["--box", "500,10,40,40"]])
def test_bad_face_options_are_one_clear_line(room_video, tmp_path, monkeypatch, capsys, args):
    video, audio, _ = room_video
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", video, "--audio", audio, "--out", tmp_path / "out", *args)
    assert code == 2 and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1 and ("--box" in output or "--face" in output), output


def test_a_box_near_the_edge_is_recorded_as_the_region_cropped():
    frames = np.zeros((3, 240, 320, 3), np.uint8)
    track = track_faces(frames, FaceCropper.for_files("box", (220, 60, 180, 180)))
    assert track.record()["boxes"] == [[140, 60, 180, 180]] * 3  # moved inside the frame, its shape kept
