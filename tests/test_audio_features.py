"""The log-mel front end: alignment to video frames, streaming equivalence, windows."""

import numpy as np
import pytest

from fad_edge.constants import MELS_PER_FRAME, N_MELS, SAMPLE_RATE
from fad_edge.data.audio_features import SILENCE, frame_windows, log_mel, mel_centres
from fad_edge.errors import DataError


def test_mel_frames_sit_inside_their_video_frame_without_drift():
    centres = mel_centres(4 * 30 * 600)  # ten minutes
    frame_of_centre = centres * 30 // SAMPLE_RATE
    assert np.array_equal(frame_of_centre, np.repeat(np.arange(30 * 600), MELS_PER_FRAME))


def test_a_tone_lights_up_only_the_frames_it_plays_in():
    frames = 30
    audio = np.zeros(frames * SAMPLE_RATE // 30, np.float32)
    start, stop = 10 * SAMPLE_RATE // 30, 20 * SAMPLE_RATE // 30
    audio[start:stop] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(stop - start) / SAMPLE_RATE)
    energy = log_mel(audio, frames).reshape(frames, MELS_PER_FRAME, N_MELS).max(axis=(1, 2))
    assert energy[12:18].min() > energy[:8].max() + 0.5
    assert energy[12:18].min() > energy[22:].max() + 0.5
    assert np.allclose(energy[:8], SILENCE)


def test_a_chunk_with_an_offset_gives_the_same_mel_as_the_whole_signal():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(SAMPLE_RATE * 2).astype(np.float32) * 0.1
    whole = log_mel(audio, 60)
    offset = 16_000
    part = log_mel(audio[offset - 1000 :], 8, first_frame=32, offset=offset - 1000)
    np.testing.assert_allclose(part, whole[32 * 4 : 40 * 4], atol=1e-5)


def test_frame_windows_end_with_their_own_frame_and_use_history():
    mel = np.arange(16 * 4 * 2, dtype=np.float32).reshape(16 * 4, 2)
    windows = frame_windows(mel, 2)
    assert windows.shape == (16, 1, 8, 2)
    np.testing.assert_array_equal(windows[5, 0], mel[4 * 4 : 6 * 4])
    assert np.all(windows[0, 0, :4] == SILENCE)
    continued = frame_windows(mel[32:], 2, history=mel[:32])
    np.testing.assert_array_equal(continued, windows[8:])


@pytest.mark.parametrize("bad", [np.full(1000, np.nan, np.float32), np.zeros((10, 2), np.float32)])
def test_bad_audio_is_a_data_error(bad):
    with pytest.raises(DataError):
        log_mel(bad, 1)


def test_mel_filters_match_librosa_slaney_bank():
    import librosa

    from fad_edge.constants import MEL_FMAX, MEL_FMIN, N_FFT, N_MELS, SAMPLE_RATE
    from fad_edge.data.audio_features import mel_filters

    reference = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=MEL_FMIN, fmax=MEL_FMAX)
    assert mel_filters(N_MELS).shape == reference.shape
    np.testing.assert_allclose(mel_filters(N_MELS), reference, rtol=0, atol=1e-7)


def test_resample_matches_librosa_length_and_values():
    import librosa

    from fad_edge.data.audio_features import resample_audio

    tone = np.sin(np.arange(44_101) * 2 * np.pi * 440 / 44_100).astype(np.float32)
    ours = resample_audio(tone, 44_100, 16_000)
    np.testing.assert_allclose(ours, librosa.resample(tone, orig_sr=44_100, target_sr=16_000), atol=1e-6)
