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

from fad_edge.constants import MELS_PER_FRAME, WINDOW_FRAMES
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
        frames = len(self.mel) // MELS_PER_FRAME
        return self.mel[: frames * MELS_PER_FRAME].reshape(frames, MELS_PER_FRAME, -1).mean(1)


DISTANCE_BLOCK = 64  # training windows per block of the nearest-neighbour search


class _WindowIndex:
    """Training windows of one feature (speaker motion or audio) and the listener motion that went with them."""

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
        self.keys = ((stacked - self.mean) / self.std).astype(np.float32)
        self.values = np.stack(values)

    def nearest(self, query: np.ndarray) -> np.ndarray:
        """Listener motion of the training window nearest to `query` (n <= window frames, compared on n)."""
        return self.nearest_ranked(query, 1)[0]

    def nearest_ranked(self, query: np.ndarray, count: int) -> np.ndarray:
        """(count, n, 56): listener motion of the `count` training windows nearest to `query`, nearest first."""
        n = len(query)
        query = ((query - self.mean) / self.std).astype(np.float32)
        distances = np.empty(len(self.keys), np.float32)
        # In blocks whose differences stay in the CPU's cache: twice as fast as one (windows, n, D) temporary,
        # and the same sums (each window's sum is its own reduction).
        for start in range(0, len(self.keys), DISTANCE_BLOCK):
            difference = self.keys[start : start + DISTANCE_BLOCK, :n] - query[None]
            np.square(difference, out=difference)
            distances[start : start + DISTANCE_BLOCK] = difference.sum(axis=(1, 2))
        return self.values[np.argsort(distances, kind="stable")[:count], :n]


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
        if name == "NN audio":
            audio = sequence.audio_per_frame
            return self._by_window(frames, lambda start, n: self.audio.nearest(audio[start : start + n]))
        if name == "NN motion":
            speaker = self._speaker(sequence)
            assert self.motion is not None
            motion = self.motion
            return self._by_window(frames, lambda start, n: motion.nearest(speaker[start : start + n]))
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
            parts = [windows.nearest_ranked(feature[start : start + self.window], count)
                     for start in range(0, frames, self.window)]
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
