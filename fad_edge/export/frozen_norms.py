"""Frozen GroupNorm statistics: the encoders' GroupNorms as fixed per-channel affines, for INT8 graphs.

GroupNorm normalizes each image by its own statistics, so an INT8 graph leaves int8 around every
norm (dequantize, InstanceNormalization, quantize, and in ONNX Runtime a layout transpose on each
side of every int8 convolution). Speaker face crops are alike from frame to frame, so a group's
per-image mean and variance vary little: replaced by their averages over calibration frames, each
GroupNorm becomes an eval-mode BatchNorm, which the export folds into the convolution before it
(`fold_batch_norms`), and the encoder runs in int8 from its input to its output.

The FP32 graphs keep the exact GroupNorms; the export builds only the INT8 encoders from frozen
copies, and keeps them only where the held-out L2 stays within its budget (`_export_int8`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from fad_edge.listener_model import ListenerModel
from fad_edge.models.encoders import AudioEncoder, VideoEncoder


def frozen_group_norm(norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor) -> nn.BatchNorm2d:
    """An eval-mode BatchNorm2d equal to `norm` with every image's group statistics fixed to (mean, var) per group."""
    if norm.weight is None or norm.bias is None:
        raise ValueError("frozen_group_norm needs a GroupNorm with its affine parameters")
    per_group = norm.num_channels // norm.num_groups
    frozen = nn.BatchNorm2d(norm.num_channels, eps=norm.eps).eval()
    with torch.no_grad():
        frozen.running_mean.copy_(mean.repeat_interleave(per_group))  # type: ignore[union-attr]
        frozen.running_var.copy_(var.repeat_interleave(per_group))  # type: ignore[union-attr]
        frozen.weight.copy_(norm.weight)
        frozen.bias.copy_(norm.bias)
    return frozen


class _GroupStatistics:
    """Running sums of each image's per-group mean and (biased) variance at one GroupNorm's input."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        self.groups = norm.num_groups
        self.mean = torch.zeros(self.groups, dtype=torch.float64)
        self.var = torch.zeros(self.groups, dtype=torch.float64)
        self.images = 0

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        grouped = inputs[0].detach().reshape(inputs[0].shape[0], self.groups, -1).double()
        self.mean += grouped.mean(-1).sum(0)
        self.var += grouped.var(-1, unbiased=False).sum(0)
        self.images += grouped.shape[0]


@torch.no_grad()
def freeze_group_norms(encoder: VideoEncoder | AudioEncoder, batches: Iterable[torch.Tensor]) -> int:
    """Replace, in place, the trunk GroupNorms of an eval-mode `encoder` by frozen ones; return how many.

    Each keeps its mean per-image statistics over `batches`, gathered in one pass of the unchanged
    encoder: freezing the norms one at a time, each on the output of the frozen ones before it, gave
    the same held-out L2 on the demo's model at ten times the cost.
    """
    if encoder.training:
        raise ValueError("freeze_group_norms needs an eval-mode encoder")
    norms = {name: module for name, module in encoder.trunk.named_modules() if isinstance(module, nn.GroupNorm)}
    if not norms:  # BatchNorm trunks fold as they are: no pass over the frames
        return 0
    statistics = {name: _GroupStatistics(norm) for name, norm in norms.items()}
    hooks = [norm.register_forward_hook(statistics[name]) for name, norm in norms.items()]
    try:
        for batch in batches:
            encoder(batch)
    finally:
        for hook in hooks:
            hook.remove()
    for name, norm in norms.items():
        seen = statistics[name]
        if seen.images == 0:
            raise ValueError("freeze_group_norms needs at least one calibration batch")
        parent_name, _, child = name.rpartition(".")
        parent = encoder.trunk.get_submodule(parent_name) if parent_name else encoder.trunk
        mean, var = (seen.mean / seen.images).float(), (seen.var / seen.images).float()
        setattr(parent, child, frozen_group_norm(norm, mean, var))
    return len(norms)


def with_frozen_encoders(model: ListenerModel, images: Iterable[torch.Tensor],
                         mel: Iterable[torch.Tensor]) -> tuple[ListenerModel, int]:
    """An eval-mode copy of `model` whose encoders' GroupNorms are frozen; and how many norms were frozen."""
    frozen = copy.deepcopy(model).eval()
    count = freeze_group_norms(frozen.video_encoder, images) + freeze_group_norms(frozen.audio_encoder, mel)
    return frozen, count
