"""A ResNet-18 trunk written out (torchvision does not import beside our torch build).

The norm after each convolution is GroupNorm by default, with 16 channels per group as Diffusion
Policy's `replace_bn_with_gn` does: batch statistics are unreliable for small, correlated batches.
BatchNorm ("batch") is the alternative for the edge: in eval mode it is a per-channel affine map
that the export folds into the convolution before it, so an INT8 graph runs from convolution to
convolution in int8, where GroupNorm needs a float round trip around every norm.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 16 channels per group (at least one group)."""
    return nn.GroupNorm(max(1, channels // 16), channels)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The encoders' norm after a convolution: "group" (GroupNorm) or "batch" (BatchNorm2d)."""
    if kind == "group":
        return group_norm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be group or batch, got {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34's block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str = "group") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = norm_layer(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = norm_layer(norm, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), norm_layer(norm, out_channels)
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
        pool_stride: tuple[int, int] = (2, 2), norm: str = "group",
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
            norm_layer(norm, widths[0]),
            nn.ReLU(inplace=True),
        ]
        if stem_pool:
            stem.append(nn.MaxPool2d(3, pool_stride, 1))
        self.stem = nn.Sequential(*stem)
        stages = []
        previous = widths[0]
        for index, (width, blocks) in enumerate(zip(widths, blocks_per_stage)):
            stride = 1 if index == 0 else 2
            layers = [BasicBlock(previous, width, stride, norm)]
            layers += [BasicBlock(width, width, 1, norm) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.out_channels = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def fold_batch_norms(trunk: ResNetTrunk) -> None:
    """Fold each BatchNorm of an eval-mode trunk into the convolution before it, in place.

    The ONNX exporter's optimizer folds them as well, but whether it does depends on its version;
    folding first makes the exported graph free of norms whatever the tools. The trunk gives the
    same outputs as before in eval mode (and can no longer be trained); GroupNorms stay as they are.
    """
    if trunk.training:
        raise ValueError("fold_batch_norms needs an eval-mode trunk (it folds the running statistics)")
    for module in list(trunk.modules()):
        if isinstance(module, BasicBlock):
            module.conv1, module.norm1 = _fold(module.conv1, module.norm1)
            module.conv2, module.norm2 = _fold(module.conv2, module.norm2)
        elif isinstance(module, nn.Sequential):  # the stem, and a projection shortcut
            for index in range(len(module) - 1):
                conv = module[index]
                if isinstance(conv, nn.Conv2d):
                    module[index], module[index + 1] = _fold(conv, module[index + 1])


def _fold(conv: nn.Conv2d, norm: nn.Module) -> tuple[nn.Conv2d, nn.Module]:
    """(conv with the norm folded in, Identity) if the norm is a BatchNorm2d; else both unchanged."""
    if isinstance(norm, nn.BatchNorm2d):
        return fuse_conv_bn_eval(conv, norm), nn.Identity()
    return conv, norm
