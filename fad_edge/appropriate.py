"""Speaker windows and the real reactions that are appropriate to each, for the REACT metrics.

REACT (Song et al. 2023, "Multiple appropriate facial reaction generation in dyadic interaction
settings: what, why and how?", arXiv 2302.06514, and the REACT 2023/2024 challenges) calls a
listener's reaction appropriate to a speaker behaviour when a real listener showed it in response to
that behaviour or to one similar to it: a neighbour matrix marks, for each speaker clip, the clips
whose speaker behaviour is close, and their listeners form the clip's set of appropriate reactions.

Sequences are cut into windows of `window` frames from each session's start, end to end; a last
part shorter than a window is left out (every window has the same length, which FRDvs needs and DTW's
cost favours: DTW grows with the square of the length). Each window's appropriate set is:
- with alternative listeners (the synthetic generator's listener_alternatives.npy, in every
  session): the window's own real listener and the K alternatives over the same frames;
- otherwise the real listeners of the window itself and of its `neighbours` nearest speaker windows
  in the evaluated split (`nearest_windows`), or those of a neighbour list given as REACT gives one.
Index 0 of every set is the window's own real listener, so that it can be held out and scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fad_edge.constants import MELS_PER_FRAME


@dataclass
class ReactSession:
    """What the appropriate sets are built from, for one session of the evaluated split."""

    name: str
    listener: np.ndarray  # (T, 56)
    speaker: np.ndarray | None = None  # (T, 56) where known
    mel: np.ndarray | None = None  # (T * 4, n_mels): the neighbour rule's fallback without speaker motion
    alternatives: np.ndarray | None = None  # (K, T, 56) other appropriate listeners


@dataclass
class ReactWindows:
    """The windows of a split: where they lie, what the speaker did, and what was appropriate."""

    names: list[str]  # "session@start"
    starts: list[tuple[int, int]]  # (session index, first frame)
    window: int
    listeners: np.ndarray  # (N, W, 56) each window's own real listener
    speakers: np.ndarray | None  # (N, W, 56), None unless every session has speaker coefficients
    appropriate: list[np.ndarray]  # N arrays (K_i, W, 56); index 0 is the window's own listener
    source: str  # "alternatives" or "neighbours"

    def cut(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Per-session sequences (T, ...) -> their windows (N, W, ...), at the same places as these windows."""
        return np.stack([sequences[session][start : start + self.window] for session, start in self.starts])

    def cut_draws(self, draws: list[list[np.ndarray]]) -> np.ndarray:
        """Per session, m sequences (T, 56) -> (N, m, W, 56)."""
        return np.stack([np.stack([d[start : start + self.window] for d in draws[session]])
                         for session, start in self.starts])


def window_starts(frames: int, window: int) -> list[int]:
    """First frames of the whole windows that fit in `frames`, end to end from the start."""
    return list(range(0, frames - window + 1, window))


def _standardized(windows: np.ndarray) -> np.ndarray:
    flat = windows.reshape(-1, windows.shape[-1])
    return (windows - flat.mean(0)) / (flat.std(0) + 1e-6)


def nearest_windows(features: np.ndarray, neighbours: int) -> list[list[int]]:
    """For each window (N, W, F), itself and then its `neighbours` nearest other windows.

    Nearness is the mean squared difference over frames and features after standardizing each
    feature over all windows: the nearest-neighbour baselines' measure, applied to the speaker.
    """
    keys = _standardized(np.asarray(features, np.float64)).reshape(len(features), -1)
    squared = (keys**2).sum(1)
    distances = squared[:, None] + squared[None] - 2 * keys @ keys.T
    np.fill_diagonal(distances, -np.inf)  # itself first, whatever rounding does
    count = min(neighbours + 1, len(features))
    return [[int(j) for j in np.argsort(row, kind="stable")[:count]] for row in distances]


def _speaker_features(session: ReactSession, frames: int, motion: bool) -> np.ndarray:
    """What the neighbour rule compares: speaker motion where every session has it (`motion`), else each
    frame's mean log-mel, the same kind of feature for every window."""
    if motion and session.speaker is not None:
        return session.speaker[:frames]
    if session.mel is None:
        raise ValueError(f"{session.name}: neither speaker coefficients nor audio features to find neighbours by")
    mel = session.mel[: frames * MELS_PER_FRAME]
    return mel.reshape(frames, MELS_PER_FRAME, -1).mean(1)


def build_windows(sessions: list[ReactSession], window: int, neighbours: int,
                  neighbour_lists: list[list[int]] | None = None) -> ReactWindows | None:
    """Windows of every session and their appropriate sets; None when no session is a window long.

    `neighbour_lists` (REACT's neighbour matrix as lists: for window i, the windows whose listeners are
    appropriate to it) overrides both the alternatives and the nearest-window rule.
    """
    starts = [(index, start) for index, s in enumerate(sessions) for start in window_starts(len(s.listener), window)]
    if not starts:
        return None
    names = [f"{sessions[i].name}@{start}" for i, start in starts]
    listeners = np.stack([sessions[i].listener[start : start + window] for i, start in starts])
    has_speaker = all(s.speaker is not None for s in sessions)
    speakers = np.stack([sessions[i].speaker[start : start + window] for i, start in starts]) if has_speaker else None  # type: ignore[index]
    counts = {None if s.alternatives is None else len(s.alternatives) for s in sessions}
    if neighbour_lists is None and len(counts) == 1 and None not in counts and 0 not in counts:
        appropriate = [np.concatenate([listeners[n][None], sessions[i].alternatives[:, start : start + window]])  # type: ignore[index]
                       for n, (i, start) in enumerate(starts)]
        return ReactWindows(names, starts, window, listeners, speakers, appropriate, "alternatives")
    if neighbour_lists is None:
        features = np.stack([_speaker_features(sessions[i], start + window, has_speaker)[start:]
                             for i, start in starts])
        neighbour_lists = nearest_windows(features, neighbours)
    if len(neighbour_lists) != len(starts):
        raise ValueError(f"{len(neighbour_lists)} neighbour lists for {len(starts)} windows")
    appropriate = [listeners[[n, *[j for j in found if j != n]]] for n, found in enumerate(neighbour_lists)]
    return ReactWindows(names, starts, window, listeners, speakers, appropriate, "neighbours")
