"""The whole FAD model: speaker encoders, ELNet, the diffusion, and the motion normalization."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fad_edge.constants import EXPRESSION, ROTATION
from fad_edge.device_copies import to_device
from fad_edge.diffusion import FacialActionDiffusion
from fad_edge.models.config import ModelConfig
from fad_edge.models.elnet import ELNet
from fad_edge.models.encoders import AudioEncoder, VideoEncoder
from fad_edge.sampling import DiffusionSampler, SamplerSettings


class ListenerModel(nn.Module):
    """Speaker frames + per-frame mel windows -> listener motion, clip by clip.

    Motion inside the model is normalized per dimension with the training split's mean and std,
    stored as buffers so they travel with the weights; `generate` returns de-normalized FLAME
    coefficients.
    """

    motion_mean: torch.Tensor
    motion_std: torch.Tensor
    modality_mask: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.video_encoder = VideoEncoder(config)
        self.audio_encoder = AudioEncoder(config)
        self.elnet = ELNet(config)
        self.diffusion = FacialActionDiffusion(config.train_steps)
        self.register_buffer("motion_mean", torch.zeros(config.n_coeffs))
        self.register_buffer("motion_std", torch.ones(config.n_coeffs))
        # Modality ablation: a disabled branch's features are zeroed, so the condition carries
        # nothing from it while every shape (and the exported graph) stays the same.
        mask = torch.ones(config.condition_dim)
        if config.modalities == "audio":
            mask[: config.video_features] = 0
        elif config.modalities == "video":
            mask[config.video_features :] = 0
        self.register_buffer("modality_mask", mask, persistent=False)
        # Training only: each encoder's features also predict the speaker's own FLAME coefficients.
        # With no pretrained weights to start from (none can be downloaded), this teaches the
        # encoders what a face and a voice are doing far faster than the diffusion loss alone.
        # Only built when used: DDP refuses parameters that never receive a gradient.
        self.speaker_heads: nn.ModuleList | None = None
        if config.speaker_aux_weight > 0:
            self.speaker_heads = nn.ModuleList([nn.Linear(config.video_features, config.n_coeffs),
                                                nn.Linear(config.audio_features, config.n_coeffs)])
        self.video_frozen = False  # see freeze_video

    def freeze_video(self) -> None:
        """Keep the video encoder and its speaker head as they are from now on: no gradient, and BatchNorm on its
        running statistics in training too, so ELNet learns from the features it will see at inference."""
        for module in self._video_modules():
            module.requires_grad_(False)
        self.video_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> ListenerModel:
        super().train(mode)
        if self.video_frozen:
            for module in self._video_modules():
                module.eval()
        return self

    def _video_modules(self) -> list[nn.Module]:
        return [self.video_encoder] + ([self.speaker_heads[0]] if self.speaker_heads is not None else [])

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.motion_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.motion_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def normalize(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.motion_mean) / self.motion_std

    def denormalize(self, motion: torch.Tensor) -> torch.Tensor:
        return motion * self.motion_std + self.motion_mean

    def encode(self, images: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """Per-frame condition: (N, 3, S, S) images in [0, 1] and (N, 1, W, M) mel -> (N, D)."""
        return torch.cat([self.encode_video(images), self.encode_audio(mel)], dim=-1)

    def encode_video(self, images: torch.Tensor) -> torch.Tensor:
        """The video part of `encode`: (N, 3, S, S) -> (N, video_features)."""
        return self.video_encoder(images) * self.modality_mask[: self.config.video_features]

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """The audio part of `encode`: (N, 1, W, M) -> (N, audio_output_dim)."""
        return self.audio_encoder(mel) * self.modality_mask[self.config.video_features :]

    def clip_conditions(self, features: torch.Tensor) -> torch.Tensor:
        """Frame features of whole sequences (B, T, D) -> each clip's condition (B * T/L, (C+1)*L, D).

        Clip k sees frames [(k - C) L, (k + 1) L); frames before the start are zeros, as in a stream
        that has just begun. T must be a multiple of L.
        """
        batch, _, dim = features.shape
        prefix = features.new_zeros(batch, self.config.context_clips * self.config.clip_len, dim)
        return self.window_conditions(torch.cat([prefix, features], dim=1))

    def window_conditions(self, features: torch.Tensor) -> torch.Tensor:
        """Features of windows (B, (C + K) L, D) whose first C clips are context -> (B * K, (C+1) L, D).

        Each frame is encoded once and shared by the C + 1 clips that see it, which is what makes
        context free in a stream and cheap in training.
        """
        batch, frames, dim = features.shape
        clip_len, context = self.config.clip_len, self.config.context_clips
        clips = frames // clip_len - context
        if clips < 1 or frames % clip_len:
            raise ValueError(f"a window of {frames} frames does not hold {context} context clips plus one clip")
        if not features.requires_grad:  # inference: one unfold, which torch.compile traces with K symbolic
            unfolded = features.unfold(1, (context + 1) * clip_len, clip_len)  # (B, K, D, (C+1)L)
            return unfolded.transpose(2, 3).reshape(batch * clips, (context + 1) * clip_len, dim)
        # Training keeps the slices: their gradients sum in the order the trained models were made with
        # (unfold's backward sums frames shared by three or more clips in another order, changing the rounding).
        windows = [features[:, k * clip_len : (k + context + 1) * clip_len] for k in range(clips)]
        return torch.stack(windows, dim=1).reshape(batch * clips, (context + 1) * clip_len, dim)

    def batch_condition(self, images: torch.Tensor, mel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Clip conditions of a batch of training windows: (B, (C+K)L, ...) frame inputs -> (B*K, (C+1)L, D).

        `valid` (B, F) is 0 for context frames before a session's start, whose features are zeroed.
        """
        return self.window_conditions(self._window_features(images, mel, valid))

    def _window_features(self, video: torch.Tensor, mel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Frame features (B, F, D) of windows' video, mel windows and `valid` (B, F).

        `video` is the frames (B, F, 3, S, S), or for a frozen encoder the features it gave them
        (B, F, video_features), computed once before training (frozen_video.py).
        """
        items, frames = video.shape[:2]
        video, mel = video.flatten(0, 1), mel.flatten(0, 1)
        if self.training:
            # oneDNN's convolutions run ~15% faster on channels-last (NHWC) tensors in training;
            # inference and export keep the default layout.
            mel = mel.contiguous(memory_format=torch.channels_last)
        if video.dim() == 2:
            if not self.video_frozen:
                raise ValueError("precomputed video features stand in for a frozen video encoder only")
        else:
            video = self.encode_video(video.contiguous(memory_format=torch.channels_last) if self.training else video)
        features = torch.cat([video, self.encode_audio(mel)], dim=-1)  # float32 either way (the modality mask)
        return features.view(items, frames, -1) * valid.unsqueeze(-1)

    def speaker_loss(self, features: torch.Tensor, speaker: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """MSE of each encoder's prediction of the speaker's normalized coefficients, over known frames."""
        if self.speaker_heads is None:
            raise ValueError("this model has no speaker heads (speaker_aux_weight is 0)")
        split, audio_end = self.config.video_features, self.config.video_features + self.config.audio_features
        # Each encoder's own features (the spectrum that follows is no learned feature); a frozen video
        # encoder has nothing left to learn from its term.
        pairs = list(zip(self.speaker_heads, (features[..., :split], features[..., split:audio_end])))
        if self.video_frozen:
            pairs = pairs[1:]
        errors = [((head(part) - speaker) ** 2).mean(-1) for head, part in pairs]
        weight = known / known.sum().clamp(min=1.0)
        return sum((error * weight).sum() for error in errors)

    def clip_motion(self, motion: torch.Tensor) -> torch.Tensor:
        """Motion of windows (B, K L, 56) -> one row per clip (B * K, L, 56), the order of `batch_condition`."""
        return motion.reshape(-1, self.config.clip_len, motion.shape[-1])

    def loss(
        self,
        condition: torch.Tensor,
        motion: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_draws: int = 1,
    ) -> torch.Tensor:
        """Diffusion loss for clips: condition (B, (C+1)L, D), normalized motion (B, L, 56).

        `noise_draws` > 1 pairs every clip with several (step, noise) draws: ELNet costs little next
        to the encoders, so this gives the denoiser more samples per encoded frame. ELNet reads each
        clip's condition once (`ELNet.read_condition`), shared by its draws.
        """
        cond = self.elnet.read_condition(condition)
        if noise_draws > 1:
            cond = cond.repeat(noise_draws, 1, 1)
            motion = motion.repeat(noise_draws, 1, 1)
        config = self.config
        weights = None
        if config.loss_dim_weighting != "uniform" or config.rotation_loss_weight != 1.0:
            weights = self.dim_weights()
        return self.diffusion.training_loss(self.elnet.denoise, motion, cond, generator, config.step_focus_range,
                                            config.step_focus_share, config.loss_weighting, weights)

    def dim_weights(self) -> torch.Tensor:
        """Loss weight per motion dim: its training variance relative to its group's (expression, rotation).

        Motion is normalized per dim, so a uniform loss gives a 3DMM's weakest expression components,
        mostly noise, as much weight as its strongest, while L2 is measured in FLAME units where the
        strongest dominate. Weighting by variance within each group makes the loss that group's
        error in its own units; the groups keep weights in proportion to their dim counts.
        "expression_variance" leaves the rotation dims at 1 each: in FLAME units a nod's head pitch
        is outweighed twentyfold by the yaw, and the nod would not be learned.
        """
        variance = self.motion_std**2
        weights = torch.ones_like(variance)
        by_variance = {"uniform": (), "expression_variance": (EXPRESSION,), "group_variance": (EXPRESSION, ROTATION)}
        for group in by_variance[self.config.loss_dim_weighting]:
            weights[group] = variance[group] / variance[group].mean()
        weights[ROTATION] *= self.config.rotation_loss_weight
        return weights

    def forward(
        self,
        images: torch.Tensor,
        mel: torch.Tensor,
        valid: torch.Tensor,
        motion: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_draws: int = 1,
        speaker: torch.Tensor | None = None,
        speaker_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss of a batch of windows (the forward DDP wraps): diffusion + speaker auxiliary.

        `images` may be a frozen video encoder's features of the frames instead (`_window_features`).
        """
        features = self._window_features(images, mel, valid)
        loss = self.loss(self.window_conditions(self._scale_video_gradient(features)), self.clip_motion(motion),
                         generator, noise_draws)
        weight = self.config.speaker_aux_weight
        if self.speaker_heads is not None and speaker is not None and speaker_valid is not None:
            loss = loss + weight * self.speaker_loss(features, speaker, speaker_valid)
        return loss

    def _scale_video_gradient(self, features: torch.Tensor) -> torch.Tensor:
        """The features unchanged, with the video part's gradient scaled by `video_diffusion_gradient`."""
        share = self.config.video_diffusion_gradient
        if share == 1.0:
            return features
        video = features[..., : self.config.video_features]
        scaled = video.detach() + share * (video - video.detach())
        return torch.cat([scaled, features[..., self.config.video_features :]], dim=-1)

    def default_sampler(self, steps: int | None = None) -> SamplerSettings:
        return SamplerSettings.from_config(self.config, steps)

    @torch.no_grad()
    def sample_clips(self, condition: torch.Tensor, settings: SamplerSettings,
                     generator: np.random.Generator | None = None,
                     initial: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized motion (B, L, 56) for a batch of clip conditions: this model's own sampling loop.

        Noise comes from a NumPy generator, in the order every runner draws it, so all backends give
        the same motion for the same seed.
        """
        generator = generator if generator is not None else np.random.default_rng()
        sampler = DiffusionSampler(settings, self.config.train_steps)
        device = condition.device
        if initial is None:
            start = sampler.initial_state(condition.shape[0], generator, self.config.clip_len, self.config.n_coeffs)
            initial = to_device(torch.from_numpy(start), device)
        x = initial
        cond = self.elnet.read_condition(condition)  # the same for every step
        for t, t_prev in sampler.pairs():  # x0 from ELNet itself, not through its noise (see `step`)
            x0 = self.elnet.denoise_x0(x, torch.full((x.shape[0],), t, dtype=torch.long, device=device), cond)
            noise = sampler.noise(tuple(x.shape), generator, t_prev)
            noise_tensor = None if noise is None else to_device(torch.from_numpy(noise), device)
            x = sampler.step_x0(x0.float(), t, x, t_prev, noise_tensor)
        return x

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        mel: torch.Tensor,
        settings: SamplerSettings | None = None,
        generator: np.random.Generator | None = None,
    ) -> torch.Tensor:
        """De-normalized motion (T, 56) for one sequence of T frames (a multiple of the clip length)."""
        features = self.encode(images, mel).unsqueeze(0)  # (1, T, D)
        condition = self.clip_conditions(features)  # (T/L, (C+1)L, D)
        motion = self.sample_clips(condition, settings or self.default_sampler(), generator)
        return self.denormalize(motion.reshape(-1, self.config.n_coeffs))
