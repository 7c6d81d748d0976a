"""The REACT challenge's appropriateness, diversity and synchrony metrics, on one coefficient group.

Sources: Song et al., "REACT2023: the first Multi-modal Multiple Appropriate Facial Reaction
Generation Challenge" (ACM MM 2023, arXiv 2306.06583), and "REACT 2024: the Second Multiple
Appropriate Facial Reaction Generation Challenge" (arXiv 2401.05166), with the metric code of
their public baselines (reactmultimodalchallenge/baseline_react2023 and baseline_react2024,
`metric/`). REACT scores 25 facial attributes; here each metric runs on one FLAME group at a time
(expression 50 or rotation 6), as the rest of fad-edge's metrics do.

Every function takes, for N speaker windows of W frames and D dims:
    samples       (N, m, W, D)        m generated reactions to each speaker window
    appropriate   N arrays (K_i, W, D) the real reactions appropriate to window i
    allowed       optional N boolean (m, K_i) masks of the (sample, reaction) pairs to score; used to
                  score a real reaction against the others only (leave one out)
    speakers      (N, W, D)           the speaker's coefficients of the same group (FRSyn)

The public code's slips are not copied: its FRCorr and FRDist add the per-sample scores up over
the m samples (so its figures grow with m; both repositories do this, each its own way) where we
average them; its CCC is scaled two ways (FRC.py averages the signed CCC over all dims, the 2024
REGNN utilities average |CCC| over the dims where it is not 0; we keep the sign, since a reaction
that moves against the real one disagrees with it, and average over every dim); one FRDist variant
cuts frames 0:15, 15:17, 17:25 where it means the attribute channels; and the multiprocess TLCC
returns after the first of the m samples. Every sample counts here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from dtaidistance import dtw_ndim
from scipy.spatial.distance import pdist

from fad_edge import metrics

Pairwise = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # samples, reactions, allowed pairs


def concordance(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Lin's concordance correlation coefficient per dim, averaged over dims (frames x dims inputs).

    CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2) with population moments. Unlike
    Pearson's r it is 1 only for x = y: a scaled or shifted copy scores less. Two equal constant
    series agree perfectly (1); a constant against a varying series scores 0.
    """
    return float(_concordance_matrix(np.asarray(prediction)[None], np.asarray(truth)[None])[0, 0])


def _concordance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P, W, D) x (K, W, D) -> (P, K) CCC averaged over dims, every pair at once."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mean_a, mean_b = a.mean(1), b.mean(1)  # (P, D), (K, D)
    centred_a, centred_b = a - mean_a[:, None], b - mean_b[:, None]
    covariance = np.einsum("ptd,ktd->pkd", centred_a, centred_b) / a.shape[1]
    denominator = ((centred_a**2).mean(1)[:, None] + (centred_b**2).mean(1)[None]
                   + (mean_a[:, None] - mean_b[None]) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ccc = np.where(denominator > 0, 2 * covariance / np.where(denominator > 0, denominator, 1), 1.0)
    return ccc.mean(-1)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Dependent multivariate DTW: sqrt of the least sum of squared frame distances along a warping path.

    The definition of tslearn's `dtw`, which REACT uses; computed by dtaidistance's C library.
    """
    return float(dtw_ndim.distance(np.ascontiguousarray(a, np.float64), np.ascontiguousarray(b, np.float64),
                                   use_c=True))


def _nearest_dtw(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(P, W, D) x (K, W, D) -> (P, K) DTW distances where `mask` allows, exact for each row's nearest.

    Only each row's minimum is needed, so DTW stops early (dtaidistance's max_dist, +inf) once a pair
    exceeds the best so far, starting from the lock-step Euclidean distance: the diagonal path's
    cost, which no DTW exceeds. Pairs the mask leaves out stay +inf.
    """
    rows = [np.ascontiguousarray(x, np.float64) for x in a]
    columns = [np.ascontiguousarray(y, np.float64) for y in b]
    result = np.full((len(rows), len(columns)), np.inf)
    for i, row in enumerate(rows):
        allowed = [j for j in range(len(columns)) if mask[i, j]]
        if not allowed:
            continue
        best = min(float(np.sqrt(((row - columns[j]) ** 2).sum())) for j in allowed) * (1 + 1e-9) + 1e-12
        for j in allowed:
            result[i, j] = dtw_ndim.distance(row, columns[j], use_c=True, max_dist=best)
            best = min(best, result[i, j])
    return result


def _best(samples: np.ndarray, appropriate: Sequence[np.ndarray], allowed: Sequence[np.ndarray] | None,
          pairwise: Pairwise, reduce: Callable[[np.ndarray], float]) -> float:
    """Per sample, the best score over its allowed appropriate reactions; mean over samples, then windows."""
    per_window = []
    for index, (window_samples, reactions) in enumerate(zip(samples, appropriate)):
        shape = (len(window_samples), len(reactions))
        mask = np.ones(shape, bool) if allowed is None else np.broadcast_to(np.asarray(allowed[index], bool), shape)
        scores = pairwise(window_samples, reactions, mask)  # (m, K)
        best = [reduce(row[keep]) for row, keep in zip(scores, mask) if keep.any()]
        if best:
            per_window.append(np.mean(best))
    return float(np.mean(per_window)) if per_window else math.nan


def fr_corr(
    samples: np.ndarray, appropriate: Sequence[np.ndarray], allowed: Sequence[np.ndarray] | None = None
) -> float:
    """FRCorr (appropriateness, higher is better): for each generated reaction, the highest CCC
    (per dim, averaged over dims) with any appropriate real reaction; averaged over the m samples
    and the speaker windows.

    REACT 2023/2024 define it as the CCC with the most similar appropriate reaction. Their code adds
    the m samples' values up; we average them, so FRCorr lies in [-1, 1] and does not depend on m
    (multiply by m to compare with REACT's published figures, where m = 10).
    """
    return _best(samples, appropriate, allowed, lambda a, b, _: _concordance_matrix(a, b), np.max)


def fr_dist(
    samples: np.ndarray, appropriate: Sequence[np.ndarray], allowed: Sequence[np.ndarray] | None = None
) -> float:
    """FRDist (appropriateness, lower is better): for each generated reaction, the smallest DTW
    distance to any appropriate real reaction; averaged over the m samples and the windows.

    The DTW runs over all the group's dims together (`dtw_distance`) and is divided by the group's
    number of dims, so a group's figure does not grow with its width. REACT's code weighs its groups
    1/15 (its 15 AUs), 1 (its 2 valence-arousal dims, not 1/2) and 1/8 (its 8 expressions), and takes
    the nearest appropriate reaction by the weighted sum over its groups; we report each group on its
    own, nearest by that group alone, so our two groups' figures do not add up to an all-dims one. As
    for FRCorr, samples are averaged, not added.
    """
    dims = samples.shape[-1]
    return _best(samples, appropriate, allowed, lambda a, b, mask: _nearest_dtw(a, b, mask) / dims, np.min)


def _mean_pairwise_mse(series: np.ndarray) -> float:
    """Mean over ordered pairs i != j of the mean squared difference between series i and j (P, W, D)."""
    count = len(series)
    if count < 2:
        return math.nan
    flat = series.reshape(count, -1).astype(np.float64)
    # each unordered pair once, so the sum over ordered pairs is twice it
    return float(2 * pdist(flat, "sqeuclidean").sum() / (count * (count - 1) * flat.shape[1]))


def fr_div(samples: np.ndarray) -> float:
    """FRDiv (diversity, higher is more diverse): the mean squared difference between the m reactions
    to the same speaker window, over all ordered pairs, averaged over windows (REACT's S-MSE).

    NaN with fewer than two samples: a deterministic method has no diversity to measure.
    """
    values = [_mean_pairwise_mse(window) for window in samples]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def fr_dvs(samples: np.ndarray) -> float:
    """FRDvs (diversity across speakers): the mean squared difference between the reactions to
    different speaker windows, over ordered pairs of windows, for each sample index, averaged over
    the m indices (REACT's FRDvs). A method that ignores the speaker scores 0."""
    values = [_mean_pairwise_mse(samples[:, draw]) for draw in range(samples.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def fr_var(samples: np.ndarray) -> float:
    """FRVar (diversity over time): the variance over frames of each generated reaction, per dim,
    averaged over dims, samples and windows (population variance: REACT's two versions differ in
    this; a 750-frame clip makes the difference 0.1%)."""
    return float(np.asarray(samples, np.float64).var(axis=-2).mean())


def fr_syn(samples: np.ndarray, speakers: np.ndarray, max_lag: int = metrics.MAX_LAG) -> float:
    """FRSyn (synchrony, lower is better): the mean absolute lag (frames) of the peak time-lagged
    cross-correlation between the speaker window and each generated reaction, over lags
    -max_lag..+max_lag (2 s: REACT uses +-(2 s x 25 fps - 1) at its 25 fps, we use +-59 at 30 fps;
    at most a quarter of a shorter window, `metrics.lag_range`), averaged over all m samples and
    windows. The correlation at a lag is Pearson's r per dim, averaged over dims (`metrics.tlcc`); a
    constant reaction has none and is left out.
    """
    lags = []
    for speaker, window_samples in zip(speakers, samples):
        for sample in window_samples:
            lag, r = metrics.tlcc(speaker, sample, metrics.lag_range(len(speaker), max_lag))
            if not math.isnan(r):
                lags.append(abs(lag))
    return float(np.mean(lags)) if lags else math.nan


def react_scores(samples: np.ndarray, appropriate: Sequence[np.ndarray], speakers: np.ndarray | None,
                 allowed: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Every REACT metric of one group: FRCorr, FRDist, FRDiv, FRDvs, FRVar and FRSyn (NaN without speakers)."""
    samples = np.asarray(samples)
    if samples.ndim != 4:
        raise ValueError(f"samples must be (windows, m, frames, dims), got {samples.shape}")
    if len(appropriate) != len(samples):
        raise ValueError(f"{len(samples)} windows of samples but {len(appropriate)} appropriate sets")
    return {
        "FRCorr": fr_corr(samples, appropriate, allowed),
        "FRDist": fr_dist(samples, appropriate, allowed),
        "FRDiv": fr_div(samples),
        "FRDvs": fr_dvs(samples),
        "FRVar": fr_var(samples),
        "FRSyn": fr_syn(samples, speakers) if speakers is not None else math.nan,
    }
