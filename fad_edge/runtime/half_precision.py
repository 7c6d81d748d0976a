"""The FP16 variant of a model for GPU inference: half-precision weights and activations, FP32 islands.

Convolutions and linear layers run in FP16 (tensor cores), and so do the GroupNorms: PyTorch's
GroupNorm kernels take a half-precision input and accumulate its mean and variance in FP32, so an
FP32 island around each (two cast kernels per norm, 72 norms in the paper preset) would only add
kernels and memory traffic. The layers whose arithmetic needs FP32 beyond that run in it, as the
FP16 ONNX graph keeps them: BatchNorm (the feature standardizers: running statistics of any scale),
the spatial softmax (exponentials over a feature map, then coordinates) and the diffusion-step
embedding (sines of up to ~100 radians). Each island casts its floating inputs to FP32 and its
output back to FP16. The motion normalization and ELNet's noise-schedule scales stay FP32
(sqrt(alpha_bar) is ~1e-3 at high noise), so the sampler's arithmetic is FP32.

This is done here, by wrapping modules of a copy of the model, rather than by autocast, so that
the weights are cast once instead of on every call (autocast casts them again in each replay).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fad_edge.listener_model import ListenerModel
from fad_edge.models.elnet import SinusoidalStepEmbedding
from fad_edge.models.spatial_softmax import SpatialSoftmax

FP32_MODULES: tuple[type[nn.Module], ...] = (_BatchNorm, SpatialSoftmax, SinusoidalStepEmbedding)
FP32_BUFFERS = ("motion_mean", "motion_std", "elnet.signal_scale", "elnet.noise_scale")


class Float32Island(nn.Module):
    """Runs `module` in FP32 inside a lower-precision model: floating inputs up-cast, output cast to `dtype`."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.float()
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cast = [x.float() if x.is_floating_point() else x for x in inputs]
        return self.module(*cast).to(self.dtype)


def to_reduced_precision(model: ListenerModel, dtype: torch.dtype = torch.float16) -> ListenerModel:
    """`model` (changed in place and returned) in `dtype`, with the FP32 islands above.

    The islands and FP32 buffers keep the model's own FP32 values, copied before the cast: cast to
    `dtype` and back they would carry its rounding (a step embedding's frequencies, a standardizer's
    statistics, the motion normalization). Call it on a copy: the model's modules are replaced.
    """
    chosen: list[str] = []
    for name, module in model.named_modules():
        inside = any(name.startswith(parent + ".") for parent in chosen)
        if name and not inside and isinstance(module, FP32_MODULES):
            chosen.append(name)
    exact = {name: tensor.detach().clone() for name, tensor in (*model.named_parameters(), *model.named_buffers())
             if name in FP32_BUFFERS or any(name.startswith(parent + ".") for parent in chosen)}
    model.to(dtype)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        island = Float32Island(parent.get_submodule(child), dtype)
        with torch.no_grad():
            for inner, tensor in (*island.module.named_parameters(), *island.module.named_buffers()):
                tensor.copy_(exact[f"{name}.{inner}"])
        setattr(parent, child, island)
    for name in FP32_BUFFERS:
        owner_name, _, buffer = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        setattr(owner, buffer, exact[name])
    return model


def islands(model: nn.Module) -> list[str]:
    """Names of the FP32 islands in a converted model (for tests and reports)."""
    return [name for name, module in model.named_modules() if isinstance(module, Float32Island)]
