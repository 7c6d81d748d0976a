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
