"""The modules that become ONNX graphs: each encoder, and ELNet as noise predictor or folded 1-step sampler.

Every graph has a dynamic batch axis: frames for the encoders, clips for ELNet. The encoders apply
the modality mask themselves, so a runner only concatenates their outputs. `ELNetX0` folds the
1-step closed form x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (as `ELNet.denoise_x0` computes it, without
the float32 cancellation at high t), the clamp and the de-normalization into the graph, so the engine
outputs FLAME coefficients directly. The encoders' BatchNorms (with
`encoder_norm="batch"`) are folded into their convolutions, so the INT8 graphs stay int8 from
convolution to convolution, and their feature standardizers into their projections.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_weights

from fad_edge.artifact import AUDIO_ENCODER, ELNET_EPS, ELNET_X0, SIGNATURES, VIDEO_ENCODER
from fad_edge.listener_model import ListenerModel
from fad_edge.models.elnet import ELNet
from fad_edge.models.encoders import AudioEncoder, VideoEncoder
from fad_edge.models.resnet import fold_batch_norms


def folded_encoder(encoder: VideoEncoder | AudioEncoder) -> VideoEncoder | AudioEncoder:
    """An eval-mode copy whose graph holds no norm op whatever the exporter: the trunk's BatchNorms
    folded into its convolutions, and the feature standardizer into the projection before it.

    The copy gives the encoder's eval-mode outputs. (The dynamo exporter folds the standardizer
    itself; the TorchScript exporter keeps a BatchNormalization node.)
    """
    folded = copy.deepcopy(encoder).eval()
    fold_batch_norms(folded.trunk)  # leaves GroupNorms as they are
    folded.project = _with_standardizer(folded.project, folded.standardize)
    folded.standardize = nn.Identity()  # type: ignore[assignment]  # folded into project
    return folded


def _with_standardizer(project: nn.Linear, standardize: nn.BatchNorm1d) -> nn.Linear:
    """project, then standardize (eval mode), as one Linear; torch's fusion with a unit affine where the
    standardizer has none (FeatureStandardizer's case)."""
    mean, variance = standardize.running_mean, standardize.running_var
    assert mean is not None and variance is not None
    scale = standardize.weight if standardize.affine else torch.ones_like(variance)
    shift = standardize.bias if standardize.affine else torch.zeros_like(mean)
    fused = copy.deepcopy(project)
    with torch.no_grad():
        fused.weight, fused.bias = fuse_linear_bn_weights(project.weight, project.bias, mean, variance,
                                                          standardize.eps, scale, shift)
    return fused


class MaskedVideoEncoder(nn.Module):
    """Images (N, 3, S, S) in [0, 1] -> video features (N, Dv), zero when the model ignores video."""

    mask: torch.Tensor

    def __init__(self, model: ListenerModel) -> None:
        super().__init__()
        self.encoder = folded_encoder(model.video_encoder)
        self.register_buffer("mask", model.modality_mask[: model.config.video_features].clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images) * self.mask


class MaskedAudioEncoder(nn.Module):
    """Mel windows (N, 1, W, M) -> audio features (N, Da), zero when the model ignores audio."""

    mask: torch.Tensor

    def __init__(self, model: ListenerModel) -> None:
        super().__init__()
        self.encoder = folded_encoder(model.audio_encoder)
        self.register_buffer("mask", model.modality_mask[model.config.video_features :].clone())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel) * self.mask


class ExportMish(nn.Module):
    """Mish as x * (1 - 2 / ((1 + e^x)^2 + 1)), for the exported graphs: the same function, as fast ops.

    tanh(softplus(x)) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1). The exporters write `nn.Mish` as
    Softplus -> Tanh -> Mul, and ONNX Runtime's CPU Softplus is a scalar loop: it took 36% of the small
    preset's ELNet graph time (the prosody branch's activations span the frequency axis). This form's
    element-wise ops are vectorized: 0.09 ms against 1.04 ms for 204,800 values on 2 cores, within
    1.3e-6 of torch's Mish on [-30, 30]. Where (1 + e^x)^2 overflows (x > 44 in float32, x > 5.5 in
    float16) the quotient is 0 and the factor exactly 1, so the FP16 graph cannot produce a NaN here.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = 1 + torch.exp(x)
        return x * (1 - 2 / (shifted * shifted + 1))


def elnet_for_export(elnet: ELNet) -> ELNet:
    """An eval-mode copy of ELNet with every `nn.Mish` replaced by `ExportMish` (same outputs, faster graph)."""
    exported = copy.deepcopy(elnet).eval()
    for module in list(exported.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Mish):
                setattr(module, name, ExportMish())
    return exported


class ELNetEpsilon(nn.Module):
    """(x_t (B, L, 56), step (B,) int64, condition (B, F, D)) -> predicted noise (B, L, 56)."""

    def __init__(self, model: ListenerModel) -> None:
        super().__init__()
        self.elnet = elnet_for_export(model.elnet)

    def forward(self, x_t: torch.Tensor, step: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.elnet(x_t, step, condition)


class ELNetX0(nn.Module):
    """(x_start (B, L, 56), condition (B, F, D)) -> de-normalized motion (B, L, 56) in one step."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: ListenerModel) -> None:
        super().__init__()
        self.elnet = elnet_for_export(model.elnet)
        self.start_step = model.config.sample_start_step
        self.clip_sample = float(model.config.clip_sample)
        self.register_buffer("mean", model.motion_mean.clone())
        self.register_buffer("std", model.motion_std.clone())

    def forward(self, x_start: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        step = torch.full(x_start.shape[:1], self.start_step, dtype=torch.long, device=x_start.device)
        x0 = self.elnet.forward_x0(x_start, step, condition).clamp(-self.clip_sample, self.clip_sample)
        return x0 * self.std + self.mean


@dataclass
class GraphSpec:
    """One graph to export: its module, example inputs, names, and which axes are dynamic."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_name: str
    batch_axis_name: str


def graph_specs(model: ListenerModel, batch_frames: int = 16, batch_clips: int = 2) -> list[GraphSpec]:
    """The four graphs of a model with example inputs of the right shapes (random values)."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_frames, 3, config.image_size, config.image_size, generator=generator)
    mel = torch.randn(batch_frames, 1, config.audio_window, config.n_mels, generator=generator)
    x_t = torch.randn(batch_clips, config.clip_len, config.n_coeffs, generator=generator)
    condition = torch.randn(batch_clips, config.condition_frames, config.condition_dim, generator=generator)
    step = torch.full((batch_clips,), config.sample_start_step, dtype=torch.long)
    modules_and_inputs = {
        VIDEO_ENCODER: (MaskedVideoEncoder(model), (images,)),
        AUDIO_ENCODER: (MaskedAudioEncoder(model), (mel,)),
        ELNET_X0: (ELNetX0(model), (x_t, condition)),
        ELNET_EPS: (ELNetEpsilon(model), (x_t, step, condition)),
    }
    specs = []
    for name, (module, inputs) in modules_and_inputs.items():
        signature = SIGNATURES[name]
        specs.append(GraphSpec(name, module.eval(), inputs, signature.inputs, signature.output, signature.batch_axis))
    return specs
