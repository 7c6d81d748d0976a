"""Speaker encoders: one feature vector per video frame from its face image and from its audio."""

from __future__ import annotations

import torch
from torch import nn

from fad_edge.constants import MELS_PER_FRAME
from fad_edge.models.config import ModelConfig
from fad_edge.models.resnet import ResNetTrunk
from fad_edge.models.spatial_softmax import SpatialSoftmax

# Per-channel pixel statistics used to centre inputs; images come in as float RGB in [0, 1].
_PIXEL_MEAN = (0.5, 0.5, 0.5)
_PIXEL_STD = (0.25, 0.25, 0.25)


def _trunk_output_size(size: int, stem_pool: bool, stages: int) -> int:
    """Side of a trunk's last feature map: stride-2 stem, optional stem pool, stride 2 per later stage."""
    size = (size + 1) // 2
    if stem_pool:
        size = (size + 1) // 2
    for _ in range(stages - 1):
        size = (size + 1) // 2
    return size


class FeatureStandardizer(nn.BatchNorm1d):
    """Each output feature scaled to zero mean and unit variance over the data (no learned affine).

    Faces differ from frame to frame in small details, so a freshly initialized encoder's features
    vary across frames by a few percent of their size; ELNet then learns to ignore them and the
    encoders stop learning (seen here: a trained model whose output did not change when the
    speaker inputs were shuffled). Standardizing across samples makes those differences the whole
    signal. With the default GroupNorm trunks this is the encoders' only batch statistic; ELNet
    itself uses GroupNorm only, and at inference (and in ONNX) this is a fixed affine map from the
    running statistics.
    """

    def __init__(self, features: int) -> None:
        super().__init__(features, affine=False, momentum=0.05)


class VideoEncoder(nn.Module):
    """ResNet-18 with spatial-softmax pooling: face images (N, 3, S, S) in [0, 1] -> (N, video_features)."""

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(3, config.video_widths, config.blocks_per_stage, config.stem_pool,
                                 norm=config.encoder_norm)
        side = _trunk_output_size(config.image_size, config.stem_pool, len(config.video_widths))
        self.pool = SpatialSoftmax(self.trunk.out_channels, side, side, config.keypoints)
        self.project = nn.Linear(2 * config.keypoints, config.video_features)
        self.standardize = FeatureStandardizer(config.video_features)
        self.register_buffer("pixel_mean", torch.tensor(_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(_PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.pixel_mean) / self.pixel_std
        return self.standardize(self.project(self.pool(self.trunk(x))))  # (N, video_features)


class AudioEncoder(nn.Module):
    """ResNet-18-style trunk on each frame's log-mel window: (N, 1, window, n_mels) -> (N, audio_output_dim).

    With the prosody branch on, the frame's own log-mel spectrum (its mel frames averaged) follows
    the features unchanged: ELNet's prosody branch reads it over many frames.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        # The per-window encoder's mel window is small (32 x 80): no stem pool, to keep resolution for
        # the stages. The frame-local encoder's input is 4 mel frames, which the stem already halves:
        # ResNet-18's stem pool then runs over frequency only (80 bands -> 20 at the first stage),
        # which halves its FLOPs (paper preset, 64 frames: 11.0 -> 6.0 G).
        frame_local = config.audio_encoder == "frame"
        self.trunk = ResNetTrunk(1, config.audio_widths, config.blocks_per_stage, stem_pool=frame_local,
                                 pool_stride=(1, 2), norm=config.encoder_norm)
        stages = len(config.audio_widths)
        time = _trunk_output_size(config.audio_window, False, stages)
        frequency = _trunk_output_size(config.n_mels, frame_local, stages)
        # Flattened, not averaged: after GroupNorm a global average keeps almost nothing of one
        # sample, and where the energy sits in time and frequency (pauses, a pitch that rises or
        # falls) is exactly what a listener reacts to.
        self.project = nn.Linear(self.trunk.out_channels * time * frequency, config.audio_features)
        self.standardize = FeatureStandardizer(config.audio_features)
        self.pass_spectrum = config.prosody_channels > 0

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        features = self.standardize(self.project(self.trunk(mel).flatten(1)))  # (N, audio_features)
        if not self.pass_spectrum:
            return features
        spectrum = mel[:, 0, -MELS_PER_FRAME:].mean(dim=1)  # (N, n_mels): the frame's own mel frames
        return torch.cat([features, spectrum], dim=1)
