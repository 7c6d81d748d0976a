"""Gradient saliency of the video encoder over a speaker frame (the paper's Figure 5).

Saliency is |d y / d pixel| summed over colour channels, where y is the norm of the listener motion
the model predicts for the clip holding the frame (so it shows what in the face drives the reaction),
or, with `target="features"`, the norm of the frame's video features.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from fad_edge.constants import CLIP_LEN
from fad_edge.listener_model import ListenerModel
from fad_edge.plots import plt, save_figure
from fad_edge.sampling import DiffusionSampler, SamplerSettings


def saliency_map(model: ListenerModel, images: torch.Tensor, mel: torch.Tensor, frame: int, target: str = "motion",
                 device: torch.device | str = "cpu") -> np.ndarray:
    """(S, S) saliency of frame `frame` of one clip: images (L, 3, S, S) in [0, 1], mel (L, 1, W, M).

    The model is moved to `device` and the gradients computed there.
    """
    model.eval().to(device)
    images = images.to(device).clone().requires_grad_(True)
    mel = mel.to(device)
    if target == "features":
        value = model.video_encoder(images[frame : frame + 1]).norm()
    else:
        features = model.encode(images, mel).unsqueeze(0)  # (1, L, D)
        condition = model.clip_conditions(features)
        x_start = torch.zeros(1, model.config.clip_len, model.config.n_coeffs, device=device)
        steps = torch.full((1,), model.config.sample_start_step, dtype=torch.long, device=device)
        epsilon = model.elnet(x_start, steps, condition)
        sampler = DiffusionSampler(SamplerSettings.from_config(model.config, steps=1), model.config.train_steps)
        value = sampler.predict_x0(epsilon, model.config.sample_start_step, x_start).norm()
    value.backward()
    assert images.grad is not None
    return images.grad[frame].abs().sum(dim=0).cpu().numpy()


def save_saliency_figure(frame_rgb: np.ndarray, saliency: np.ndarray, path: Path, title: str) -> Path:
    """The frame, the saliency heat map, and the overlay, side by side."""
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
    figure.suptitle(title)
    return save_figure(figure, path)


def clip_of_frame(frame: int, n_frames: int) -> tuple[int, int]:
    """(first frame of the clip holding `frame`, index of `frame` within it)."""
    if not 0 <= frame < n_frames:
        raise ValueError(f"frame {frame} is outside the video's {n_frames} frames")
    start = (frame // CLIP_LEN) * CLIP_LEN
    return start, frame - start
