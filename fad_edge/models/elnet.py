"""ELNet: the Efficient Listener Network, a Diffuser-style temporal U-Net that predicts the noise.

Built from Diffuser's vocabulary (Janner et al. 2022, `diffuser/models/temporal.py`): `Conv1dBlock`
(Conv1d, GroupNorm, Mish), `ResidualTemporalBlock`, `Downsample1d`, `Upsample1d`, skip concatenation.
Unlike Diffuser, which conditions by in-painting, the speaker enters every residual block: the
per-frame speaker features (pooled to the block's time resolution) and the diffusion-step embedding
scale and shift the block's activations (FiLM). The speaker features first pass a few dilated
convolutions over the clip and its `context_clips` preceding clips, so that each frame's condition
can hold what the speaker did some frames before (a listener reacts with a lag).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from fad_edge.constants import ROTATION
from fad_edge.models.config import ModelConfig
from fad_edge.sampling import cumulative_alphas, squared_cosine_betas


class SinusoidalStepEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the diffusion step (B,) -> (B, dim)."""

    frequencies: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        frequencies = torch.exp(torch.arange(half) * -(math.log(10_000) / (half - 1)))
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, steps: torch.Tensor) -> torch.Tensor:
        angles = steps.float()[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length preserving."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResidualTemporalBlock(nn.Module):
    """Two Conv1dBlocks with FiLM from the step embedding and the per-frame condition between them."""

    def __init__(
        self, in_channels: int, out_channels: int, embed_dim: int, cond_dim: int, kernel_size: int, groups: int
    ) -> None:
        super().__init__()
        self.first = Conv1dBlock(in_channels, out_channels, kernel_size, groups)
        self.second = Conv1dBlock(out_channels, out_channels, kernel_size, groups)
        self.embed_film = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, 2 * out_channels))
        self.cond_film = nn.Conv1d(cond_dim, 2 * out_channels, 1)
        self.residual: nn.Module = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor, embedding: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, L); embedding: (B, E); cond: (B, cond_dim, L)
        film = self.embed_film(embedding).unsqueeze(-1) + self.cond_film(cond)  # (B, 2*C_out, L)
        scale, shift = film.chunk(2, dim=1)
        h = self.first(x) * (1 + scale) + shift
        return self.second(h) + self.residual(x)


class Downsample1d(nn.Module):
    """Halve the time axis with a strided convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Double the time axis with a transposed convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(channels, channels, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DilatedConditionBlock(nn.Module):
    """Residual dilated Conv1d + GroupNorm + Mish over the speaker condition frames.

    Causal: each frame sees (kernel_size - 1) * dilation frames back and none ahead, zeros before the
    window; else centered, kernel_size // 2 * dilation frames each way.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, groups: int, causal: bool = False) -> None:
        super().__init__()
        self.causal_pad = (kernel_size - 1) * dilation if causal else 0
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation,
                              padding=0 if causal else dilation * (kernel_size // 2))
        self.norm = nn.GroupNorm(groups, channels)
        self.act = nn.Mish()

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        padded = F.pad(cond, (self.causal_pad, 0)) if self.causal_pad else cond
        return cond + self.act(self.norm(self.conv(padded)))


class RotationHead(nn.Module):
    """Causal dilated condition blocks of its own from what ELNet hears to the 6 rotation dims.

    (B, heard_dim, frames) -> (B, 6, frames): a 1x1 projection, `DilatedConditionBlock`s with kernel
    3 (each frame's convolutions reach 2 * sum(dilations) frames back and none ahead; their GroupNorms
    take statistics over the window, as the condition path's do), and a 1x1 output. Its weights serve
    only jaw and head: in the shared condition path a nod, a twentieth of the yaw's variance, is
    outweighed by the expression and is not learned there (docs/studies.md: what holds the nod back).
    """

    def __init__(self, heard_dim: int, channels: int, dilations: tuple[int, ...], groups: int, outputs: int) -> None:
        super().__init__()
        self.project = nn.Conv1d(heard_dim, channels, 1)
        self.blocks = nn.Sequential(*(DilatedConditionBlock(channels, 3, dilation, groups, causal=True)
                                      for dilation in dilations))
        self.out = nn.Conv1d(channels, outputs, 1)

    def forward(self, heard: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.project(heard)))


class ProsodyBranch(nn.Module):
    """Causal 2D convolutions over log-mel spectra (frequency x frames), pooled over frequency.

    (B, n_mels, frames) -> (B, 2 * channels, frames): per frame the maximum and the mean over
    frequency of each channel, so a pattern (a harmonic sliding up or down) counts wherever in the
    spectrum it sits. Time kernel 3 with the given dilations, zeros before the window: each frame
    hears 2 * sum(dilations) frames back and none ahead. The first two layers halve the frequency
    axis (80 bands -> 20), after the first has seen the full resolution.
    """

    def __init__(self, channels: int, dilations: tuple[int, ...], groups: int) -> None:
        super().__init__()
        self.channels = channels
        self.time_pads = [2 * dilation for dilation in dilations]
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if index == 0 else channels, channels, (5, 3), stride=(2 if index < 2 else 1, 1),
                      padding=(2, 0), dilation=(1, dilation))
            for index, dilation in enumerate(dilations)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(groups, channels) for _ in dilations)
        self.act = nn.Mish()

    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        x = spectra.unsqueeze(1)  # (B, 1, n_mels, frames)
        for pad, conv, norm in zip(self.time_pads, self.convs, self.norms):
            x = self.act(norm(conv(F.pad(x, (pad, 0)))))
        return torch.cat([x.amax(dim=2), x.mean(dim=2)], dim=1)


class ELNet(nn.Module):
    """Predicts the noise in a clip of listener motion from the step and the speaker's features.

    forward(x_t (B, L, 56), steps (B,), condition (B, (context_clips + 1) * L, D)) -> (B, L, 56),
    where L = clip_len and the last L condition frames are the clip's own, aligned frame by frame.
    """

    signal_scale: torch.Tensor
    noise_scale: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim, groups, kernel = config.unet_dim, config.groups, config.kernel_size
        embed_dim = config.step_embed_dim
        self.step_embedding = nn.Sequential(
            SinusoidalStepEmbedding(embed_dim),
            nn.Linear(embed_dim, embed_dim * 4),
            nn.Mish(),
            nn.Linear(embed_dim * 4, embed_dim),
        )
        # The frame-local audio encoder's temporal layer (see ModelConfig.audio_context_frames): a causal
        # convolution over the audio features of the frames ending with each frame. It sits here,
        # where the clip's context frames are, so the encoders stay per-frame functions.
        self.audio_temporal: nn.Conv1d | None = None
        if config.audio_context_frames > 1:
            self.audio_temporal = nn.Conv1d(config.audio_features, config.audio_features, config.audio_context_frames)
        heard_dim = config.video_features + config.audio_features
        self.prosody: ProsodyBranch | None = None
        if config.prosody_channels:
            self.prosody = ProsodyBranch(config.prosody_channels, config.prosody_dilations, config.groups)
            heard_dim += 2 * config.prosody_channels
        self.cond_projection = nn.Sequential(nn.Conv1d(heard_dim, config.cond_dim, 1), nn.Mish())
        self.rotation_head: RotationHead | None = None
        if config.rotation_head_channels:
            self.rotation_head = RotationHead(heard_dim, config.rotation_head_channels, config.rotation_head_dilations,
                                              config.groups, config.n_coeffs - ROTATION.start)
        # Dilated convolutions over all condition frames (context included) before the clip's own
        # frames are cut out: every frame then sees the speaker `config.condition_reach` frames around
        # it, at its own lag, which a pooled context vector could only blur.
        self.cond_temporal = nn.Sequential(*(
            DilatedConditionBlock(config.cond_dim, kernel, dilation, groups, config.causal_condition)
            for dilation in config.condition_dilations
        ))

        widths = [config.n_coeffs] + [dim * m for m in config.unet_dim_mults]
        pairs = list(zip(widths[:-1], widths[1:]))
        block = lambda cin, cout: ResidualTemporalBlock(cin, cout, embed_dim, config.cond_dim, kernel, groups)  # noqa: E731
        self.downs = nn.ModuleList()
        for index, (cin, cout) in enumerate(pairs):
            last = index == len(pairs) - 1
            self.downs.append(
                nn.ModuleList([block(cin, cout), block(cout, cout), nn.Identity() if last else Downsample1d(cout)])
            )
        mid = widths[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        # Unlike Diffuser, every level's skip is used, the finest included: the noise to predict has
        # 56 independent dims, which a single narrow path cannot carry through.
        self.ups = nn.ModuleList()
        channels = mid
        for level in reversed(range(len(pairs))):
            skip = pairs[level][1]
            out_channels = pairs[level][0] if level > 0 else dim
            self.ups.append(nn.ModuleList([
                block(channels + skip, out_channels),
                block(out_channels, out_channels),
                Upsample1d(out_channels) if level > 0 else nn.Identity(),
            ]))
            channels = out_channels
        self.final = nn.Sequential(Conv1dBlock(dim, dim, kernel, groups), nn.Conv1d(dim, config.n_coeffs, 1))
        # A linear shortcut from x_t to the output: at high noise the noise *is* nearly x_t, and this
        # makes that identity free instead of something the U-Net must learn through GroupNorm blocks.
        self.input_shortcut = nn.Conv1d(config.n_coeffs, config.n_coeffs, 1)
        # The same for the condition: at the sampling start (high noise, mean start) the answer is the
        # listener's motion given the speaker, much of it a per-frame linear function of the read
        # condition. Through the U-Net alone it passes FiLM after GroupNorm.
        self.condition_shortcut: nn.Conv1d | None = None
        if config.condition_shortcut:
            self.condition_shortcut = nn.Conv1d(config.cond_dim, config.n_coeffs, 1)
        # Output preconditioning (as EDM does): epsilon = sqrt(1 - a_t) x_t + sqrt(a_t) F, so that F
        # has a unit-variance target at every step (it is the "v" of v-prediction), the obvious
        # part of the noise at high t comes for free, and the 1-step x0 = sqrt(a_t) x_t -
        # sqrt(1 - a_t) F carries F's error without the 1/sqrt(a_t) blow-up. ELNet still outputs
        # epsilon and is trained with the epsilon MSE.
        alpha_bar = torch.from_numpy(cumulative_alphas(squared_cosine_betas(config.train_steps)))
        self.register_buffer("signal_scale", alpha_bar.sqrt(), persistent=False)
        self.register_buffer("noise_scale", (1 - alpha_bar).sqrt(), persistent=False)

    def hear(self, condition: torch.Tensor) -> torch.Tensor:
        """Condition (B, D, frames) -> what ELNet hears of it, frame by frame.

        The video features as they are; the audio features combined over the frames ending with each
        frame (frame-local encoder); the prosody branch's reading of the spectra, if on.
        """
        split = self.config.video_features
        audio_end = split + self.config.audio_features
        audio = condition[:, split:audio_end]
        if self.audio_temporal is not None:
            audio = self.audio_temporal(F.pad(audio, (self.audio_temporal.kernel_size[0] - 1, 0)))  # the past only
        parts = [condition[:, :split], audio]
        if self.prosody is not None:
            parts.append(self.prosody(condition[:, audio_end:]))
        return torch.cat(parts, dim=1)

    def read_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """Condition (B, frames, D) -> (B, cond_dim, L) for the clip's own frames.

        Depends on neither x_t nor the step, so training computes it once per clip and shares it
        between the clip's noise draws (`denoise`).
        """
        heard = self.hear(condition.transpose(1, 2))
        cond = self.cond_temporal(self.cond_projection(heard))[:, :, -self.config.clip_len:]  # (B, cond_dim, L)
        if self.rotation_head is None:
            return cond
        # The head's output rides along as 6 more channels: `denoise` splits them off.
        return torch.cat([cond, self.rotation_head(heard)[:, :, -self.config.clip_len:]], dim=1)

    def forward(self, x: torch.Tensor, steps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, steps, self.read_condition(condition))

    def forward_x0(self, x: torch.Tensor, steps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """`forward`'s one-step x0 instead of its noise (`denoise_x0`)."""
        return self.denoise_x0(x, steps, self.read_condition(condition))

    def denoise(self, x: torch.Tensor, steps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The noise in x_t (B, L, 56) at `steps`, given `read_condition`'s output (B, cond_dim (+ 6), L)."""
        out = self._output(x, steps, cond)
        if not self.config.precondition:
            return out
        return self.noise_scale[steps][:, None, None] * x + self.signal_scale[steps][:, None, None] * out

    def denoise_x0(self, x: torch.Tensor, steps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The one-step estimate x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (B, L, 56), unclamped.

        Preconditioned, it is sqrt(a_t) x_t - sqrt(1 - a_t) F, computed so: through epsilon in float32 a
        noisy x_t at t = 99 would cancel to ~1e-4 of the answer (1 / sqrt(a_99) = 2000 times epsilon's
        rounding), where this form loses nothing.
        """
        out = self._output(x, steps, cond)
        signal, noise = self.signal_scale[steps][:, None, None], self.noise_scale[steps][:, None, None]
        if not self.config.precondition:
            return (x - noise * out) / signal
        return signal * x - noise * out

    def _output(self, x: torch.Tensor, steps: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The U-Net's own output (B, L, 56), float32: epsilon, or F where preconditioned (see `denoise`)."""
        x = x.transpose(1, 2)  # (B, 56, L)
        shortcut = self.input_shortcut(x)
        if self.rotation_head is not None:
            cond, rotation = cond[:, : self.config.cond_dim], cond[:, self.config.cond_dim :]
            shortcut = torch.cat([shortcut[:, : ROTATION.start], shortcut[:, ROTATION.start :] + rotation], dim=1)
        embedding = self.step_embedding(steps)  # (B, E)

        # The condition at every U-Net resolution: L, L/2, L/4, ... (Downsample1d halves the length).
        conds = [cond]
        for _ in range(len(self.downs) - 1):
            conds.append(F.avg_pool1d(conds[-1], 2))

        skips = []
        for level, stage in enumerate(self.downs):
            first, second, down = cast(nn.ModuleList, stage)  # each level is built as [block, block, resample]
            x = first(x, embedding, conds[level])
            x = second(x, embedding, conds[level])
            skips.append(x)
            x = down(x)
        for module in self.mid:
            x = module(x, embedding, conds[-1])
        for level, stage in zip(reversed(range(len(self.ups))), self.ups):
            first, second, up = cast(nn.ModuleList, stage)
            x = torch.cat([x, skips.pop()], dim=1)
            x = first(x, embedding, conds[level])
            x = second(x, embedding, conds[level])
            x = up(x)
        if self.condition_shortcut is not None:
            shortcut = shortcut + self.condition_shortcut(cond)
        # Float32 even under bf16 autocast (type promotion with the float32 scales would give it too,
        # but the sum must not rest on that): it adds sqrt(a_t) F to sqrt(1 - a_t) x_t, and at high
        # noise sqrt(a_t) is ~1e-3, below bf16's resolution.
        return (self.final(x) + shortcut).transpose(1, 2).float()  # (B, L, 56)
