"""The PyTorch reference backend: a checkpoint run in eager PyTorch, on the CPU or a CUDA device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fad_edge.checkpoint import load_checkpoint
from fad_edge.listener_model import ListenerModel
from fad_edge.runtime.base import ClipRunner
from fad_edge.sampling import DEFAULT_SAMPLER, SamplerSettings


class TorchRunner(ClipRunner):
    """Runs a checkpoint in eager PyTorch; the reference the other backends are checked against.

    `device` moves the model there; inputs go to it and results come back as NumPy arrays. The
    sampler is `settings` where given, else the named `sampler` with `steps` overriding its steps.
    """

    name = "torch"

    def __init__(self, model: ListenerModel, steps: int | None = None, seed: int = 0,
                 settings: SamplerSettings | None = None, device: torch.device | str = "cpu",
                 sampler: str = DEFAULT_SAMPLER) -> None:
        super().__init__(model.config, settings or SamplerSettings.named(sampler, model.config, steps), seed)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.mean, self.std = model.motion_mean.cpu().numpy().copy(), model.motion_std.cpu().numpy().copy()

    @classmethod
    def from_checkpoint(cls, path: Path, steps: int | None = None, seed: int = 0,
                        device: torch.device | str = "cpu", sampler: str = DEFAULT_SAMPLER) -> TorchRunner:
        return cls(load_checkpoint(path).model, steps, seed, device=device, sampler=sampler)

    @classmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int,
             sampler: str = DEFAULT_SAMPLER) -> TorchRunner:
        return cls.from_checkpoint(path, steps, seed, sampler=sampler)

    @torch.no_grad()
    def encode_video_batch(self, images: np.ndarray) -> np.ndarray:
        return self.model.encode_video(torch.from_numpy(images).to(self.device)).cpu().numpy()

    @torch.no_grad()
    def encode_audio_batch(self, mel: np.ndarray) -> np.ndarray:
        return self.model.encode_audio(torch.from_numpy(mel).to(self.device)).cpu().numpy()

    @torch.no_grad()
    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        motion = self.model.sample_clips(torch.from_numpy(conditions).to(self.device), self.settings, generator,
                                         initial=torch.from_numpy(state).to(self.device))
        return self.model.denormalize(motion).cpu().numpy()
