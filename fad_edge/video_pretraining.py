"""Pretraining the video encoder on single frames, before FAD's own training: read the speaker's face first.

Why: the visible cues (the listener mirrors the speaker's smile and follows the head) are read by the
video encoder, which the small preset trains with the speaker loss alone (predict the speaker's own
coefficients from each frame). In FAD's steps that loss sees a few windows of consecutive frames,
nearly alike, from four speakers a step, and the encoder is still learning the face when the run
ends: over five seeds of the demo's training the listener's smile followed the held-out speaker's at
r 0.91-0.95 (`fad-edge rules`). The same encoder and head first trained on frames drawn at random
from every training session, each with its own photometric change, see the face from FAD's first
step: 0.98-0.99 on every seed, for 19-39 s of 2-core time (docs/studies.md: video pretraining).
FAD's training then goes on training both with the same loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fad_edge.data.augment import AugmentConfig, augment_images
from fad_edge.device_copies import to_device
from fad_edge.prosody_pretraining import PretrainReport
from fad_edge.train_precision import MixedPrecision

LEARNING_RATE = 2e-3
MAX_GRAD_NORM = 1.0


class FramePool:
    """Every frame of the sessions whose speaker coefficients are known, with those coefficients (normalized).

    Frames are drawn from here by (session, frame) index, so no frame is copied until a step asks for it.
    """

    def __init__(self, frames: Sequence[np.ndarray], speaker: Sequence[np.ndarray | None]) -> None:
        pairs = [(f, s) for f, s in zip(frames, speaker, strict=True) if s is not None and len(f)]
        self.frames = [f for f, _ in pairs]  # (T, S, S, 3) uint8 each
        self.speaker = [s[: len(f)] for f, s in pairs]  # (T, 56) float32 each
        counts = np.array([len(s) for s in self.speaker], dtype=np.int64)  # each cut to its frames above
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def draw(self, rng: np.random.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` frames drawn uniformly: images (count, 3, S, S) in [0, 1] and their coefficients (count, 56)."""
        flat = np.sort(rng.integers(len(self), size=count))
        sessions = np.searchsorted(self.offsets, flat, side="right") - 1
        rows = flat - self.offsets[sessions]
        images = np.stack([self.frames[s][r] for s, r in zip(sessions, rows)])
        targets = np.stack([self.speaker[s][r] for s, r in zip(sessions, rows)])
        return (torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0),
                torch.from_numpy(targets.astype(np.float32, copy=False)))


def pretrain_video(encoder: nn.Module, head: nn.Module, pool: FramePool, steps: int, frames_per_step: int,
                   seed: int, precision: MixedPrecision, augment: AugmentConfig | None = AugmentConfig(),
                   after_step: Callable[[int], None] | None = None) -> PretrainReport:
    """Train `encoder` and `head` in place (on their own device) to regress each frame's speaker coefficients.

    Each step draws `frames_per_step` frames uniformly from `pool` with a NumPy generator seeded by `seed`,
    and gives each frame its own photometric change (`augment`, None: none) from a torch generator of the
    same seed, so the result depends on the seed alone and the global RNG that FAD's training draws from
    is left untouched. The loss is the speaker loss's video term: the mean squared error over the
    normalized coefficients. The encoder's normalization statistics are updated as in training.
    `after_step(n)`, where given, is called after step n (1-based): a probe scoring the encoder as it learns.
    """
    if steps < 1 or frames_per_step < 1 or not len(pool):
        raise ValueError(f"pretraining needs steps, frames and known speakers, got {steps}, {frames_per_step}, "
                         f"{len(pool)}")
    device = next(head.parameters()).device
    parameters = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    losses: list[torch.Tensor] = []
    started = time.time()
    encoder.train()
    head.train()
    for step in range(1, steps + 1):
        images, targets = pool.draw(rng, frames_per_step)
        images, targets = to_device(images, device), to_device(targets, device)
        if augment is not None:  # one draw per frame: a (frames, 1, ...) batch of one-frame windows
            images = augment_images(images[:, None], generator, augment)[:, 0]
        images = images.contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            loss = (head(encoder(images)).float() - targets).square().mean()
        optimizer.zero_grad(set_to_none=True)
        precision.backward_and_step(loss, optimizer, MAX_GRAD_NORM)
        losses.append(loss.detach())  # read once at the end: a read each step would wait for the GPU
        if after_step is not None:
            after_step(step)
    values = torch.stack(losses).tolist()
    tail = values[-max(1, steps // 10):]
    return PretrainReport(steps, frames_per_step, 1, values[0], sum(tail) / len(tail), time.time() - started,
                          part="video encoder")
