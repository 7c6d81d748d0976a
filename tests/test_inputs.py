"""fit_audio: a whole recording's audio as the runners read it, in either 2-D layout; what is not audio refused."""

from __future__ import annotations

import numpy as np
import pytest

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
