"""A ClipRunner stand-in that costs nothing, for testing the stream's logic without a model or an export."""

from __future__ import annotations

import collections
import threading

import numpy as np

from fad_edge.constants import CLIP_LEN, MELS_PER_FRAME, N_COEFFS
from fad_edge.models.config import ModelConfig
from fad_edge.models.presets import preset


class FakeRunner:
    """The ClipRunner contract, cheaply and deterministically.

    A frame's video features are [mean brightness of its image, 0...] and its audio features [mean
    of its own 4 mel rows, 0...]; a clip's motion is mean + std * (state + [own brightness, own mel,
    mean brightness of the context frames, 0...]) per frame. So motion[:, 0] tells which frame the
    model saw in each slot and motion[:, 1] what audio, and tests can check alignment exactly.
    """

    name = "fake"

    def __init__(self, config: ModelConfig | None = None, seed: int = 0) -> None:
        self.config = config or preset("tiny", context_clips=1)
        self.settings = None
        self.seed = seed
        self.mean = np.zeros(N_COEFFS, np.float32)
        self.std = np.ones(N_COEFFS, np.float32)
        self.calls: collections.Counter[str] = collections.Counter()
        self.threads: set[str] = set()
        self.closed = False
        self.video_batches: list[int] = []  # frames per video encoder call, in order
        self.audio_batches: list[int] = []  # frames per audio encoder call, in order
        self.gate: threading.Event | None = None  # when set, clips_motion waits for it (a slow model)

    def encode_video_batch(self, images: np.ndarray) -> np.ndarray:
        self.calls["encode_video"] += 1
        self.video_batches.append(len(images))
        self.threads.add(threading.current_thread().name)
        features = np.zeros((len(images), self.config.video_features), np.float32)
        features[:, 0] = images.mean(axis=(1, 2, 3))
        return features

    def encode_audio_batch(self, mel: np.ndarray) -> np.ndarray:
        self.calls["encode_audio"] += 1
        self.audio_batches.append(len(mel))
        self.threads.add(threading.current_thread().name)
        features = np.zeros((len(mel), self.config.audio_output_dim), np.float32)
        features[:, 0] = mel[:, 0, -MELS_PER_FRAME:, :].mean(axis=(1, 2))
        return features

    def initial_state(self, clips: int, generator: np.random.Generator, guess: np.ndarray | None = None) -> np.ndarray:
        generator.standard_normal((clips, CLIP_LEN, N_COEFFS))  # draws noise as a real runner does
        state = np.zeros((clips, CLIP_LEN, N_COEFFS), np.float32)
        return state if guess is None else state + np.asarray(guess, np.float32)

    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        self.calls["clips_motion"] += 1
        if self.gate is not None:
            self.gate.wait()
        signal = np.zeros_like(state)
        signal[..., 0] = conditions[:, -CLIP_LEN:, 0]
        signal[..., 1] = conditions[:, -CLIP_LEN:, self.config.video_features]
        if conditions.shape[1] > CLIP_LEN:
            signal[..., 2] = conditions[:, :-CLIP_LEN, 0].mean(axis=1, keepdims=True)
        return self.mean + self.std * (state + signal)

    def close(self) -> None:
        self.closed = True
