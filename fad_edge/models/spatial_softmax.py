"""Spatial-softmax pooling (Levine et al. 2016; robomimic / Diffusion Policy's replacement for GAP).

Each of K learned keypoint maps is turned into a probability over the H x W grid and reduced to its
expected (x, y) position, so the pooled feature says *where* things are (a head turn, a mouth corner),
which global average pooling throws away.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) feature map -> (N, 2K) expected keypoint coordinates in [-1, 1]."""

    grid: torch.Tensor

    def __init__(self, in_channels: int, height: int, width: int, keypoints: int) -> None:
        super().__init__()
        self.keypoint_conv = nn.Conv2d(in_channels, keypoints, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        # (H*W, 2): the grid position of every cell, as a fixed buffer so export sees a constant.
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1), persistent=False)
        self.keypoints = keypoints

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.keypoint_conv(features)  # (N, K, H, W)
        attention = torch.softmax(maps.flatten(2), dim=-1)  # (N, K, H*W)
        coordinates = attention @ self.grid  # (N, K, 2)
        return coordinates.flatten(1)  # (N, 2K)
