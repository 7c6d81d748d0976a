"""The PyTorch reference backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fad_edge.checkpoint import load_checkpoint
from fad_edge.diffusion import SamplerSettings
from fad_edge.listener_model import ListenerModel
from fad_edge.runtime.inputs import SpeakerInputs, prepare_inputs


class TorchRunner:
    """Runs a checkpoint in eager PyTorch; the reference the other backends are checked against."""

    name = "torch"

    def __init__(self, model: ListenerModel, steps: int | None = None, seed: int = 0,
                 start_step: int | None = None) -> None:
        self.model = model.eval()
        self.config = model.config
        settings = model.default_sampler(steps)
        if start_step is not None:
            settings = SamplerSettings(settings.steps, start_step, settings.clip_sample)
        self.settings = settings
        self.seed = seed

    @classmethod
    def from_checkpoint(cls, path: Path, steps: int | None = None, seed: int = 0) -> "TorchRunner":
        return cls(load_checkpoint(path).model, steps, seed)

    def run_inputs(self, inputs: SpeakerInputs) -> np.ndarray:
        """Motion (T, 56) for prepared inputs; the padding frames are cut off."""
        generator = np.random.default_rng(self.seed)  # the same noise stream in every backend
        motion = self.model.generate(
            torch.from_numpy(inputs.images), torch.from_numpy(inputs.mel), self.settings, generator
        )
        return motion[: inputs.n_frames].numpy().astype(np.float32)

    def run(self, frames: np.ndarray, audio: np.ndarray, sample_rate: int, pad_audio: bool = False) -> np.ndarray:
        config = self.config
        inputs = prepare_inputs(frames, audio, sample_rate, config.image_size, config.audio_window_frames,
                                config.n_mels, pad_audio)
        return self.run_inputs(inputs)
