"""Cost-only replica of a DECA-based listener pipeline: detect, align, encode, then an LSTM listener.

Random weights; the layer sizes follow the published networks so that FLOPs, parameters and
latency match a real deployment:

* S3FD (Zhang et al., ICCV 2017): VGG-16 trunk conv1_1..conv5_3 (64, 128, 256, 512, 512 channels,
  2x2 max-pools), fc6 as a 3x3 dilated conv 512->1024 after pool5, fc7 as a 1x1 conv 1024->1024,
  conv6_1/6_2 (1x1 256, 3x3 stride 2 512), conv7_1/7_2 (1x1 128, 3x3 stride 2 256); 3x3 class and
  box heads on conv3_3 (L2-normed, 4 classes for the max-out background), conv4_3, conv5_3
  (L2-normed), fc7, conv6_2 and conv7_2 (2 classes): strides 4 to 128. Runs on the full frame.
* 2DFAN-4 (Bulat & Tzimiropoulos, ICCV 2017, "How far are we from solving the 2D & 3D face
  alignment problem?"): 256x256 crop, 7x7 stride-2 stem, four stacked hourglasses of depth 4 with
  256 channels, 68 heatmaps at 64x64. Its residual block is the hierarchical, parallel,
  multi-scale block that paper puts in place of the hourglass bottleneck (3x3 convs to C/2, C/4,
  C/4, concatenated), as in the released FAN.
* DECA coarse encoder (Feng et al., SIGGRAPH 2021): ResNet-50 (He et al. 2016: bottleneck blocks
  3, 4, 6, 3; 25.6M parameters with the 1000-way fc, 23.5M without; about 4.1 G multiply-adds at
  224x224) on a 224x224 crop, global average pool, then Linear 2048->1024, ReLU, Linear 1024->236
  (shape 100, texture 50, expression 50, pose 6, camera 3, light 27).
* ViCo-style LSTM listener (Zhou et al., ECCV 2022): LayerNorm(56), Linear 56->192, Tanh, 2-layer
  LSTM with hidden 96, Linear 96->56 over the first 56 DECA outputs of each frame.

The crop is a fixed centre crop (the cost does not depend on where the face is); every frame
still runs all the real layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

N_DECA_PARAMS = 236


# --- S3FD ---------------------------------------------------------------------------------------

VGG16_STAGES: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class L2Norm(nn.Module):
    """Per-position L2 normalisation with a learned per-channel scale (S3FD, from ParseNet)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=1e-10) * self.weight.view(1, -1, 1, 1)


def _conv_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
               dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, dilation), nn.ReLU(inplace=True))


class S3FD(nn.Module):
    """S3FD face detector: (N, 3, H, W) -> per source (class logits, box offsets) at strides 4..128."""

    def __init__(self) -> None:
        super().__init__()
        stages, previous = [], 3
        for width, convs in VGG16_STAGES:
            layers = []
            for _ in range(convs):
                layers.append(_conv_relu(previous, width, 3, padding=1))
                previous = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.fc6 = _conv_relu(512, 1024, 3, padding=3, dilation=3)
        self.fc7 = _conv_relu(1024, 1024, 1)
        self.conv6 = nn.Sequential(_conv_relu(1024, 256, 1), _conv_relu(256, 512, 3, stride=2, padding=1))
        self.conv7 = nn.Sequential(_conv_relu(512, 128, 1), _conv_relu(128, 256, 3, stride=2, padding=1))
        self.norms = nn.ModuleList([L2Norm(256, 10.0), L2Norm(512, 8.0), L2Norm(512, 5.0)])
        sources = (256, 512, 512, 1024, 512, 256)
        classes = (4, 2, 2, 2, 2, 2)  # conv3_3: 3 background scores max-out + 1 face
        self.class_heads = nn.ModuleList(nn.Conv2d(c, k, 3, padding=1) for c, k in zip(sources, classes))
        self.box_heads = nn.ModuleList(nn.Conv2d(c, 4, 3, padding=1) for c in sources)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sources = []
        for index, stage in enumerate(self.stages):
            if index > 0:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            x = stage(x)
            if index >= 2:  # conv3_3, conv4_3, conv5_3
                sources.append(self.norms[index - 2](x))
        x = self.fc7(self.fc6(F.max_pool2d(x, 2, 2, ceil_mode=True)))
        sources.append(x)
        x = self.conv6(x)
        sources.append(x)
        sources.append(self.conv7(x))
        return [(cls(s), box(s)) for s, cls, box in zip(sources, self.class_heads, self.box_heads)]


# --- 2DFAN-4 ------------------------------------------------------------------------------------


class MultiScaleBlock(nn.Module):
    """FAN's residual block: pre-activated 3x3 convs to C/2, C/4, C/4, concatenated, plus a skip."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half, quarter = cout // 2, cout // 4
        self.branches = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(a), nn.ReLU(inplace=True), nn.Conv2d(a, b, 3, padding=1, bias=False))
            for a, b in ((cin, half), (half, quarter), (quarter, quarter))
        )
        self.skip: nn.Module = nn.Identity()
        if cin != cout:
            self.skip = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs, y = [], x
        for branch in self.branches:
            y = branch(y)
            outs.append(y)
        return torch.cat(outs, dim=1) + self.skip(x)


class Hourglass(nn.Module):
    """Recursive hourglass: a full-resolution branch plus a pooled branch that recurses `depth` times."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.upper = MultiScaleBlock(channels, channels)
        self.down = MultiScaleBlock(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else MultiScaleBlock(channels, channels)
        self.up = MultiScaleBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.avg_pool2d(x, 2, 2))))
        return self.upper(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


@dataclass(frozen=True)
class FANConfig:
    """2DFAN-4 sizes."""

    stacks: int = 4
    depth: int = 4
    channels: int = 256
    landmarks: int = 68


class FAN(nn.Module):
    """Face Alignment Network: (N, 3, 256, 256) crops -> (N, 68, 64, 64) heatmaps of the last stack."""

    def __init__(self, config: FANConfig = FANConfig()) -> None:
        super().__init__()
        c = config.channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            MultiScaleBlock(64, 128), nn.AvgPool2d(2, 2), MultiScaleBlock(128, 128), MultiScaleBlock(128, c),
        )
        self.hourglasses = nn.ModuleList(Hourglass(config.depth, c) for _ in range(config.stacks))
        self.features = nn.ModuleList(
            nn.Sequential(MultiScaleBlock(c, c), nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            for _ in range(config.stacks)
        )
        self.heatmaps = nn.ModuleList(nn.Conv2d(c, config.landmarks, 1) for _ in range(config.stacks))
        # Intermediate supervision: each stack's features and heatmaps feed the next stack.
        self.remap = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in range(config.stacks - 1))
        self.heatmap_back = nn.ModuleList(nn.Conv2d(config.landmarks, c, 1) for _ in range(config.stacks - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        heatmaps = x
        for index, hourglass in enumerate(self.hourglasses):
            features = self.features[index](hourglass(x))
            heatmaps = self.heatmaps[index](features)
            if index < len(self.remap):
                x = x + self.remap[index](features) + self.heatmap_back[index](heatmaps)
        return heatmaps


# --- ResNet-50 and the DECA encoder -------------------------------------------------------------


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 reduce, 3x3 with the stride, 1x1 expand by 4) with BatchNorm."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Bottleneck ResNet: (N, 3, S, S) -> (N, num_classes) logits, or pooled (N, 2048) if num_classes=0."""

    def __init__(self, blocks: tuple[int, ...], num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        stages, cin = [], 64
        for index, count in enumerate(blocks):
            width = 64 * 2**index
            layers = [Bottleneck(cin, width, 1 if index == 0 else 2)]
            cin = width * Bottleneck.expansion
            layers += [Bottleneck(cin, width, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_features = cin
        self.fc: nn.Module = nn.Linear(cin, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50: 25.56M parameters with the 1000-way fc, 23.51M trunk alone (num_classes=0)."""
    return ResNet((3, 4, 6, 3), num_classes)


class DecaEncoder(nn.Module):
    """DECA's coarse encoder: ResNet-50 features -> 236 FLAME/camera/light parameters per crop.

    DECA's ResNet keeps torchvision's unused 1000-way fc; it never runs, so it is left out here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = resnet50(num_classes=0)
        self.head = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(inplace=True), nn.Linear(1024, N_DECA_PARAMS))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(crops))


# --- ViCo-style LSTM listener -------------------------------------------------------------------


class LSTMLayer(nn.Module):
    """One LSTM layer written as two nn.Linear maps and a loop over time.

    Same parameters and arithmetic as nn.LSTM, but FlopCounterMode counts it (it counts the fused
    aten LSTM op as 0): the input map runs once over the sequence, the hidden map once per step.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.input_map = nn.Linear(input_size, 4 * hidden_size)
        self.hidden_map = nn.Linear(hidden_size, 4 * hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        gates_in = self.input_map(x)  # (B, T, 4h)
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size)
        outputs = []
        for t in range(steps):
            i, f, g, o = (gates_in[:, t] + self.hidden_map(h)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class ViCoLSTM(nn.Module):
    """Listener motion from speaker coefficients: (B, T, 56) -> (B, T, 56), batch first."""

    def __init__(self, dims: int = 56, embed: int = 192, hidden: int = 96, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.LayerNorm(dims), nn.Linear(dims, embed), nn.Tanh())
        self.layers = nn.ModuleList(LSTMLayer(embed if k == 0 else hidden, hidden) for k in range(layers))
        self.out = nn.Linear(hidden, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.out(x)


# --- The pipeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecaConfig:
    """Input sizes of each stage; the defaults are the published ones."""

    detector_size: tuple[int, int] = (480, 640)  # (H, W) of the full frame given to S3FD
    fan_size: int = 256
    encoder_size: int = 224
    crop_fraction: float = 0.6  # side of the fixed centre crop over the frame's shorter side
    coeffs: int = 56


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def _center_crop(frames: torch.Tensor, fraction: float) -> torch.Tensor:
    height, width = frames.shape[-2:]
    side = max(1, int(round(min(height, width) * fraction)))
    top, left = (height - side) // 2, (width - side) // 2
    return frames[..., top : top + side, left : left + side]


class DecaPipeline(nn.Module):
    """Speaker frames (T, 3, H, W) in [0, 1] -> listener coefficients (T, 56).

    Each frame runs S3FD on the full frame, 2DFAN-4 on a 256x256 crop and the DECA encoder on a
    224x224 crop, one frame at a time as a streaming deployment would; the LSTM then runs over
    the sequence. `with_detector_and_landmarks=False` is the "DECA encoder + LSTM only" variant.
    """

    def __init__(self, with_detector_and_landmarks: bool = True, config: DecaConfig | None = None) -> None:
        super().__init__()
        self.config = config or DecaConfig()
        self.with_detector_and_landmarks = with_detector_and_landmarks
        self.detector = S3FD() if with_detector_and_landmarks else None
        self.landmarks = FAN() if with_detector_and_landmarks else None
        self.encoder = DecaEncoder()
        self.listener = ViCoLSTM(dims=self.config.coeffs)

    def encode_frame(self, frame: torch.Tensor) -> torch.Tensor:
        """One frame (1, 3, H, W) -> its first `coeffs` DECA parameters (1, coeffs)."""
        config = self.config
        crop = _center_crop(frame, config.crop_fraction)
        if self.detector is not None and self.landmarks is not None:
            self.detector(_resize(frame, config.detector_size))
            self.landmarks(_resize(crop, (config.fan_size, config.fan_size)))
        params = self.encoder(_resize(crop, (config.encoder_size, config.encoder_size)))
        return params[:, : config.coeffs]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        coeffs = torch.cat([self.encode_frame(frames[t : t + 1]) for t in range(frames.shape[0])])
        return self.listener(coeffs.unsqueeze(0)).squeeze(0)
