"""The PyTorch reference backend: a checkpoint run in eager PyTorch on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fad_edge.checkpoint import load_checkpoint
from fad_edge.listener_model import ListenerModel
from fad_edge.runtime.base import ClipRunner
from fad_edge.sampling import SamplerSettings


class TorchRunner(ClipRunner):
    """Runs a checkpoint in eager PyTorch; the reference the other backends are checked against."""

    name = "torch"

    def __init__(self, model: ListenerModel, steps: int | None = None, seed: int = 0,
                 settings: SamplerSettings | None = None) -> None:
        super().__init__(model.config, settings or SamplerSettings.from_config(model.config, steps), seed)
        self.model = model.eval()
        self.mean, self.std = model.motion_mean.numpy().copy(), model.motion_std.numpy().copy()

    @classmethod
    def from_checkpoint(cls, path: Path, steps: int | None = None, seed: int = 0) -> TorchRunner:
        return cls(load_checkpoint(path).model, steps, seed)

    @classmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int) -> TorchRunner:
        return cls.from_checkpoint(path, steps, seed)

    @torch.no_grad()
    def encode_batch(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        return self.model.encode(torch.from_numpy(images), torch.from_numpy(mel)).numpy()

    @torch.no_grad()
    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        motion = self.model.sample_clips(torch.from_numpy(conditions), self.settings, generator,
                                         initial=torch.from_numpy(state))
        return self.model.denormalize(motion).numpy()
