"""Validation during training: the diffusion loss and the one-step L2 on a fixed subset of validation clips.

The subset, the diffusion noise and the sampler's noise all come from the run's seed, so every
validation of a run (and of a resumed one) scores the same clips with the same draws; `best` is chosen
on its L2.
"""

from __future__ import annotations

import numpy as np
import torch

from fad_edge.data.dataset import ClipDataset
from fad_edge.listener_model import ListenerModel
from fad_edge.train_batches import stack_windows


@torch.no_grad()
def validate(model: ListenerModel, dataset: ClipDataset, clips: int, seed: int) -> dict:
    """Validation loss and 1-step L2 (FLAME units, all 56 dims) on a fixed subset of clips, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    order = np.random.default_rng(seed).permutation(len(dataset))[:clips]
    generator = torch.Generator().manual_seed(seed)  # on the CPU on any device: the same draws everywhere
    sample_noise = np.random.default_rng(seed)
    losses, errors = [], []
    for start in range(0, len(order), 64):
        batch = {key: value.to(device) for key, value in stack_windows(dataset, order[start : start + 64]).items()}
        condition = model.batch_condition(batch["images"], batch["mel"], batch["valid"])
        motion = model.clip_motion(batch["motion"])
        losses.append(float(model.loss(condition, motion, generator)) * len(motion))
        sample = model.sample_clips(condition, model.default_sampler(1), sample_noise)
        error = model.denormalize(sample) - model.denormalize(motion)  # in FLAME units, as evaluation measures L2
        errors.append(float(error.norm(dim=-1).mean()) * len(motion))
    model.train()
    return {"val_loss": sum(losses) / len(order), "val_l2": sum(errors) / len(order)}
