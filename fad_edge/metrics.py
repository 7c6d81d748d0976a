"""The paper's metrics on de-normalized FLAME coefficients, per group (expression 50, rotation = jaw + head 6).

Published listener papers disagree on names and definitions, so each function states its own:
- L2 follows Learning to Listen's test code (mean per-frame Euclidean norm, not the MSE others call
  "L2"; MSE is given too), but in the coefficients' own units, where that code scores coefficients
  standardized by its training statistics (so its figures are not comparable with these);
- FD follows the FID formula of Heusel et al. as implemented in pytorch-fid (full covariance, scipy's
  sqrtm, a small ridge when the product is singular), per sequence and pooled over all sequences;
- P-FD is Learning to Listen's paired FD (FD of speaker and listener concatenated per frame);
- SI follows Learning to Listen's diversity measure (Shannon index of k-means cluster usage);
- TLCC follows Boker et al.'s windowless time-lagged cross-correlation as used by ViCo/ReactFace.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.stats import entropy
from sklearn.cluster import KMeans

from fad_edge.constants import EXPRESSION, FPS, ROTATION

GROUPS: dict[str, slice] = {"expression": EXPRESSION, "rotation": ROTATION}
SI_CLUSTERS = {"expression": 40, "rotation": 20}
MAX_LAG = 2 * FPS - 1  # lags -59..+59: two seconds at 30 fps


def l2(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean over frames of the per-frame Euclidean norm of the difference (Learning to Listen's L2)."""
    _same_shape(prediction, truth)
    return float(np.linalg.norm(prediction - truth, axis=-1).mean())


def mse(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared error over frames and dims (what several papers report as "L2")."""
    _same_shape(prediction, truth)
    return float(np.mean((prediction - truth) ** 2))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) over frames (T, D), full covariance.

    NaN when either side has fewer frames than dims (its covariance is then singular by construction).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dims = a.shape[1]
    if len(a) <= dims or len(b) <= dims:
        return math.nan
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(cov_a @ cov_b)
        if not np.all(np.isfinite(root)):
            ridge = np.eye(dims) * 1e-6
            root = linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    root = np.real(root)
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))
    return max(value, 0.0)  # the trace of sqrtm can overshoot by rounding


def fd_per_sequence(predictions: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """FD of each sequence against its own ground truth, averaged (NaN sequences skipped; all NaN -> NaN)."""
    values = [frechet_distance(p, t) for p, t in zip(predictions, truths)]
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def fd_pooled(predictions: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """FD between all predicted frames and all ground-truth frames, pooled over sequences."""
    return frechet_distance(np.concatenate(predictions), np.concatenate(truths))


def _paired(speakers: list[np.ndarray], listeners: list[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate([speaker, listener], axis=1) for speaker, listener in zip(speakers, listeners)]


def paired_fd_per_sequence(
    speakers: list[np.ndarray], predictions: list[np.ndarray], truths: list[np.ndarray]
) -> float:
    """P-FD (Ng et al., Learning to Listen, CVPR 2022): FD over frames of [speaker, listener] concatenated,
    generated pairs against real ones, per sequence and averaged. Unlike FD, it asks whether the
    listener goes with its speaker, not only whether it looks like some listener."""
    return fd_per_sequence(_paired(speakers, predictions), _paired(speakers, truths))


def paired_fd_pooled(speakers: list[np.ndarray], predictions: list[np.ndarray], truths: list[np.ndarray]) -> float:
    """P-FD between all generated and all real [speaker, listener] frames, pooled over sequences."""
    return fd_pooled(_paired(speakers, predictions), _paired(speakers, truths))


@dataclass
class ShannonIndex:
    """k-means fitted on ground-truth frames; the SI of any frames is the entropy (bits) of their cluster use."""

    kmeans: KMeans

    @classmethod
    def fit(cls, truth_frames: np.ndarray, clusters: int, seed: int = 0) -> ShannonIndex:
        if len(truth_frames) < clusters:
            raise ValueError(f"SI needs at least {clusters} ground-truth frames, got {len(truth_frames)}")
        frames = np.asarray(truth_frames, np.float64)
        # No more clusters than distinct frames (a motionless listener, a dim held constant): k-means would
        # warn and leave clusters empty, and a user would see scikit-learn's warning in place of a table.
        distinct = len(np.unique(frames, axis=0))
        return cls(KMeans(n_clusters=min(clusters, distinct), random_state=seed, n_init=10).fit(frames))

    def __call__(self, frames: np.ndarray) -> float:
        labels = self.kmeans.predict(np.asarray(frames, np.float64))
        counts = np.bincount(labels, minlength=self.kmeans.n_clusters)
        return float(entropy(counts, base=2))


def lagged_correlation(speaker: np.ndarray, listener: np.ndarray, lag: int) -> float:
    """Mean over dims of Pearson r between speaker[t] and listener[t + lag] on the overlapping frames.

    Dims that are constant on the overlap have no defined r and are left out of the mean.
    """
    if lag >= 0:
        x, y = speaker[: len(speaker) - lag], listener[lag:]
    else:
        x, y = speaker[-lag:], listener[: len(listener) + lag]
    if len(x) < 2:
        return math.nan
    valid = (np.ptp(x, axis=0) > 0) & (np.ptp(y, axis=0) > 0)
    if not np.any(valid):
        return math.nan
    x = np.asarray(x[:, valid], np.float64)
    y = np.asarray(y[:, valid], np.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.mean((x * y).sum(0) / np.sqrt((x**2).sum(0) * (y**2).sum(0))))


def lagged_correlations(speaker: np.ndarray, listener: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """`lagged_correlation` at every lag -max_lag..+max_lag at once: (2 max_lag + 1,) values.

    The overlap's sums come from prefix sums and the cross sums from one FFT correlation per dim,
    so all lags cost about one lag's loop. A dim whose variance on the overlap is below 1e-10 of its
    mean square there counts as constant (rounding keeps it from being exactly 0).
    """
    x = np.asarray(speaker, np.float64)
    y = np.asarray(listener, np.float64)
    x, y = x - x.mean(0), y - y.mean(0)  # correlation is unchanged; the sums below lose less to rounding
    frames = len(x)
    lags = np.arange(-max_lag, max_lag + 1)
    size = 1 << int(2 * frames - 1).bit_length()  # no circular wrap for |lag| < frames
    cross = np.fft.irfft(np.conj(np.fft.rfft(x, size, axis=0)) * np.fft.rfft(y, size, axis=0), size, axis=0)
    sum_xy = cross[lags % size]  # sum over t of x[t] y[t + lag]

    def overlap_sums(values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prefix = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, 0)])
        prefix2 = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values**2, 0)])
        return prefix[stop] - prefix[start], prefix2[stop] - prefix2[start]

    count = (frames - np.abs(lags)).astype(np.float64)[:, None]
    sum_x, sum_xx = overlap_sums(x, np.maximum(0, -lags), frames - np.maximum(0, lags))
    sum_y, sum_yy = overlap_sums(y, np.maximum(0, lags), frames + np.minimum(0, lags))
    with np.errstate(invalid="ignore", divide="ignore"):
        var_x, var_y = sum_xx - sum_x**2 / count, sum_yy - sum_y**2 / count
        valid = (var_x > 1e-10 * sum_xx) & (var_y > 1e-10 * sum_yy) & (count >= 2)
        r = np.where(valid, (sum_xy - sum_x * sum_y / count) / np.sqrt(np.where(valid, var_x * var_y, 1.0)), 0.0)
        return np.where(valid.any(1), r.sum(1) / valid.sum(1), math.nan)


def tlcc(speaker: np.ndarray, listener: np.ndarray, max_lag: int = MAX_LAG) -> tuple[int, float]:
    """(peak lag, peak r) of the time-lagged cross-correlation over lags -max_lag..+max_lag.

    A positive lag means the listener follows the speaker. Needs more than max_lag frames.
    """
    if len(speaker) != len(listener):
        raise ValueError(f"speaker has {len(speaker)} frames, listener {len(listener)}")
    if len(speaker) <= max_lag + 1:
        raise ValueError(f"TLCC over +-{max_lag} lags needs more than {max_lag + 1} frames, got {len(speaker)}")
    values = lagged_correlations(speaker, listener, max_lag)
    if np.all(np.isnan(values)):
        return 0, math.nan
    best = int(np.nanargmax(values))
    return best - max_lag, float(values[best])


def lag_range(frames: int, max_lag: int = MAX_LAG) -> int:
    """The lags TLCC scans on a sequence of `frames`: up to `max_lag`, and at most a quarter of the frames.

    So every lag correlates at least three quarters of the sequence: at +-59 lags a 64-frame clip (Learning
    to Listen's) would correlate 5 frames at the extremes, and the peak would mostly be noise there.
    """
    return min(max_lag, frames // 4)


def tlcc_summary(speakers: list[np.ndarray], listeners: list[np.ndarray], max_lag: int = MAX_LAG) -> dict[str, float]:
    """Mean |peak lag| (frames) and mean peak r over sequences: every sequence counts once.

    Each sequence is scanned over `lag_range` lags; one of fewer than 4 frames has none and is left out.
    """
    results = [tlcc(speaker, listener, lag_range(len(speaker), max_lag))
               for speaker, listener in zip(speakers, listeners) if lag_range(len(speaker), max_lag) > 0]
    results = [(lag, r) for lag, r in results if not math.isnan(r)]  # a constant listener has no correlation
    if not results:
        return {"lag": math.nan, "r": math.nan}
    return {"lag": float(np.mean([abs(lag) for lag, _ in results])),
            "r": float(np.mean([r for _, r in results]))}


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"prediction {np.shape(a)} and ground truth {np.shape(b)} differ in shape")
