"""A ResNet-18 trunk written out (torchvision does not import beside our torch build).

GroupNorm replaces BatchNorm, with 16 channels per group as Diffusion Policy's `replace_bn_with_gn`
does: batch statistics are unreliable for the small, correlated batches of clip training.
"""

from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 16 channels per group (at least one group)."""
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34's block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), group_norm(out_channels)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetTrunk(nn.Module):
    """ResNet-18 up to its last stage: stem (7x7 stride 2, optional max-pool) and four stages.

    Returns the last feature map (N, widths[-1], H/32, W/32) (H/16 without the stem pool); pooling is
    left to the caller (spatial softmax for video, global average for audio).
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], blocks_per_stage: tuple[int, ...], stem_pool: bool = True,
        pool_stride: tuple[int, int] = (2, 2),
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
            group_norm(widths[0]),
            nn.ReLU(inplace=True),
        ]
        if stem_pool:
            stem.append(nn.MaxPool2d(3, pool_stride, 1))
        self.stem = nn.Sequential(*stem)
        stages = []
        previous = widths[0]
        for index, (width, blocks) in enumerate(zip(widths, blocks_per_stage)):
            stride = 1 if index == 0 else 2
            layers = [BasicBlock(previous, width, stride)]
            layers += [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))
