"""`fad-edge generate` on media files: preview video, the video's own audio track, other frame rates."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from helpers import run_cli, tiny_checkpoint

from fad_edge.data import layout
from fad_edge.data.media import VideoReader, read_audio_track, write_video
from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.generate import at_30_fps

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
    retimed = np.stack(list(at_30_fps(((frame, i / 25.0) for i, frame in enumerate(frames)), 25.0)))
    assert len(retimed) == 30 and retimed[0, 0, 0, 0] == 0 and retimed[-1, 0, 0, 0] == 24
    assert np.all(np.diff(retimed[:, 0, 0, 0].astype(int)) >= 0)
    write_video(tmp_path / "v.mp4", frames, 25.0)


def _levels_video(path: Path, pts_ms: list[int], audio: np.ndarray | None = None, audio_start: int = 0) -> Path:
    """A video whose frame i is a flat gray of level 3 * i, shown at pts_ms[i]; with audio from `audio_start`
    samples (16 kHz) on the container's clock."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=30)  # lossless: the levels come back exactly
        video.width = video.height = 32
        video.pix_fmt, video.time_base = "yuv444p", Fraction(1, 1000)
        sound = None
        if audio is not None:
            sound = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 3 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in video.encode(frame):
                container.mux(packet)
        if sound is not None and audio is not None:
            chunk = av.AudioFrame.from_ndarray((np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16",
                                               layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 16000, audio_start, Fraction(1, 16000)
            for packet in sound.encode(chunk):
                container.mux(packet)
        for stream in (video, sound):
            if stream is not None:
                for packet in stream.encode(None):
                    container.mux(packet)
    return path


def _shown(frames) -> list[int]:
    return [int(round(float(frame.mean()) / 3)) for frame in frames]


@pytest.mark.parametrize("fps", [1.0, 24.0, 25.0, 30000 / 1001, 30.0, 60.0, 240.0])
def test_a_steady_rate_is_brought_to_30_fps_by_time(fps):
    """For each 1/30 s, the frame on screen: frame floor(j * fps / 30), round(T * 30 / fps) of them."""
    count = 97
    shown = list(at_30_fps(((i, i / fps) for i in range(count)), fps))
    expected = np.minimum(np.floor(np.arange(round(count * 30 / fps)) * fps / 30 + 1e-6).astype(int), count - 1)
    assert shown == expected.tolist()


def test_a_variable_frame_rate_video_is_placed_by_its_timestamps(tmp_path):
    """2 s at 30 fps, then 2 s at 10 fps: 4 s, so 120 frames, each the frame on screen at its time."""
    pts = [round(1000 * i / 30) for i in range(60)] + [2000 + 100 * i for i in range(20)]
    video = _levels_video(tmp_path / "vfr.mkv", pts)
    with VideoReader(video) as reader:
        shown = _shown(at_30_fps(reader, reader.fps))
    assert len(shown) == 120
    expected = [j if j < 60 else 60 + int(np.floor((j / 30 - 2) * 10 + 1e-6)) for j in range(120)]
    assert shown == expected


def test_the_audio_track_starts_at_the_first_frame_whatever_the_streams_start_times(tmp_path):
    """Audio starting 0.5 s after the video on the container's clock: the first half second is silence."""
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    video = _levels_video(tmp_path / "late_audio.mkv", [round(1000 * i / 30) for i in range(45)], tone, 8000)
    samples, rate = read_audio_track(video)
    assert rate == 16000
    assert np.abs(samples[:7900]).max() < 1e-3 and np.abs(samples[8100:16000]).max() > 0.4


def test_generate_crops_while_reading_and_notes_audio_far_longer_than_the_video(session_folder, tmp_path,
                                                                                monkeypatch, capsys):
    """The frames are never held whole (only their crops), and 3 s of audio for a 2 s video is worth a note:
    its header's frame rate may be wrong."""
    import fad_edge.data.media as media

    def no_whole_video(*_args, **_kwargs):
        raise AssertionError("generate read the whole video into memory")

    monkeypatch.setattr(media, "read_video", no_whole_video)
    longer = tmp_path / "longer.wav"
    media.write_wav(longer, np.concatenate([media.read_audio(session_folder / "speaker.wav")[0],
                                            np.zeros(16000, np.float32)]), 16000)
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", session_folder / "speaker.mp4", "--audio", longer, "--out", tmp_path / "out")
    assert code == 0, output
    assert "1.0 s longer than the video" in " ".join(output.split())
    assert json.loads((tmp_path / "out" / "listener.json").read_text())["notes"]


def test_a_failed_run_keeps_the_earlier_outputs_whole_and_a_run_without_preview_drops_the_old_one(
        session_folder, tmp_path, monkeypatch, capsys):
    import fad_edge.generate as generate

    checkpoint, out = tiny_checkpoint(tmp_path / "ck"), tmp_path / "out"
    args = ["generate", "--model", checkpoint, "--video", session_folder / "speaker.mp4",
            "--audio", session_folder / "speaker.wav", "--out", out]
    assert run_cli(monkeypatch, capsys, *args, "--preview")[0] == 0
    before = {name: (out / name).read_bytes() for name in generate.OUTPUT_NAMES}

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(generate, "plotter", lambda: full_disk)
        code, output = run_cli(monkeypatch, capsys, *args, "--seed", "1")
    assert code == 1 and "Traceback" not in output
    assert {name: (out / name).read_bytes() for name in generate.OUTPUT_NAMES} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(generate.OUTPUT_NAMES)  # no staging folder left
    assert run_cli(monkeypatch, capsys, *args, "--seed", "1")[0] == 0
    assert not (out / generate.PREVIEW_NAME).exists()  # it showed the seed-0 run
    assert (out / generate.MOTION_NAME).read_bytes() != before[generate.MOTION_NAME]


def test_a_folder_in_the_way_is_refused_before_the_video_is_read(session_folder, tmp_path, monkeypatch, capsys):
    import fad_edge.generate as generate

    (tmp_path / "out" / generate.PLOT_NAME).mkdir(parents=True)
    monkeypatch.setattr(generate, "read_speaker", lambda *a, **k: pytest.fail("read the video first"))
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tiny_checkpoint(tmp_path / "ck"),
                           "--video", session_folder / "speaker.mp4", "--audio", session_folder / "speaker.wav",
                           "--out", tmp_path / "out")
    assert code == 2 and "a folder is where this output goes" in output


def test_a_wide_frame_read_whole_is_said_to_be_squeezed(tmp_path):
    from fad_edge.data.media import write_wav
    from fad_edge.generate import read_speaker
    from fad_edge.runtime.face import FaceCropper

    video = write_video(tmp_path / "wide.mp4", np.zeros((12, 16, 32, 3), np.uint8), 30.0)
    audio = write_wav(tmp_path / "a.wav", np.zeros(8000, np.float32), 16000)
    wide = read_speaker(video, audio, FaceCropper("none"), sizes=(8,))
    assert wide.faces(8).shape == (12, 8, 8, 3) and wide.n_frames == 12
    assert any("32x16 frame is squeezed" in note for note in wide.notes)
    boxed = read_speaker(video, audio, FaceCropper("box", (8, 0, 16, 16)), sizes=(8,))
    assert not any("squeezed" in note for note in boxed.notes)


@pytest.mark.parametrize("codec, sample_format", [("pcm_s16le", "s16"), ("aac", "fltp")])  # packed, planar
def test_a_stereo_track_in_opposite_phase_is_heard_through_one_channel(tmp_path, codec, sample_format):
    """Averaged, a channel and its inverse would be silence: the louder channel is used, and generate says so."""
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    path = tmp_path / f"inverted_{codec}.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=30)
        video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        sound = container.add_stream(codec, rate=16000, layout="stereo")
        for _ in range(30):
            for packet in video.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
                container.mux(packet)
        channels = np.stack([tone, -tone])
        data = (channels.T.reshape(1, -1) * 32767).astype(np.int16) if sample_format == "s16" else channels
        chunk = av.AudioFrame.from_ndarray(data, format=sample_format, layout="stereo")
        chunk.sample_rate = 16000
        for packet in sound.encode(chunk):
            container.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode(None):
                container.mux(packet)
    from fad_edge.generate import read_speaker
    from fad_edge.runtime.face import FaceCropper

    media = read_speaker(path, None, FaceCropper("none"), pad_audio=True, sizes=(8,))
    assert np.sqrt(np.mean(media.samples[2000:14000] ** 2)) > 0.3  # the tone's RMS is 0.35: not cancelled
    assert any("opposite phase" in note for note in media.notes)
