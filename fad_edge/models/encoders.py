"""Speaker encoders: one feature vector per video frame from its face image and from its audio."""

from __future__ import annotations

import torch
from torch import nn

from fad_edge.models.config import ModelConfig
from fad_edge.models.resnet import ResNetTrunk
from fad_edge.models.spatial_softmax import SpatialSoftmax

# Per-channel pixel statistics used to centre inputs; images come in as float RGB in [0, 1].
_PIXEL_MEAN = (0.5, 0.5, 0.5)
_PIXEL_STD = (0.25, 0.25, 0.25)


def _trunk_output_size(config: ModelConfig) -> int:
    """Side of the video trunk's last feature map for the configured image size."""
    size = (config.image_size + 1) // 2  # stem conv, stride 2
    if config.stem_pool:
        size = (size + 1) // 2
    for _ in range(len(config.video_widths) - 1):
        size = (size + 1) // 2
    return size


class VideoEncoder(nn.Module):
    """ResNet-18 with spatial-softmax pooling: face images (N, 3, S, S) in [0, 1] -> (N, video_features)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(3, config.video_widths, config.blocks_per_stage, config.stem_pool)
        side = _trunk_output_size(config)
        self.pool = SpatialSoftmax(self.trunk.out_channels, side, side, config.keypoints)
        self.project = nn.Linear(2 * config.keypoints, config.video_features)
        self.register_buffer("pixel_mean", torch.tensor(_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(_PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.pixel_mean) / self.pixel_std
        return self.project(self.pool(self.trunk(x)))  # (N, video_features)


class AudioEncoder(nn.Module):
    """ResNet-18-style trunk on each frame's log-mel window: (N, 1, window, n_mels) -> (N, audio_features)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        # The mel window is small (32 x 80), so no stem pool: keep resolution for the stages.
        self.trunk = ResNetTrunk(1, config.audio_widths, config.blocks_per_stage, stem_pool=False)
        self.project = nn.Linear(self.trunk.out_channels, config.audio_features)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        features = self.trunk(mel)  # (N, C, h, w)
        return self.project(features.mean(dim=(2, 3)))  # (N, audio_features)
