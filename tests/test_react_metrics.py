"""REACT's metrics on hand-made reactions with known answers, and the appropriate sets they score against."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fad_edge import react_metrics as rm
from fad_edge.appropriate import ReactSession, build_windows, nearest_windows, window_starts


def _smooth(frames: int, dims: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kernel = np.hanning(15)
    signal = np.stack([np.convolve(rng.standard_normal(frames + 14), kernel, "valid") for _ in range(dims)], axis=1)
    return signal - signal.mean(0)


def _dtw_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    cost = np.full((len(a) + 1, len(b) + 1), np.inf)
    cost[0, 0] = 0
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost[i, j] = ((a[i - 1] - b[j - 1]) ** 2).sum() + min(cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1])
    return math.sqrt(cost[-1, -1])


def test_ccc_is_one_only_for_identical_series_unlike_pearson():
    x = _smooth(200, 3, 0)
    assert rm.concordance(x, x) == pytest.approx(1.0)
    # 2x correlates perfectly (Pearson 1) but disagrees: CCC = 2 * 2v / (v + 4v) = 0.8 in every dim
    assert rm.concordance(2 * x, x) == pytest.approx(0.8)
    assert rm.concordance(-x, x) == pytest.approx(-1.0)
    # a shift by c: CCC = 2v / (2v + c^2) per dim
    variance = x.var(0)
    assert rm.concordance(x + 1.0, x) == pytest.approx(float(np.mean(2 * variance / (2 * variance + 1.0))))
    constant = np.ones((50, 2))
    assert rm.concordance(constant, constant) == 1.0 and rm.concordance(constant, _smooth(50, 2, 1)) == 0.0


def test_dtw_is_zero_for_identical_or_time_warped_copies_and_matches_the_textbook_recursion():
    x = _smooth(60, 4, 2)
    assert rm.dtw_distance(x, x) == 0.0
    assert rm.dtw_distance(np.repeat(x, 2, axis=0), x) == pytest.approx(0.0, abs=1e-12)  # a slowed-down copy
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20, 3)), rng.standard_normal((17, 3))
    assert rm.dtw_distance(a, b) == pytest.approx(_dtw_by_hand(a, b))


def test_identical_samples_are_perfectly_appropriate_and_not_diverse():
    x = _smooth(120, 5, 4)
    samples = np.stack([x, x, x])[None]  # one window, m = 3 identical samples
    scores = rm.react_scores(samples, [x[None]], speakers=None)
    assert scores["FRCorr"] == pytest.approx(1.0) and scores["FRDist"] == pytest.approx(0.0)
    assert scores["FRDiv"] == 0.0
    assert scores["FRVar"] == pytest.approx(float(x.var(0).mean()))
    assert math.isnan(scores["FRSyn"]) and math.isnan(scores["FRDvs"])  # no speaker; one window


def test_every_sample_is_scored_not_only_the_first():
    x, z = _smooth(100, 4, 5), _smooth(100, 4, 6)
    references = [np.stack([x, z])]
    good_then_bad = np.stack([x, -x])[None]  # sample 0 matches a reference exactly, sample 1 is its mirror image
    best_of_the_bad = max(rm.concordance(-x, x), rm.concordance(-x, z))
    assert rm.fr_corr(good_then_bad, references) == pytest.approx((1.0 + best_of_the_bad) / 2)
    assert rm.fr_corr(good_then_bad, references) < 0.6
    shifted = np.stack([x, x + 1.0])[None]
    # FRDist: 0 for sample 0; for sample 1 the DTW of a constant offset of 1 in 4 dims, divided by the 4 dims
    expected = rm.dtw_distance(x + 1.0, x) / 4
    assert rm.fr_dist(shifted, [x[None]]) == pytest.approx(expected / 2)
    assert expected > 0


def test_fr_dist_stopping_early_still_finds_each_samples_nearest_reaction():
    rng = np.random.default_rng(14)
    x = _smooth(90, 3, 15)
    samples = np.stack([x + 0.3 * rng.standard_normal((90, 3)) for _ in range(4)] + [x])[None]  # the last is exact
    references = [np.stack([x + 0.5 * rng.standard_normal((90, 3)) for _ in range(5)] + [x])]
    allowed = [rng.random((5, 6)) < 0.7]
    allowed[0][:, 0] = True  # every sample keeps at least one reaction
    brute = [min(rm.dtw_distance(sample, references[0][j]) for j in range(6) if allowed[0][i, j]) / 3
             for i, sample in enumerate(samples[0])]
    assert rm.fr_dist(samples, references, allowed) == pytest.approx(np.mean(brute), rel=1e-9)
    everything = [min(rm.dtw_distance(sample, reference) for reference in references[0]) / 3 for sample in samples[0]]
    assert rm.fr_dist(samples, references) == pytest.approx(np.mean(everything), rel=1e-9)


def test_fr_corr_takes_the_best_appropriate_reaction_and_respects_the_leave_one_out_mask():
    x, y = _smooth(100, 3, 7), _smooth(100, 3, 8)
    references = [np.stack([y, x])]
    assert rm.fr_corr(x[None, None], references) == pytest.approx(1.0)
    without_itself = [np.array([[True, False]])]
    assert rm.fr_corr(x[None, None], references, without_itself) == pytest.approx(rm.concordance(x, y))


def test_diversity_within_and_across_speakers():
    x = _smooth(80, 2, 9)
    # two samples that differ by 1 everywhere: mean squared difference 1 for both ordered pairs
    assert rm.fr_div(np.stack([x, x + 1.0])[None]) == pytest.approx(1.0)
    # the same reaction to every speaker: no diversity across speakers; an offset of 2 between them: 4
    same = np.stack([np.stack([x, x + 1.0])] * 3)
    assert rm.fr_dvs(same) == pytest.approx(0.0)
    apart = np.stack([np.stack([x, x]), np.stack([x + 2.0, x + 2.0])])
    assert rm.fr_dvs(apart) == pytest.approx(4.0)
    assert math.isnan(rm.fr_div(x[None, None]))  # one sample: nothing to compare


def test_fr_var_is_the_variance_over_frames():
    alternating = np.tile([[1.0], [-1.0]], (50, 3))  # +-1: variance 1 in every dim
    assert rm.fr_var(np.stack([alternating, 2 * alternating])[None]) == pytest.approx((1.0 + 4.0) / 2)


@pytest.mark.parametrize("lags", [(7,), (3, 9), (0, -12, 20)])
def test_fr_syn_is_the_mean_absolute_lag_of_every_sample(lags):
    speaker = _smooth(300, 3, 10)
    samples = np.stack([np.roll(speaker, lag, axis=0) for lag in lags])[None]  # sample[t] = speaker[t - lag]
    assert rm.fr_syn(samples, speaker[None]) == pytest.approx(np.mean(np.abs(lags)))


def test_fr_syn_scans_a_short_window_over_a_quarter_of_its_frames():
    speaker = _smooth(64, 3, 4)
    samples = np.stack([np.roll(speaker, 20, axis=0)])[None]  # a lag beyond 64 // 4 frames
    assert rm.fr_syn(samples, speaker[None]) <= 16


def test_windows_are_cut_end_to_end_and_the_rest_left_out():
    assert window_starts(600, 256) == [0, 256]
    assert window_starts(255, 256) == []
    sessions = [ReactSession("a", np.zeros((100, 56)))]
    assert build_windows(sessions, 256, neighbours=3) is None


def test_alternatives_make_each_windows_appropriate_set_with_its_own_listener_first():
    rng = np.random.default_rng(11)
    sessions = [ReactSession(name, rng.standard_normal((200, 56)), rng.standard_normal((200, 56)),
                             alternatives=rng.standard_normal((4, 200, 56))) for name in ("a", "b")]
    windows = build_windows(sessions, 64, neighbours=2)
    assert windows is not None and windows.source == "alternatives"
    assert windows.names == ["a@0", "a@64", "a@128", "b@0", "b@64", "b@128"]
    first_of_b = windows.names.index("b@64")
    np.testing.assert_array_equal(windows.appropriate[first_of_b][0], sessions[1].listener[64:128])
    np.testing.assert_array_equal(windows.appropriate[first_of_b][1:], sessions[1].alternatives[:, 64:128])
    draws = [[s.listener, s.listener + 1] for s in sessions]
    cut = windows.cut_draws(draws)
    assert cut.shape == (6, 2, 64, 56)
    np.testing.assert_array_equal(cut[first_of_b, 1], sessions[1].listener[64:128] + 1)


def test_without_alternatives_the_nearest_speaker_windows_lend_their_listeners():
    rng = np.random.default_rng(12)
    base = [rng.standard_normal((64, 56)) for _ in range(2)]
    # four windows: 0 and 2 have nearly the same speaker, and so have 1 and 3
    speaker = np.concatenate([base[0], base[1], base[0] + 0.01, base[1] - 0.01])
    listener = rng.standard_normal((256, 56))
    windows = build_windows([ReactSession("s", listener, speaker)], 64, neighbours=1)
    assert windows is not None and windows.source == "neighbours"
    assert nearest_windows(windows.cut([speaker]), 1) == [[0, 2], [1, 3], [2, 0], [3, 1]]
    np.testing.assert_array_equal(windows.appropriate[2], np.stack([listener[128:192], listener[0:64]]))
    # a neighbour list given as REACT gives one overrides the rule; the window's own listener stays first
    given = build_windows([ReactSession("s", listener, speaker)], 64, neighbours=1,
                          neighbour_lists=[[3], [1], [2, 1], [0, 3]])
    assert given is not None
    np.testing.assert_array_equal(given.appropriate[0], np.stack([listener[0:64], listener[192:256]]))
    assert len(given.appropriate[1]) == 1 and len(given.appropriate[3]) == 2


def test_without_speaker_coefficients_the_neighbours_are_found_by_audio():
    rng = np.random.default_rng(13)
    mel = np.repeat(rng.standard_normal((2, 64 * 4, 8)), 2, axis=0).reshape(4 * 64 * 4, 8)  # windows 0=1, 2=3
    windows = build_windows([ReactSession("s", rng.standard_normal((256, 56)), None, mel)], 64, neighbours=1)
    assert windows is not None and windows.speakers is None
    assert [len(a) for a in windows.appropriate] == [2, 2, 2, 2]
    np.testing.assert_array_equal(windows.appropriate[0][1], windows.listeners[1])


def test_where_some_sessions_lack_speaker_coefficients_every_window_is_compared_by_audio():
    """Speaker motion (56 dims) for some windows and log-mel (8 here) for others cannot be compared."""
    rng = np.random.default_rng(14)
    mel = np.repeat(rng.standard_normal((2, 64 * 4, 8)), 2, axis=0).reshape(4 * 64 * 4, 8)  # windows 0=1, 2=3
    sessions = [ReactSession("a", rng.standard_normal((128, 56)), rng.standard_normal((128, 56)), mel[: 128 * 4]),
                ReactSession("b", rng.standard_normal((128, 56)), None, mel[128 * 4:])]
    windows = build_windows(sessions, 64, neighbours=1)
    assert windows is not None and windows.speakers is None
    assert [int(np.flatnonzero((windows.listeners == a[1]).all(axis=(1, 2)))[0]) for a in windows.appropriate] == [
        1, 0, 3, 2]  # found by their audio, the only feature every session has
