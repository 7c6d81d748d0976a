"""Per-dimension mean and std of motion, fitted on the training split and stored with the model.

Runners de-normalize with it, so it lives below both training (which fits it) and the runtime
(which reads it from a checkpoint's model.json or an export's manifest.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fad_edge.constants import N_COEFFS
from fad_edge.errors import DataError


class HasMotion(Protocol):
    """A session with listener motion and, where known, the speaker's (each (T, 56))."""

    listener: np.ndarray
    speaker: np.ndarray | None


@dataclass(frozen=True)
class Normalization:
    """Per-dimension mean and std of listener motion over the training split."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls) -> Normalization:
        """Mean 0, std 1 for every dim: leaves coefficients as they are."""
        return cls(np.zeros(N_COEFFS, np.float32), np.ones(N_COEFFS, np.float32))

    @classmethod
    def fit(cls, sessions: Sequence[HasMotion], speaker: bool = False) -> Normalization:
        """Statistics of the listener's motion (or, with `speaker`, of the speaker's, where known)."""
        if not sessions:
            raise DataError("cannot compute normalization: the training split has no sessions")
        parts = [s.speaker if speaker else s.listener for s in sessions]
        known = [p for p in parts if p is not None]
        if not known:
            return cls.identity()
        motion = np.concatenate(known).astype(np.float64)
        std = np.maximum(motion.std(axis=0), 1e-3)  # constant dims must not divide by zero
        return cls(motion.mean(axis=0).astype(np.float32), std.astype(np.float32))

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """(..., 56) coefficients -> zero mean and unit variance per dim, as the model sees them."""
        return (values - self.mean) / self.std

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        """The inverse of `normalize`."""
        return values * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        try:
            mean, std = np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32)
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"normalization must be a mapping with 'mean' and 'std' lists ({error})") from None
        finite = bool(np.all(np.isfinite(mean)) and np.all(np.isfinite(std)))
        if mean.shape != (N_COEFFS,) or std.shape != (N_COEFFS,) or not finite or np.any(std <= 0):
            raise DataError(f"normalization must hold {N_COEFFS} finite means and positive stds")
        return cls(mean, std)
