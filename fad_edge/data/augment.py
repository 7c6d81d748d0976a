"""Training-time augmentation of speaker inputs, one draw per window so a window stays one person.

A training split holds a few dozen speakers; without augmentation the encoders learn who is
speaking (skin colour, lighting, voice level) instead of what they do, and the listener rules fit
the training speakers only (seen here: the smile-mirroring rule at r = 0.98 on training sessions and
0.68 on held-out ones). Each window gets one photometric change (per-channel gain, brightness,
contrast), one audio gain and one masked band of mel bins (SpecAugment's frequency mask), and
optionally one shift of a few pixels (`max_shift`, off by default: on the demo's 48x48 faces a
3-pixel shift slowed the video encoder's learning of the expression, held-out L2 0.763 -> 0.710 and
0.691 -> 0.675 on two seeds without it; docs/studies.md: every seed learns). None of these changes
what the listener reacts to: no flips (a mirrored head would turn the other way) and no time warps
(the rules have exact lags).

The random draws come from a CPU generator whatever the batch's device, so a batch is augmented
alike on the CPU and on a GPU; the arithmetic runs where the batch is (on a GPU, in the training
process: a worker augmenting a large batch on one core would starve the GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fad_edge.data.audio_features import SILENCE
from fad_edge.device_copies import to_device


@dataclass(frozen=True)
class AugmentConfig:
    channel_gain: float = 0.2  # each RGB channel scaled by 1 +- this
    brightness: float = 0.1  # added to every pixel, +- this
    contrast: float = 0.2  # deviation from the mean scaled by 1 +- this
    max_shift: int = 0  # pixels, in x and y (0: no shift)
    audio_gain_db: float = 6.0  # +- this many dB on the mel power
    mel_mask: int = 8  # up to this many adjacent mel bins replaced by silence


def _uniform(generator: torch.Generator, shape: tuple[int, ...], half_width: float) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * half_width


def augment_images(images: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """(B, F, 3, S, S) in [0, 1] -> the same, each window's frames changed alike."""
    batch, device = images.shape[0], images.device
    gain = 1 + to_device(_uniform(generator, (batch, 1, 3, 1, 1), config.channel_gain), device)
    contrast = 1 + to_device(_uniform(generator, (batch, 1, 1, 1, 1), config.contrast), device)
    brightness = to_device(_uniform(generator, (batch, 1, 1, 1, 1), config.brightness), device)
    mean = images.mean(dim=(1, 2, 3, 4), keepdim=True)
    out = ((images * gain - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)
    if config.max_shift > 0:
        shifts = torch.randint(-config.max_shift, config.max_shift + 1, (batch, 2), generator=generator)
        out = _shift(out, to_device(shifts, device))
    return out


def _shift(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, S, S) with window b moved by shifts[b] = (dy, dx) pixels, the edge rows/columns repeated into the
    gap: one gather for the whole batch (a loop over windows would launch a handful of GPU kernels per window)."""
    side_y, side_x = images.shape[-2:]
    rows = (torch.arange(side_y, device=images.device) - shifts[:, :1]).clamp(0, side_y - 1)  # (B, S)
    cols = (torch.arange(side_x, device=images.device) - shifts[:, 1:]).clamp(0, side_x - 1)  # (B, S)
    windows = torch.arange(len(images), device=images.device)[:, None, None]
    moved = images.permute(0, 3, 4, 1, 2)[windows, rows[:, :, None], cols[:, None, :]]  # (B, S, S, F, 3)
    return moved.permute(0, 3, 4, 1, 2).contiguous()


def augment_mel(mel: torch.Tensor, generator: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """(B, F, 1, W, M) scaled log-mel -> the same with one gain and one masked band per window."""
    batch, n_mels = mel.shape[0], mel.shape[-1]
    # Scaled log-mel is (log10 power + 4) / 4: a gain of g dB adds g / 10 / 4, silence stays silence.
    shift = to_device(_uniform(generator, (batch, 1, 1, 1, 1), config.audio_gain_db) / 40.0, mel.device)
    out = torch.where(mel > SILENCE, mel + shift, mel).clamp_(min=SILENCE)
    if config.mel_mask > 0:
        widths = torch.randint(0, config.mel_mask + 1, (batch,), generator=generator)
        starts = (torch.rand(batch, generator=generator) * (n_mels - widths)).long()
        bins = torch.arange(n_mels)
        masked = to_device((bins >= starts[:, None]) & (bins < (starts + widths)[:, None]), mel.device)  # (B, M)
        out = torch.where(masked[:, None, None, None, :], torch.full_like(out, SILENCE), out)
    return out


def augment_batch(batch: dict[str, torch.Tensor], generator: torch.Generator,
                  config: AugmentConfig = AugmentConfig()) -> dict[str, torch.Tensor]:
    """A training batch with its speaker images and mel augmented (motion and masks untouched).

    A batch of precomputed video features instead of images (frozen_video.py) has only its mel augmented.
    """
    augmented = {**batch}
    if "images" in batch:
        augmented["images"] = augment_images(batch["images"], generator, config)
    augmented["mel"] = augment_mel(batch["mel"], generator, config)
    return augmented
