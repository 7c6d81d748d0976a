"""Pretraining the prosody branch on the speaker's log-mel alone, before FAD's own training.

Why: the audible cues (a brow raise after a rising phrase end, a nod after a falling one) are a small
share of the diffusion loss, and a FAD step reads only the few hundred frames its encoders can afford,
so a short run barely learns them. The prosody branch on its own is cheap (no images, no encoders, no
diffusion): it can first read many more frames a step, with the listener's motion as a direct
regression target through a linear readout, and FAD's training then starts from a branch that already
hears the cues and fine-tunes it. The readout is dropped afterwards; FAD learns its own use of the
branch's features.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fad_edge.constants import EXPRESSION, N_COEFFS, ROTATION
from fad_edge.data.audio_features import frame_spectra
from fad_edge.data.dataset import SessionFeatures
from fad_edge.device_copies import to_device
from fad_edge.models.elnet import ProsodyBranch

WINDOW_FRAMES = 256  # frames per pretraining window
# A window's first frames hear zeros where their past would be, as FAD's condition window's first frames do;
# their error is not counted.
WARMUP_FRAMES = 64
LEARNING_RATE = 2e-3


@dataclass(frozen=True)
class PretrainReport:
    steps: int
    windows: int
    window_frames: int
    first_loss: float
    last_loss: float  # the mean over the last tenth of the steps (one step's loss is noisy)
    seconds: float
    part: str = "prosody branch"  # what was pretrained


def session_pairs(sessions: Sequence[SessionFeatures], motions: Sequence[np.ndarray]
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per session: its frames' spectra (n_mels, T) and its normalized listener motion (56, T).

    `motions` are the sessions' motions (T, 56) as the training normalizes them (`ClipDataset.motion`).
    """
    pairs = []
    for session, motion in zip(sessions, motions, strict=True):
        spectra = torch.from_numpy(frame_spectra(session.mel))
        frames = spectra.shape[1]
        pairs.append((spectra, torch.from_numpy(np.ascontiguousarray(motion[:frames].T, dtype=np.float32))))
    return pairs


def group_weights(device: torch.device | None = None) -> torch.Tensor:
    """Loss weight per normalized motion dim: the 50 expression dims and the 6 jaw and head dims weigh alike as groups.

    Not FAD's own loss weights (`ListenerModel.dim_weights`), which weigh the expression by its variance and each
    rotation dim as a mean expression dim: with those the readout's head pitch followed the nod at r 0.29 after 400
    steps, with these at 0.50 (docs/studies.md: prosody pretraining).
    """
    weights = torch.ones(N_COEFFS, device=device)
    weights[ROTATION] = EXPRESSION.stop / (N_COEFFS - ROTATION.start)
    return weights


def pretrain_prosody(branch: ProsodyBranch, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                     dim_weights: torch.Tensor, steps: int, windows: int, seed: int) -> PretrainReport:
    """Train `branch` in place (on its own device) to regress the motion from the spectra; return the losses.

    Each step draws `windows` windows of `WINDOW_FRAMES` frames from the sessions of `pairs` that hold
    that many (drawn uniformly, at uniform offsets; where none does, shorter windows from all of them)
    with a NumPy generator seeded by `seed`, so the result depends on the seed alone and the global RNG
    that FAD's training draws from is left untouched. The loss is the mean squared error per dim
    weighted by `dim_weights` (`group_weights` in training).
    """
    if steps < 1 or windows < 1 or not pairs:
        raise ValueError(f"pretraining needs steps, windows and sessions, got {steps}, {windows}, {len(pairs)}")
    device = dim_weights.device
    # Windows come from the sessions long enough for a whole one; only where none is, from all of them, as long
    # as the shortest allows (one short clip in a real dataset must not shorten every window).
    long_enough = [pair for pair in pairs if pair[0].shape[1] >= WINDOW_FRAMES]
    pairs = long_enough or pairs
    frames = min(WINDOW_FRAMES, min(spectra.shape[1] for spectra, _ in pairs))
    warmup = min(WARMUP_FRAMES, frames // 4)
    with torch.random.fork_rng(devices=[]):  # the readout's initial weights: from the seed, not the global RNG
        torch.manual_seed(seed)
        readout = nn.Conv1d(2 * branch.channels, dim_weights.numel(), 1).to(device)
    parameters = list(branch.parameters()) + list(readout.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=LEARNING_RATE)
    rng = np.random.default_rng(seed)
    weights = (dim_weights / dim_weights.mean())[None, :, None]
    losses: list[torch.Tensor] = []
    started = time.time()
    branch.train()
    for _ in range(steps):
        picks = rng.integers(len(pairs), size=windows)
        starts = [int(rng.integers(0, pairs[i][0].shape[1] - frames + 1)) for i in picks]
        spectra = to_device(torch.stack([pairs[i][0][:, a : a + frames] for i, a in zip(picks, starts)]), device)
        motion = to_device(torch.stack([pairs[i][1][:, a : a + frames] for i, a in zip(picks, starts)]), device)
        error = (readout(branch(spectra)) - motion)[:, :, warmup:]
        loss = (error.square() * weights).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())  # read once at the end: a read each step would wait for the GPU
    values = torch.stack(losses).tolist() if losses else []
    tail = values[-max(1, steps // 10):]
    return PretrainReport(steps, windows, frames, values[0], sum(tail) / len(tail), time.time() - started)
