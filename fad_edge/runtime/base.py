"""The interface every backend implements: speaker frames + audio in, listener motion out."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fad_edge.models.config import ModelConfig


class Runner(Protocol):
    """A backend that turns a speaker's frames and audio into de-normalized (T, 56) listener motion."""

    name: str
    config: ModelConfig

    def run(self, frames: np.ndarray, audio: np.ndarray, sample_rate: int, pad_audio: bool = False) -> np.ndarray:
        """frames: uint8 RGB (T, H, W, 3); audio: mono float; returns float32 (T, 56)."""
        ...
