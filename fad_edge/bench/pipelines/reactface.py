"""Cost-only replica of ReactFace's online mode (Luo et al., "ReactFace: Online Multiple Appropriate
Facial Reaction Generation in Dyadic Interactions", 2023; IEEE TVCG 2024).

Random weights; the sizes follow the paper and its released model so that FLOPs, parameters and
latency match:

* Speaker video encoder: a stack of Conv3d blocks (InstanceNorm, ReLU) on 224x224 frames with
  temporal kernels 5, 5, 3, 3, 3 and spatial kernels 7, 7, 3, 3, 3: 3->d/4 stride 2, a 3x3
  stride-2 max-pool, d/4->d stride 2, d->d stride 2, a residual d->d, d->d stride 2 (224 -> 7),
  spatial mean, Linear d->d: d = 128 features per frame.
* Speaker audio encoder: wav2vec 2.0 base (Baevski et al. 2020) on 16 kHz audio: 7 conv layers of
  512 channels, kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2) (GroupNorm on the
  first, GELU), features resampled to 2 tokens per video frame as ReactFace does, LayerNorm and
  projection 512->768, the grouped positional convolution (kernel 128, 16 groups), 12
  post-norm transformer encoder layers of width 768, 12 heads, FFN 3072; then Linear 768->d.
* Speaker transformer decoder: 3 layers (d, 8 heads, FFN 2d), video self-attention then two
  cross-attentions to the audio tokens, with a periodic positional encoding (period 8).
* Listener: past listener motion (58 -> d) fused with the speaker audio and the speaker motion by
  one decoder layer each, an interaction VAE (Linear, 2 encoder layers of 4 heads and FFN 1024
  over mean/log-variance tokens), a 2-layer motion decoder (8 heads, FFN 2d) from time queries,
  two window fusion layers (audio, speaker motion) and Linear d->58 (3DMM: 52 expression,
  3 rotation, 3 translation).

ReactFace's online mode re-encodes the whole speaker video and audio seen so far for every window
of 8 listener frames it generates, so its cost grows with the square of the session length:
`online` replicates that; `frame_by_frame` is the same with a window of one frame.

Attention layers are sequence-first (batch_first=False): that keeps PyTorch's fused inference fast
path, whose ops FlopCounterMode cannot see, out of the way. Count FLOPs with `layers.count_flops`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ReactFaceConfig:
    """ReactFace sizes; `reduced()` shrinks the image and the audio transformer for smoke tests."""

    image_size: int = 224
    d: int = 128
    heads: int = 8
    motion_dims: int = 58
    sample_rate: int = 16_000
    fps: float = 30.0
    period: int = 8  # periodic positional encoding
    momentum: float = 0.9  # smoothing of the interaction latent between windows
    audio_channels: int = 512
    audio_kernels: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    audio_strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    audio_width: int = 768
    audio_layers: int = 12
    audio_heads: int = 12
    audio_ffn: int = 3072
    audio_position_kernel: int = 128
    audio_position_groups: int = 16
    audio_tokens_per_frame: int = 2
    speaker_layers: int = 3
    motion_layers: int = 2
    vae_layers: int = 2
    vae_heads: int = 4
    vae_ffn: int = 1024

    @classmethod
    def reduced(cls) -> ReactFaceConfig:
        """64x64 frames and a 2-layer audio transformer: the same code paths, a fraction of the cost."""
        return cls(image_size=64, audio_layers=2)


def sinusoid(positions: torch.Tensor, dims: int) -> torch.Tensor:
    """Transformer sinusoidal encoding of integer positions (N,) -> (N, dims)."""
    rates = torch.exp(torch.arange(0, dims, 2, device=positions.device) * (-math.log(10_000.0) / dims))
    angles = positions.float().unsqueeze(1) * rates
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)[:, :dims]


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """Additive mask that lets position i attend to positions <= i."""
    return torch.full((length, length), float("-inf"), device=device).triu(1)


def decoder_layers(count: int, d: int, heads: int) -> nn.ModuleList:
    """ReactFace's decoder layers: d wide, FFN 2d, post-norm, sequence-first."""
    return nn.ModuleList(nn.TransformerDecoderLayer(d, heads, 2 * d, dropout=0.0) for _ in range(count))


def _conv3d_block(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Sequential:
    padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), nn.InstanceNorm3d(cout), nn.ReLU(inplace=True)
    )


class VideoEncoder3D(nn.Module):
    """Speaker frames (T, 3, S, S) -> (T, d): 3D convolutions, then a spatial mean per frame."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv3d_block(3, d // 4, (5, 7, 7), (1, 2, 2)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            _conv3d_block(d // 4, d, (5, 7, 7), (1, 2, 2)),
            _conv3d_block(d, d, (3, 3, 3), (1, 2, 2)),
        )
        self.residual = _conv3d_block(d, d, (3, 3, 3), (1, 1, 1))
        self.last = _conv3d_block(d, d, (3, 3, 3), (1, 2, 2))
        self.out = nn.Linear(d, d)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.stem(frames.transpose(0, 1).unsqueeze(0))  # (1, d, T, h, w)
        x = self.last(x + self.residual(x))
        return self.out(x.mean(dim=(3, 4))[0].transpose(0, 1))


class Wav2Vec2Encoder(nn.Module):
    """16 kHz audio (N,) -> (tokens, d): wav2vec 2.0 base resampled to `tokens` steps, then Linear to d."""

    def __init__(self, config: ReactFaceConfig) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        cin, channels = 1, config.audio_channels
        for index, (kernel, stride) in enumerate(zip(config.audio_kernels, config.audio_strides)):
            layers: list[nn.Module] = [nn.Conv1d(cin, channels, kernel, stride, bias=False)]
            if index == 0:
                layers.append(nn.GroupNorm(channels, channels))
            convs.append(nn.Sequential(*layers, nn.GELU()))
            cin = channels
        self.features = nn.Sequential(*convs)
        width = config.audio_width
        self.projection = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, width))
        kernel = config.audio_position_kernel
        self.position = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=config.audio_position_groups)
        self.norm = nn.LayerNorm(width)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, config.audio_heads, config.audio_ffn, dropout=0.0, activation="gelu")
            for _ in range(config.audio_layers)
        )
        self.to_model = nn.Linear(width, config.d)

    def forward(self, audio: torch.Tensor, tokens: int) -> torch.Tensor:
        x = self.features(audio.view(1, 1, -1))  # (1, C, ~50 per second)
        x = F.interpolate(x, size=tokens, mode="linear", align_corners=True)
        x = self.projection(x.transpose(1, 2))  # (1, tokens, width)
        position = F.gelu(self.position(x.transpose(1, 2))[..., :tokens])  # even kernel: drop the extra step
        x = self.norm(x + position.transpose(1, 2)).transpose(0, 1)  # (tokens, 1, width)
        for layer in self.layers:
            x = layer(x)
        return self.to_model(x[:, 0])


class SpeakerFormer(nn.Module):
    """Speaker motion features (T, d) from video features (T, d) and audio tokens (2T, d)."""

    def __init__(self, config: ReactFaceConfig) -> None:
        super().__init__()
        self.period = config.period
        self.layers = decoder_layers(config.speaker_layers, config.d, config.heads)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        steps = video.shape[0]
        phases = torch.arange(steps, device=video.device) % self.period
        x = (video + sinusoid(phases, video.shape[1])).unsqueeze(1)
        mask = causal_mask(steps, video.device)
        for index, layer in enumerate(self.layers):
            memory = x if index == 0 else audio.unsqueeze(1)  # first self-fusion of the video, then audio
            x = layer(x, memory, tgt_mask=mask)
        return x[:, 0]


class InteractionVAE(nn.Module):
    """Sequence (P, d) -> one latent sample (d,) via learned mean and log-variance tokens."""

    def __init__(self, config: ReactFaceConfig) -> None:
        super().__init__()
        d = config.d
        self.embed = nn.Linear(d, d)
        self.tokens = nn.Parameter(torch.randn(2, d))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, config.vae_heads, config.vae_ffn, dropout=0.0)
            for _ in range(config.vae_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.tokens, self.embed(x))).unsqueeze(1)
        for layer in self.layers:
            x = layer(x)
        mean, log_var = x[0, 0], x[1, 0]
        return mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)


class ListenerDecoder(nn.Module):
    """From past listener motion and the speaker so far, the next window of listener motion."""

    def __init__(self, config: ReactFaceConfig) -> None:
        super().__init__()
        d = config.d
        self.config = config
        self.past_map = nn.Linear(config.motion_dims, d)
        self.fuse_audio, self.fuse_speaker = decoder_layers(2, d, config.heads)
        self.vae = InteractionVAE(config)
        self.motion_decoder = decoder_layers(config.motion_layers, d, config.heads)
        self.window_audio, self.window_speaker = decoder_layers(2, d, config.heads)
        self.to_motion = nn.Linear(d, config.motion_dims)

    def latent(self, past: torch.Tensor, speaker: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Past motion (P, 58), speaker (>=P, d), audio (>=2P, d) -> interaction latent (d,)."""
        steps, per_frame = past.shape[0], self.config.audio_tokens_per_frame
        phases = torch.arange(steps, device=past.device) % self.config.period
        x = self.past_map(past)
        x = (x + sinusoid(phases, x.shape[1])).unsqueeze(1)
        mask = causal_mask(steps, past.device)
        x = self.fuse_audio(x, audio[: per_frame * steps].unsqueeze(1), tgt_mask=mask)
        x = self.fuse_speaker(x, speaker[:steps].unsqueeze(1), tgt_mask=mask)
        return self.vae(x[:, 0])

    def decode(
        self, latents: torch.Tensor, start: int, end: int, speaker: torch.Tensor, audio: torch.Tensor
    ) -> torch.Tensor:
        """Latent tokens (K, d) -> listener motion (end - start, 58) for frames start..end-1."""
        per_frame = self.config.audio_tokens_per_frame
        x = sinusoid(torch.arange(start, end, device=latents.device), latents.shape[1]).unsqueeze(1)
        for layer in self.motion_decoder:
            x = layer(x, latents.unsqueeze(1))
        mask = causal_mask(end - start, latents.device)
        x = self.window_audio(x, audio[per_frame * start : per_frame * end].unsqueeze(1), tgt_mask=mask)
        x = self.window_speaker(x, speaker[start:end].unsqueeze(1), tgt_mask=mask)
        return self.to_motion(x[:, 0])


class ReactFacePipeline(nn.Module):
    """Speaker frames (T, 3, S, S) in [0, 1] and audio (T * 16000 / 30,) -> listener motion (T, 58)."""

    def __init__(self, config: ReactFaceConfig | None = None) -> None:
        super().__init__()
        self.config = config or ReactFaceConfig()
        self.video_encoder = VideoEncoder3D(self.config.d)
        self.audio_encoder = Wav2Vec2Encoder(self.config)
        self.speaker = SpeakerFormer(self.config)
        self.listener = ListenerDecoder(self.config)

    def encode_speaker(self, frames: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All speaker frames so far (T, 3, S, S) and their audio -> motion (T, d), audio tokens (2T, d)."""
        tokens = self.audio_encoder(audio, self.config.audio_tokens_per_frame * frames.shape[0])
        return self.speaker(self.video_encoder(frames), tokens), tokens

    def online(self, frames: torch.Tensor, audio: torch.Tensor, window: int = 8) -> torch.Tensor:
        """Generate window by window, re-encoding the whole speaker history for each window."""
        steps = frames.shape[0]
        samples_per_frame = audio.shape[0] / steps
        motion = frames.new_zeros(0, self.config.motion_dims)
        previous: torch.Tensor | None = None
        for start in range(0, steps, window):
            end = min(start + window, steps)
            speaker, tokens = self.encode_speaker(frames[:end], audio[: int(round(end * samples_per_frame))])
            # Before any output, ReactFace feeds one window of zero motion as the "past".
            past = motion if start > 0 else frames.new_zeros(end - start, self.config.motion_dims)
            latent = self.listener.latent(past, speaker, tokens)
            if previous is None:
                latents = latent.unsqueeze(0)
            else:  # smooth the latent, and move from the previous one across the window
                latent = self.config.momentum * previous + (1 - self.config.momentum) * latent
                pair = torch.stack((previous, latent), dim=-1).unsqueeze(0)  # (1, d, 2)
                latents = F.interpolate(pair, size=end - start, mode="linear", align_corners=True)[0].T
            previous = latent
            motion = torch.cat((motion, self.listener.decode(latents, start, end, speaker, tokens)))
        return motion

    def frame_by_frame(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The strict online variant: a window of one frame, so the history is re-encoded every frame."""
        return self.online(frames, audio, window=1)
