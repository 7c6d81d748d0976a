"""fit_audio: a whole recording's audio as the runners read it, in either 2-D layout; what is not audio refused."""

from __future__ import annotations

import numpy as np
import pytest

from fad_edge.constants import SAMPLE_RATE
from fad_edge.data.audio_features import resample_audio
from fad_edge.data.inputs import fit_audio
from fad_edge.errors import DataError


def test_two_dimensional_audio_is_down_mixed_on_its_channel_axis_in_either_layout():
    rng = np.random.default_rng(0)
    left, right = rng.uniform(-0.5, 0.5, (2, 16000)).astype(np.float32)
    expected = (left + right) / 2
    by_rows = fit_audio(np.stack([left, right]), 16000, n_frames=30)  # (channels, N)
    by_columns = fit_audio(np.stack([left, right], axis=1), 16000, n_frames=30)  # (N, channels)
    np.testing.assert_allclose(by_rows, expected, atol=1e-7)
    np.testing.assert_allclose(by_columns, expected, atol=1e-7)


@pytest.mark.parametrize("audio, message", [
    (np.zeros((6, 6), np.float32), "ambiguous: both"),
    (np.zeros((100, 200), np.float32), "ambiguous: neither"),
    (np.full(16000, 20000.0, np.float32), "within \\[-1, 1\\].*32768"),
    (np.full(16000, np.nan, np.float32), "NaN"),
])
def test_what_is_not_audio_is_refused(audio, message):
    with pytest.raises(DataError, match=message):
        fit_audio(audio, 16000, n_frames=30, pad_audio=True)


def test_audio_too_short_names_the_option_that_pads_it_where_the_caller_has_one():
    with pytest.raises(DataError, match=r"\(or pad it with silence\)"):
        fit_audio(np.zeros(8000, np.float32), 16000, n_frames=30)
    with pytest.raises(DataError, match="give --pad-audio to pad it with silence"):
        fit_audio(np.zeros(8000, np.float32), 16000, n_frames=30, pad_option="--pad-audio")


def test_only_the_videos_span_of_long_audio_is_resampled_and_rates_outside_speech_are_refused():
    """A minute of 44.1 kHz audio for 40 frames: the resampled span equals resampling it all; a rate of 1 Hz (which
    would ask for 16,000 samples a sample) is refused in one line."""
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(44100 * 60)).astype(np.float32)
    fitted = fit_audio(long, 44100, 40)
    span = 40 * SAMPLE_RATE // 30 + SAMPLE_RATE // 2  # the video's, and half a second past it (clip padding, mel)
    assert span <= len(fitted) < len(long)
    np.testing.assert_allclose(fitted[:span], resample_audio(long, 44100, SAMPLE_RATE)[:span], rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="1 Hz"):
        fit_audio(long[:1000], 1, 40)
