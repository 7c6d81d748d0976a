"""The contract every backend keeps: speaker frames + audio in, de-normalized (T, 56) listener motion out.

A backend implements two steps, and `ClipRunner` does the rest identically for all of them:
preparing inputs, padding to whole clips, cutting each clip's condition window (its own frames
plus `context_clips` preceding clips, zeros before the start) and drawing the start noise from
one NumPy stream, so every backend sees the same noise for the same seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

import torch

from fad_edge.diffusion import FacialActionDiffusion, SamplerSettings
from fad_edge.models.config import ModelConfig
from fad_edge.data.inputs import SpeakerInputs, prepare_inputs


def clip_condition_windows(features: np.ndarray, clip_len: int, context_clips: int) -> np.ndarray:
    """Frame features (T, D), T a multiple of clip_len -> each clip's condition (T/L, (C+1) L, D).

    NumPy twin of `ListenerModel.clip_conditions`, for backends that do not run torch.
    """
    frames, dim = features.shape
    padded = np.concatenate([np.zeros((context_clips * clip_len, dim), features.dtype), features])
    span = (context_clips + 1) * clip_len
    return np.stack([padded[k * clip_len : k * clip_len + span] for k in range(frames // clip_len)])


class ClipRunner(ABC):
    """Base of TorchRunner, OrtRunner and TrtRunner."""

    name: str = "runner"
    frame_batch: int = 64  # frames per encoder call: bounds memory for any input length
    mean: np.ndarray  # (56,) motion normalization, set by each backend
    std: np.ndarray

    def __init__(self, config: ModelConfig, settings: SamplerSettings, seed: int = 0) -> None:
        self.config = config
        self.settings = settings
        self.seed = seed
        self.diffusion = FacialActionDiffusion(config.train_steps)
        self.diffusion.timesteps(settings)  # validates the step count before any work

    def initial_state(self, clips: int, generator: np.random.Generator, guess: np.ndarray | None = None) -> np.ndarray:
        """x at the first sampling step: start_noise-scaled noise, plus sqrt(alpha_bar) * `guess`.

        `guess` is a normalized motion estimate (clips, L, 56), e.g. the listener's previous clip
        carried forward, which pulls the sample towards it (as SDEdit does); None starts from the mean.
        The noise is drawn whatever start_noise is, so the noise stream is the same in every backend.
        """
        shape = (clips, self.config.clip_len, self.config.n_coeffs)
        start = self.diffusion.timesteps(self.settings)[0]
        state = self.settings.start_noise * self.diffusion.initial_sample(shape, start, generator)
        if guess is not None:
            state = state + self.diffusion.alphas_cumprod[start].sqrt() * torch.from_numpy(np.asarray(guess, np.float32))
        return state.numpy().astype(np.float32)

    @abstractmethod
    def encode_batch(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 images and (N, 1, W, M) mel -> (N, D) frame features."""

    @abstractmethod
    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        """Clip conditions (B, (C+1) L, D) and initial states (B, L, 56) -> de-normalized motion (B, L, 56).

        `generator` supplies the noise of any further denoising steps.
        """

    def encode(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """Frame features for any number of frames, `frame_batch` at a time."""
        parts = [
            self.encode_batch(images[start : start + self.frame_batch], mel[start : start + self.frame_batch])
            for start in range(0, len(images), self.frame_batch)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def run_inputs(self, inputs: SpeakerInputs) -> np.ndarray:
        """Motion (T, 56) for prepared inputs; the padding frames are cut off."""
        features = self.encode(inputs.images, inputs.mel)
        conditions = clip_condition_windows(features, self.config.clip_len, self.config.context_clips)
        generator = np.random.default_rng(self.seed)
        motion = self.clips_motion(conditions, self.initial_state(len(conditions), generator), generator)
        return motion.reshape(-1, self.config.n_coeffs)[: inputs.n_frames].astype(np.float32)

    def run(self, frames: np.ndarray, audio: np.ndarray, sample_rate: int, pad_audio: bool = False) -> np.ndarray:
        """frames: uint8 RGB (T, H, W, 3) of any size; audio: mono float at any rate -> float32 (T, 56)."""
        config = self.config
        inputs = prepare_inputs(frames, audio, sample_rate, config.image_size, config.audio_window_frames,
                                config.n_mels, pad_audio)
        return self.run_inputs(inputs)


Runner = ClipRunner
