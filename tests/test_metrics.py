"""Metrics pinned on hand-computable cases, and FD's symmetry as a property."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fad_edge import metrics


def _smooth_signal(frames: int, dims: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kernel = np.hanning(15)
    return np.stack([np.convolve(rng.standard_normal(frames + 14), kernel, "valid") for _ in range(dims)], axis=1)


def test_identical_sequences_have_zero_l2_and_fd():
    x = _smooth_signal(300, 6, 0)
    assert metrics.l2(x, x) == 0.0 and metrics.mse(x, x) == 0.0
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_a_constant_shift_gives_its_norm_as_l2_and_its_square_as_fd():
    x = _smooth_signal(300, 3, 1)
    shift = np.array([3.0, 0.0, 4.0])
    assert metrics.l2(x + shift, x) == pytest.approx(5.0)
    assert metrics.mse(x + shift, x) == pytest.approx(25.0 / 3)
    assert metrics.frechet_distance(x + shift, x) == pytest.approx(25.0, rel=1e-6)


def test_fd_of_gaussians_with_known_covariances():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((200_000, 2))
    b = 2.0 * rng.standard_normal((200_000, 2))
    # Tr(I + 4I - 2 * sqrt(4I)) = 2 + 8 - 8 = 2
    assert metrics.frechet_distance(a, b) == pytest.approx(2.0, abs=0.05)


def test_fd_is_nan_with_fewer_frames_than_dims():
    x = np.random.default_rng(0).standard_normal((10, 50))
    assert math.isnan(metrics.frechet_distance(x, x))
    assert math.isnan(metrics.fd_per_sequence([x], [x]))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, (12, 3), elements=st.floats(-10, 10, allow_nan=False, width=32)),
    arrays(np.float64, (12, 3), elements=st.floats(-10, 10, allow_nan=False, width=32)),
)
def test_fd_is_symmetric_and_non_negative(a, b):
    forward, backward = metrics.frechet_distance(a, b), metrics.frechet_distance(b, a)
    assert forward >= 0 and backward >= 0
    assert forward == pytest.approx(backward, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("lag", [0, 7, -12, 30])
def test_tlcc_finds_the_shift(lag):
    speaker = _smooth_signal(400, 4, 3)
    listener = np.roll(speaker, lag, axis=0)  # listener[t] = speaker[t - lag]
    found, r = metrics.tlcc(speaker, listener)
    assert found == lag and r > 0.9


def test_tlcc_needs_more_frames_than_lags_and_skips_constant_listeners():
    with pytest.raises(ValueError, match="needs more than"):
        metrics.tlcc(np.zeros((50, 2)), np.zeros((50, 2)))
    speaker = _smooth_signal(200, 2, 4)
    summary = metrics.tlcc_summary([speaker], [np.ones_like(speaker)])
    assert math.isnan(summary["r"]) and math.isnan(summary["lag"])


def test_a_short_sequence_is_scanned_over_a_quarter_of_its_frames():
    # A 64-frame clip: at +-59 lags its extremes would correlate 5 frames; it gets +-16.
    assert metrics.lag_range(64) == 16 and metrics.lag_range(600) == metrics.MAX_LAG and metrics.lag_range(3) == 0
    rng = np.random.default_rng(1)
    speakers = [rng.standard_normal((64, 3)).cumsum(0) for _ in range(40)]
    listeners = [rng.standard_normal((64, 3)).cumsum(0) for _ in range(40)]  # unrelated random walks
    summary = metrics.tlcc_summary(speakers, listeners)
    assert summary["lag"] <= 16  # at +-59 lags such walks peak near the edges (about 40 frames)
    speaker = _smooth_signal(64, 3, 2)
    follows = metrics.tlcc_summary([speaker], [np.roll(speaker, 5, axis=0)])
    assert follows["lag"] == 5 and follows["r"] > 0.5
    assert math.isnan(metrics.tlcc_summary([np.ones((3, 2))], [np.ones((3, 2))])["lag"])  # no lag to scan


def test_si_of_a_uniform_histogram_over_k_clusters_is_log2_k():
    centres = np.array([[10.0 * i, -5.0 * i] for i in range(8)])
    truth = np.repeat(centres, 20, axis=0) + 0.01 * np.random.default_rng(0).standard_normal((160, 2))
    si = metrics.ShannonIndex.fit(truth, clusters=8)
    assert si(truth) == pytest.approx(3.0)  # 8 equally used clusters
    assert si(np.repeat(centres[:1], 50, axis=0)) == pytest.approx(0.0)  # one cluster
    with pytest.raises(ValueError):
        metrics.ShannonIndex.fit(truth[:5], clusters=8)


def test_si_of_fewer_distinct_frames_than_clusters_uses_one_cluster_each_without_a_warning():
    import warnings

    centres = np.array([[0.0, 1.0], [5.0, 1.0], [9.0, -3.0]])
    truth = np.repeat(centres, 30, axis=0)  # 3 distinct frames, 90 frames
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's ConvergenceWarning would fail the test
        si = metrics.ShannonIndex.fit(truth, clusters=20)
    assert si(truth) == pytest.approx(np.log2(3))  # 3 equally used clusters


def test_all_lags_at_once_match_the_lag_by_lag_definition():
    rng = np.random.default_rng(5)
    for trial in range(12):
        frames, dims = int(rng.integers(62, 300)), int(rng.integers(1, 6))
        speaker = np.cumsum(rng.standard_normal((frames, dims)), 0) + rng.uniform(-5, 5, dims)
        listener = np.cumsum(rng.standard_normal((frames, dims)), 0) * rng.uniform(0.01, 3, dims)
        if trial % 3 == 0:
            listener[:, 0] = 0.7  # constant everywhere: left out at every lag
        if trial % 4 == 0:
            speaker[: frames // 2, -1] = 1.0  # constant on part of the series
        fast = metrics.lagged_correlations(speaker, listener, 59)
        slow = np.array([metrics.lagged_correlation(speaker, listener, lag) for lag in range(-59, 60)])
        np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
        np.testing.assert_allclose(fast[~np.isnan(fast)], slow[~np.isnan(slow)], atol=1e-9)


def test_paired_fd_sees_a_listener_that_does_not_go_with_its_speaker():
    speaker = _smooth_signal(400, 3, 6)
    listener = 0.8 * np.roll(speaker, 5, axis=0) + 0.1 * _smooth_signal(400, 3, 7)
    assert metrics.paired_fd_per_sequence([speaker], [listener], [listener]) == pytest.approx(0.0, abs=1e-6)
    # the same frames in another order: FD cannot tell, P-FD can (the pairing with the speaker is gone)
    shuffled = listener[np.random.default_rng(8).permutation(400)]
    assert metrics.frechet_distance(shuffled, listener) == pytest.approx(0.0, abs=1e-6)
    assert metrics.paired_fd_per_sequence([speaker], [shuffled], [listener]) > 0.1
    pooled = metrics.paired_fd_pooled([speaker, speaker], [shuffled, listener], [listener, listener])
    assert 0 < pooled < metrics.paired_fd_per_sequence([speaker], [shuffled], [listener])
