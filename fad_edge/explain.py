"""Gradient saliency of the video encoder over a speaker frame (the paper's Figure 5).

Saliency is |d y / d pixel| summed over colour channels, where y is the norm of the listener motion
(normalized per dimension) that the model predicts for the clip holding the frame, or, with
`target="features"`, the norm of the frame's video features. The prediction is the one `generate`
makes: the same face crops and mel windows, the clip's context clips before it, and the sampler's
own start state and noise for that clip (`clip_draws`), its loop run with gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from fad_edge.data.inputs import SpeakerInputs
from fad_edge.errors import FadEdgeError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig
from fad_edge.plots import plt, save_figure
from fad_edge.sampling import DEFAULT_SAMPLER, DiffusionSampler, SamplerSettings

TARGETS = ("motion", "features")


@dataclass
class ClipDraws:
    """The random numbers a runner's sampler spends on one clip: its start state and each later step's noise."""

    state: np.ndarray  # (L, 56)
    noises: list[np.ndarray | None]  # one per network call; None at the last, which returns x0


def clip_draws(sampler: DiffusionSampler, config: ModelConfig, clips: int, clip: int, seed: int = 0) -> ClipDraws:
    """Clip `clip`'s share of the draws a runner makes for a video of `clips` clips with `seed`, in its order:
    every clip's start state (`ClipRunner.run_inputs`), then every clip's noise per step (`sample_clips`)."""
    generator = np.random.default_rng(seed)
    shape = (clips, config.clip_len, config.n_coeffs)
    state = sampler.initial_state(clips, generator, config.clip_len, config.n_coeffs)[clip]
    noises = [sampler.noise(shape, generator, t_prev) for _, t_prev in sampler.pairs()]
    return ClipDraws(state, [None if noise is None else noise[clip] for noise in noises])


@dataclass
class ClipWindow:
    """Where a frame sits: the first frame of the window its clip's condition reads, the clip, and the frame's
    index within the window."""

    start: int
    clip: int
    frame: int


def window_of_frame(frame: int, n_frames: int, config: ModelConfig) -> ClipWindow:
    """The clip holding `frame` and its condition window: up to `context_clips` clips before it (fewer at the
    video's start, where the model sees zeros), then its own."""
    if not 0 <= frame < n_frames:
        raise FadEdgeError(f"frame {frame} is outside the video's {n_frames} frames")
    clip = frame // config.clip_len
    start = max(0, clip - config.context_clips) * config.clip_len
    return ClipWindow(start, clip, frame - start)


def check_explainable(config: ModelConfig, target: str) -> None:
    """Refuse a model whose video features are masked out: every gradient to the pixels is zero."""
    if config.modalities == "audio":
        raise FadEdgeError(f"this model was trained on audio alone (modalities {config.modalities!r}): its video "
                           f"features are zeroed, so no pixel moves its {target}; explain a model that sees video")


def frame_saliency(model: ListenerModel, inputs: SpeakerInputs, frame: int, target: str = "motion",
                   device: torch.device | str = "cpu") -> np.ndarray:
    """(S, S) saliency of `frame` of prepared inputs (`generate.speaker_inputs`), for the motion a runner
    predicts for its clip with the model's default sampler and seed: the clip's context and random draws."""
    config = model.config
    window = window_of_frame(frame, inputs.n_frames, config)
    end = (window.clip + 1) * config.clip_len
    settings = SamplerSettings.named(DEFAULT_SAMPLER, config)
    draws = clip_draws(DiffusionSampler(settings, config.train_steps), config, inputs.n_clips, window.clip)
    return saliency_map(model, torch.from_numpy(inputs.images[window.start : end]),
                        torch.from_numpy(inputs.mel[window.start : end]), window.frame, target, device, settings,
                        draws)


def saliency_map(model: ListenerModel, images: torch.Tensor, mel: torch.Tensor, frame: int, target: str = "motion",
                 device: torch.device | str = "cpu", settings: SamplerSettings | None = None,
                 draws: ClipDraws | None = None) -> np.ndarray:
    """(S, S) saliency of `images[frame]`, for the clip of the last L frames.

    images (F, 3, S, S) in [0, 1] and mel (F, 1, W, M) are the clip's window: up to `context_clips`
    clips before it, then its own L frames (fewer before it: the model sees zeros there, as at a
    video's start). `settings` is the sampler (default: the model's "mean" one) and `draws` its
    random numbers for this clip (default: those of a one-clip video, seed 0). The model is moved to
    `device` and the gradients computed there.
    """
    model.eval().to(device)
    images = images.to(device).clone().requires_grad_(True)
    mel = mel.to(device)
    if target == "features":
        value = model.video_encoder(images[frame : frame + 1]).norm()
    else:
        value = _predicted_motion(model, images, mel, settings or SamplerSettings.from_config(model.config),
                                  draws).norm()
    value.backward()
    assert images.grad is not None
    return images.grad[frame].abs().sum(dim=0).cpu().numpy()


def _predicted_motion(model: ListenerModel, images: torch.Tensor, mel: torch.Tensor, settings: SamplerSettings,
                      draws: ClipDraws | None) -> torch.Tensor:
    """The clip's normalized motion (1, L, 56) as `ListenerModel.sample_clips` samples it, with gradients
    (that loop runs without them)."""
    config = model.config
    sampler = DiffusionSampler(settings, config.train_steps)
    draws = draws or clip_draws(sampler, config, 1, 0)
    features = model.encode(images, mel)
    missing = (config.context_clips + 1) * config.clip_len - len(features)
    window = torch.cat([features.new_zeros(missing, features.shape[1]), features]).unsqueeze(0)
    cond = model.elnet.read_condition(model.window_conditions(window))
    x = torch.from_numpy(draws.state).unsqueeze(0).to(images.device)
    for (t, t_prev), noise in zip(sampler.pairs(), draws.noises, strict=True):
        x0 = model.elnet.denoise_x0(x, torch.full((1,), t, dtype=torch.long, device=images.device), cond)
        noise_tensor = None if noise is None else torch.from_numpy(noise).unsqueeze(0).to(images.device)
        x = sampler.step_x0(x0.float(), t, x, t_prev, noise_tensor)
    return x


def save_saliency_figure(frame_rgb: np.ndarray, saliency: np.ndarray, path: Path, title: str) -> Path:
    """The frame, the saliency heat map, and the overlay, side by side; the title as plain text (a file name's
    `$` would otherwise start matplotlib's math mode)."""
    heat = saliency / (saliency.max() + 1e-12)
    heat = cv2.GaussianBlur(heat, (0, 0), sigmaX=max(1.0, heat.shape[0] / 48))
    heat = heat / (heat.max() + 1e-12)
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    axes[0].imshow(frame_rgb)
    axes[0].set_title("speaker frame")
    axes[1].imshow(heat, cmap="inferno")
    axes[1].set_title("saliency")
    axes[2].imshow(frame_rgb)
    axes[2].imshow(heat, cmap="inferno", alpha=0.55)
    axes[2].set_title("overlay")
    for axis in axes:
        axis.axis("off")
    figure.suptitle(title, usetex=False, parse_math=False)
    return save_figure(figure, path)
