"""The classical listener baselines, as Learning to Listen (Ng et al. 2022) defines them.

All are fitted on the training split only and answer for a test sequence of any length:
- NN motion: for each window of the test speaker's motion, the training window whose speaker
  motion is nearest (L2 over all frames and dims, after per-dim standardization); output that
  window's listener motion.
- NN audio: the same, matching windows of speaker audio features (per-frame log-mel).
- Random: a random training listener window for each test window (seeded).
- Mirror: the speaker's own motion, as if the listener copied it.
- Median: the per-dim median training listener frame, repeated.
Windows are 64 frames (the paper's T); training windows start every 8 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fad_edge.constants import WINDOW_FRAMES
from fad_edge.data.audio_features import frame_spectra
from fad_edge.errors import DataError

NAMES = ("NN motion", "NN audio", "Random", "Mirror", "Median")


@dataclass
class BaselineSequence:
    """What a baseline may see of one sequence: speaker motion and audio features (listener only to fit)."""

    speaker: np.ndarray | None  # (T, 56) or None when the dataset has no speaker coefficients
    mel: np.ndarray  # (T * 4, n_mels)
    listener: np.ndarray  # (T, 56)

    @property
    def audio_per_frame(self) -> np.ndarray:
        """(T, n_mels): the mean of each frame's mel frames."""
        return frame_spectra(self.mel).T


# Float32 rounding bound per product term of a dot product (a unit roundoff), for the shortlist's margin.
_FLOAT32_ROUNDOFF = float(np.finfo(np.float32).eps) / 2
SHORTLIST_BLOCK = 256  # shortlisted windows whose distances are summed at once


class _WindowIndex:
    """Training windows of one feature (speaker motion or audio) and the listener motion that went with them.

    The search is one matrix product for all of a sequence's queries (squared distance = |k|^2 - 2 k.q + |q|^2),
    which shortlists the windows that can be nearest; the shortlist is then ranked by the distances summed
    element by element, as a direct search would, so the answers are the direct search's to the bit. The product
    alone would rank near ties by its float32 rounding; the direct search alone makes a pass over all keys per
    test window: 37 s for both NN baselines (10 draws each) on a test split of 58 sessions against 268 training
    sessions, where this takes 4 s.
    """

    def __init__(self, features: list[np.ndarray], listeners: list[np.ndarray], window: int, stride: int) -> None:
        keys, values = [], []
        for feature, listener in zip(features, listeners):
            frames = min(len(feature), len(listener))
            for start in range(0, max(frames - window, 0) + 1, stride):
                if start + window <= frames:
                    keys.append(feature[start : start + window])
                    values.append(listener[start : start + window])
        if not keys:
            raise DataError(f"no training session has {window} frames for the nearest-neighbour baselines")
        stacked = np.stack(keys)
        every_frame = stacked.reshape(-1, stacked.shape[-1])
        self.mean, self.std = every_frame.mean(0), every_frame.std(0) + 1e-6
        self.window = window
        self.keys = ((stacked - self.mean) / self.std).astype(np.float32)
        self.values = np.stack(values)
        # |k[:n]|^2 for every prefix length n: each frame's sum in float32 (no float64 copy of the keys), the
        # running sums in float64; the shortlist's margin covers the float32 rounding.
        self.prefix_norms = np.cumsum(np.einsum("wtd,wtd->wt", self.keys, self.keys), axis=1, dtype=np.float64)
        self.longest_key = float(np.sqrt(self.prefix_norms[:, -1].max()))

    def nearest_ranked(self, query: np.ndarray, count: int) -> np.ndarray:
        """(count, n, 56): listener motion of the `count` training windows nearest to `query` (n <= window
        frames, compared on n), nearest first."""
        return self.nearest_ranked_many([query], count)[0]

    def nearest_ranked_many(self, queries: list[np.ndarray], count: int) -> list[np.ndarray]:
        """`nearest_ranked` for each query, with one matrix product for all of them."""
        count = min(count, len(self.keys))
        standardized = [((query - self.mean) / self.std).astype(np.float32) for query in queries]
        padded = np.zeros((len(queries), self.window, self.keys.shape[2]), np.float32)
        for row, query in enumerate(standardized):
            padded[row, : len(query)] = query
        flat_keys = self.keys.reshape(len(self.keys), -1)
        products = flat_keys @ padded.reshape(len(queries), -1).T  # (windows, queries): k[:n] . q, zeros past n
        answers = []
        for column, query in enumerate(standardized):
            n = len(query)
            if n == 0:  # a feature shorter than the listener's frames: nothing to compare
                answers.append(self.values[:count, :0])
                continue
            approximate = self.prefix_norms[:, n - 1] - 2.0 * products[:, column]
            # A float32 sum of m products is off by at most m * roundoff * |x| |y| (Higham, "Accuracy and
            # Stability of Numerical Algorithms", 3.1): 2 k.q by twice that, |k|^2 by that with x = y = k.
            # Every window whose distance can beat the count-th's lies within twice `error` of the
            # count-th approximation.
            longest, length = self.longest_key, float(np.linalg.norm(query))
            error = padded[column].size * _FLOAT32_ROUNDOFF * (2.0 * longest * length + longest**2)
            kth = np.partition(approximate, count - 1)[count - 1]
            shortlist = np.flatnonzero(approximate <= kth + 2 * error)  # ascending: ties keep the direct order
            distances = np.empty(len(shortlist), np.float32)
            # In blocks: a shortlist of many near-equal windows (long silences) must not copy all the keys at once.
            for start in range(0, len(shortlist), SHORTLIST_BLOCK):
                difference = self.keys[shortlist[start : start + SHORTLIST_BLOCK], :n] - query[None]
                np.square(difference, out=difference)
                distances[start : start + SHORTLIST_BLOCK] = difference.sum(axis=(1, 2))
            chosen = shortlist[np.argsort(distances, kind="stable")[:count]]
            answers.append(self.values[chosen, :n])
        return answers


class Baselines:
    """Fit once on the training sequences, then `predict(name, sequence)` for any test sequence."""

    def __init__(self, train: list[BaselineSequence], window: int = WINDOW_FRAMES, stride: int = 8,
                 seed: int = 0) -> None:
        if not train:
            raise DataError("the baselines need at least one training sequence")
        self.window, self.seed = window, seed
        listeners = [s.listener for s in train]
        self.median = np.median(np.concatenate(listeners), axis=0).astype(np.float32)
        self.audio = _WindowIndex([s.audio_per_frame for s in train], listeners, window, stride)
        has_speaker = all(s.speaker is not None for s in train)
        self.motion = _WindowIndex([s.speaker for s in train], listeners, window, stride) if has_speaker else None  # type: ignore[misc]
        self.random_pool = self.audio.values

    def available(self, sequence: BaselineSequence) -> list[str]:
        """Baselines that can answer for this sequence (Mirror and NN motion need speaker coefficients)."""
        needs_speaker = ("NN motion", "Mirror")
        if sequence.speaker is None or self.motion is None:
            return [name for name in NAMES if name not in needs_speaker]
        return list(NAMES)

    def predict(self, name: str, sequence: BaselineSequence, index: int = 0) -> np.ndarray:
        """(T, 56) listener motion; `index` varies the Random baseline's draw between sequences."""
        frames = len(sequence.listener)
        if name == "Median":
            return np.repeat(self.median[None], frames, axis=0)
        if name == "Mirror":
            return self._speaker(sequence).astype(np.float32)
        if name == "Random":
            return self._random(frames, index, 0)
        if name in ("NN motion", "NN audio"):
            return self.draws(name, sequence, index, 1)[0]
        raise ValueError(f"unknown baseline {name!r}; choose one of {NAMES}")

    def draws(self, name: str, sequence: BaselineSequence, index: int = 0, count: int = 1) -> list[np.ndarray]:
        """Up to `count` different answers for one sequence, the first being `predict`'s.

        Random draws again (its own stream per draw); NN motion and NN audio answer with the k-th
        nearest training window for draw k; Mirror and Median have a single answer.
        """
        frames = len(sequence.listener)
        if name == "Random":
            return [self._random(frames, index, draw) for draw in range(count)]
        if name in ("NN motion", "NN audio"):
            feature = self._speaker(sequence) if name == "NN motion" else sequence.audio_per_frame
            windows = self.motion if name == "NN motion" else self.audio
            assert windows is not None
            parts = windows.nearest_ranked_many([feature[start : start + min(self.window, frames - start)]
                                                 for start in range(0, frames, self.window)], count)
            return [np.concatenate([part[min(draw, len(part) - 1)] for part in parts]).astype(np.float32)
                    for draw in range(count)]
        return [self.predict(name, sequence, index)]

    def _random(self, frames: int, index: int, draw: int) -> np.ndarray:
        """Random's answer; draw 0 is its first (and only, in the paper's table) draw."""
        rng = np.random.default_rng([self.seed, index] if draw == 0 else [self.seed, index, draw])
        return self._by_window(frames, lambda start, n: self.random_pool[rng.integers(len(self.random_pool)), :n])

    def _speaker(self, sequence: BaselineSequence) -> np.ndarray:
        if sequence.speaker is None:
            raise DataError("this baseline needs the speaker's coefficients (speaker_coeffs.npy)")
        return sequence.speaker

    def _by_window(self, frames: int, answer) -> np.ndarray:
        parts = [answer(start, min(self.window, frames - start)) for start in range(0, frames, self.window)]
        return np.concatenate(parts).astype(np.float32)
