"""Video and audio IO."""

import numpy as np
import pytest

from fad_edge.data.audio_features import resample_audio
from fad_edge.data.media import read_audio, read_video, write_video, write_wav
from fad_edge.errors import DataError


def test_video_round_trip_keeps_count_size_and_colour(tmp_path):
    frames = np.zeros((12, 48, 64, 3), np.uint8)
    frames[..., 0] = 200  # red
    write_video(tmp_path / "v.mp4", frames, 30)
    back, fps = read_video(tmp_path / "v.mp4")
    assert back.shape == (12, 48, 64, 3) and fps == pytest.approx(30)
    assert back[..., 0].mean() > 150 and back[..., 2].mean() < 60  # RGB order survives
    small, _ = read_video(tmp_path / "v.mp4", size=16)
    assert small.shape == (12, 16, 16, 3)


def test_wav_round_trip_and_resampling(tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000).astype(np.float32)
    write_wav(tmp_path / "a.wav", tone, 16000)
    back, rate = read_audio(tmp_path / "a.wav")
    assert rate == 16000 and np.abs(back - tone).max() < 1e-3
    assert len(resample_audio(tone, 16000, 8000)) == 4000


@pytest.mark.parametrize("content", [None, b"", b"garbage" * 100])
def test_unreadable_video(tmp_path, content):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match="bad.mp4"):
        read_video(path)


def test_unreadable_and_empty_audio(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_audio(tmp_path / "none.wav")
    (tmp_path / "x.wav").write_bytes(b"garbage")
    with pytest.raises(DataError, match="x.wav"):
        read_audio(tmp_path / "x.wav")
    write_wav(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="empty"):
        read_audio(tmp_path / "empty.wav")


def test_nan_audio_is_refused(tmp_path):
    import soundfile

    soundfile.write(tmp_path / "nan.wav", np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN"):
        read_audio(tmp_path / "nan.wav")


def test_writes_leave_no_temporary_files(tmp_path):
    write_video(tmp_path / "v.mp4", np.zeros((2, 8, 8, 3), np.uint8), 30)
    write_wav(tmp_path / "a.wav", np.zeros(10, np.float32), 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "v.mp4"]


def _write_with_rate(path, rate, frames=3):
    """An mp4 whose container declares `rate` fps (PyAV writes any rate, as a crafted file may)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(rate).limit_denominator(100_000))
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("rate", [0.00015, 0.5, 1000])
def test_a_frame_rate_outside_1_to_240_is_refused_before_decoding(tmp_path, rate):
    # 0.00015 fps made `generate` allocate 6.9 GiB to bring 3 frames to 30 fps
    path = _write_with_rate(tmp_path / "odd.mp4", rate)
    with pytest.raises(DataError, match=f"odd.mp4: the video declares {rate:g} fps"):
        read_video(path)


def test_a_video_larger_than_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    from fad_edge import resources

    write_video(tmp_path / "v.mp4", np.zeros((12, 48, 64, 3), np.uint8), 30)
    monkeypatch.setattr(resources, "memory_bytes", lambda: 100_000)  # 12 frames x 9 KiB, held twice, is 221 KB
    with pytest.raises(DataError, match="v.mp4: its 12 frames would need about .* memory"):
        read_video(tmp_path / "v.mp4")
    assert read_video(tmp_path / "v.mp4", size=16)[0].shape == (12, 16, 16, 3)  # resized frames fit


def test_face_crops_beyond_memory_are_refused_before_decoding(tmp_path, monkeypatch):
    """10 frames at 1 fps are 300 at 30 fps: their crops are bounded by memory before any frame is decoded."""
    from fad_edge import resources
    from fad_edge.generate import read_speaker
    from fad_edge.runtime.face import FaceCropper

    video = write_video(tmp_path / "slow.mp4", np.zeros((10, 32, 32, 3), np.uint8), 1.0)
    audio = write_wav(tmp_path / "a.wav", np.zeros(16000 * 10, np.float32), 16000)
    assert read_speaker(video, audio, FaceCropper("none"), sizes=(32,)).n_frames == 300
    monkeypatch.setattr(resources, "memory_bytes", lambda: 200_000)  # 300 crops x 3 KiB = 922 KB
    with pytest.raises(DataError, match="face crops"):
        read_speaker(video, audio, FaceCropper("none"), sizes=(32,))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".mp4"])
def test_an_image_is_not_a_video_whatever_its_name(tmp_path, suffix):
    import cv2

    image = tmp_path / f"speaker{suffix}"
    ok, encoded = cv2.imencode(".png" if suffix == ".mp4" else suffix, np.zeros((40, 40, 3), np.uint8))
    image.write_bytes(encoded.tobytes())
    with pytest.raises(DataError, match=f"speaker{suffix}: an image, not a video"):
        read_video(image)


def _tone(samples: int = 8000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)


def test_downmix_averages_channels_unless_they_cancel():
    from fad_edge.data.media import downmix

    tone, notes = _tone(), []
    quiet_right = np.stack([tone, 0.5 * tone])
    assert np.allclose(downmix(quiet_right, notes), 0.75 * tone) and notes == []
    one_silent = np.stack([np.zeros_like(tone), tone])  # a microphone on one side only: still the average
    assert np.allclose(downmix(one_silent, notes), 0.5 * tone) and notes == []
    # one channel the other in opposite phase (a miswired microphone): the average is silence, so the
    # louder channel stands alone, and the caller is told
    inverted = np.stack([tone, -0.9 * tone])
    assert np.allclose(downmix(inverted, notes), tone) and len(notes) == 1 and "channel 1" in notes[0]
    assert np.allclose(downmix(np.stack([0.9 * tone, -tone])), -tone)  # the loudest, whichever it is
    assert np.array_equal(downmix(np.zeros((2, 100), np.float32), notes), np.zeros(100)) and len(notes) == 1
    assert np.allclose(downmix(tone[None], notes), tone)  # mono stays as it is


def test_stereo_in_opposite_phase_is_read_as_one_channel_with_a_note(tmp_path):
    import soundfile

    tone = _tone()
    soundfile.write(tmp_path / "inverted.wav", np.stack([-tone, tone], axis=1), 16000, subtype="FLOAT")
    notes: list[str] = []
    samples, rate = read_audio(tmp_path / "inverted.wav", notes)
    assert rate == 16000 and np.abs(np.abs(samples) - np.abs(tone)).max() < 1e-6
    assert len(notes) == 1 and "opposite phase" in notes[0]
    stereo, _ = read_audio(tmp_path / "inverted.wav")  # without a list for the notes: the same samples
    assert np.array_equal(stereo, samples)


def test_a_video_written_from_frames_one_at_a_time_holds_one_at_a_time(tmp_path):
    """The preview of a long video streams its frames: held all at once, 30 minutes of them are 42 GB."""
    import tracemalloc

    from fad_edge.preview import render_preview

    rng = np.random.default_rng(0)
    speaker = rng.integers(0, 255, (200, 64, 64, 3), dtype=np.uint8)
    motion = (0.1 * rng.standard_normal((200, 56))).astype(np.float32)
    tracemalloc.start()
    try:
        render_preview(speaker, motion, np.zeros(56, np.float32), np.ones(56, np.float32), tmp_path / "p.mp4")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # 200 composed 256x512 frames held together are 79 MB
    assert read_video(tmp_path / "p.mp4")[0].shape == (200, 256, 512, 3)
    frames = (np.zeros((8, 8, 3), np.uint8) if k < 3 else np.zeros((8, 9, 3), np.uint8) for k in range(5))
    with pytest.raises(DataError, match="video frame 3 is uint8 \\(8, 9, 3\\), not uint8 \\(8, 8, 3\\)"):
        write_video(tmp_path / "mixed.mp4", frames, 30)
    assert not (tmp_path / "mixed.mp4").exists()
