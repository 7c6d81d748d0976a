"""`fad-edge generate` on media files: preview video, the video's own audio track, other frame rates."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from helpers import run_cli, tiny_checkpoint

from fad_edge.data import layout
from fad_edge.data.media import read_audio_track, write_video
from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.generate import retime_frames

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session_folder(tmp_path_factory) -> Path:
    session = generate_session(4, SyntheticConfig(seconds=2.0, image_size=64))
    return layout.write_session(tmp_path_factory.mktemp("media") / "s", session.frames, session.audio, 16000,
                                session.listener, session.speaker)


def _video_with_audio(path: Path, frames: np.ndarray, audio: np.ndarray, rate: int) -> Path:
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=30)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None]
        chunk = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        chunk.sample_rate = rate
        for packet in sound.encode(chunk):
            container.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode(None):
                container.mux(packet)
    return path


def test_preview_mp4_has_one_frame_per_motion_frame(session_folder, tmp_path, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", checkpoint,
                           "--video", session_folder / "speaker.mp4", "--audio", session_folder / "speaker.wav",
                           "--out", tmp_path / "out", "--preview")
    assert code == 0, output
    capture = cv2.VideoCapture(str(tmp_path / "out" / "preview.mp4"))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    capture.release()
    assert ok and count == 60 and frame.shape == (256, 512, 3)
    # the listener half is a drawing, not a copy of the speaker
    assert np.abs(frame[:, 256:].astype(int) - frame[:, :256].astype(int)).mean() > 10


def test_audio_from_the_video_track_when_no_audio_file(tmp_path, monkeypatch, capsys):
    session = generate_session(5, SyntheticConfig(seconds=1.0 + 1 / 3, image_size=64))
    video = _video_with_audio(tmp_path / "talk.mkv", session.frames, session.audio, 16000)
    samples, rate = read_audio_track(video)
    assert rate == 16000 and abs(len(samples) - len(session.audio)) < 2000
    assert np.corrcoef(samples[:8000], session.audio[:8000])[0, 1] > 0.99
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", video, "--out", tmp_path / "out")
    assert code == 0, output
    assert np.load(tmp_path / "out" / "listener_coeffs.npy").shape == (40, 56)


def test_a_video_without_audio_and_no_audio_file_is_a_clear_error(session_folder, tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", session_folder / "speaker.mp4", "--out", tmp_path / "out")
    assert code == 2 and "no audio track" in output and "Traceback" not in output


def test_a_video_with_no_readable_frames_is_a_clear_error(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", empty, "--out", tmp_path / "out")
    assert code == 2 and "Traceback" not in output


def test_other_frame_rates_are_brought_to_30_fps(tmp_path):
    frames = np.arange(25, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    retimed = retime_frames(frames, 25.0)
    assert len(retimed) == 30 and retimed[0, 0, 0, 0] == 0 and retimed[-1, 0, 0, 0] == 24
    assert np.all(np.diff(retimed[:, 0, 0, 0].astype(int)) >= 0)
    write_video(tmp_path / "v.mp4", frames, 25.0)
