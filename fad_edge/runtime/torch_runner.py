"""The PyTorch reference backend."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from fad_edge.checkpoint import load_checkpoint
from fad_edge.listener_model import ListenerModel
from fad_edge.runtime.base import ClipRunner


class TorchRunner(ClipRunner):
    """Runs a checkpoint in eager PyTorch; the reference the other backends are checked against."""

    name = "torch"

    def __init__(self, model: ListenerModel, steps: int | None = None, seed: int = 0,
                 start_step: int | None = None) -> None:
        settings = model.default_sampler(steps)
        if start_step is not None:
            settings = dataclasses.replace(settings, start_step=start_step)
        super().__init__(model.config, settings, seed)
        self.model = model.eval()
        self.mean, self.std = model.motion_mean.numpy().copy(), model.motion_std.numpy().copy()

    @classmethod
    def from_checkpoint(cls, path: Path, steps: int | None = None, seed: int = 0) -> "TorchRunner":
        return cls(load_checkpoint(path).model, steps, seed)

    @torch.no_grad()
    def encode_batch(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        return self.model.encode(torch.from_numpy(images), torch.from_numpy(mel)).numpy()

    @torch.no_grad()
    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        motion = self.model.diffusion.sample(self.model.elnet, torch.from_numpy(conditions), state.shape, self.settings,
                                             generator, initial=torch.from_numpy(state))
        return self.model.denormalize(motion).numpy()
