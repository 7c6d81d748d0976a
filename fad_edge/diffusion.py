"""Facial Action Diffusion: the DDPM that owns the noise schedule, the loss and the sampler.

ELNet only predicts noise; this module knows the schedule (diffusers' split between a model and its
scheduler). Training uses 100 steps of the squared-cosine schedule (Nichol & Dhariwal 2021, betas
capped at 0.999 as diffusers' `squaredcos_cap_v2`) and the epsilon-prediction MSE loss.

Sampling, and why it does not start at the last training step: with K = 1 the x0 estimate is
x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t), and at t = 99 this schedule has a_t = 2.4e-7, so any
error in eps is multiplied by ~2000 (a_98: 64x, a_70: 2.3x). Sampling therefore starts at
`sample_start_step` (a config value, measured on validation data) from the forward process applied
to the mean motion (zero after normalization): x_start = sqrt(1 - a_start) * z. Steps then follow
the DDPM posterior over evenly spaced timesteps down to 0; K = 1 is the closed-form x0 above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def squared_cosine_betas(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the squared-cosine schedule: 1 - abar((i+1)/T) / abar(i/T), capped at max_beta."""

    def alpha_bar(fraction: float) -> float:
        return math.cos((fraction + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return torch.tensor(betas, dtype=torch.float32)


# Sampling noise may come from torch or from NumPy: runners that must agree across backends (PyTorch,
# ONNX Runtime, TensorRT) all draw from one seeded NumPy generator, in the same order.
NoiseGenerator = torch.Generator | np.random.Generator | None


def standard_normal(shape: tuple[int, ...], generator: NoiseGenerator, device: torch.device | str = "cpu") -> torch.Tensor:
    """N(0, I) noise of `shape` from a torch or NumPy generator (float32)."""
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.standard_normal(shape, dtype=np.float32)).to(device)
    return torch.randn(shape, generator=generator, device=device)


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: number of denoising steps, the timestep to start from, the x0 clamp."""

    steps: int = 1
    start_step: int = 70
    clip_sample: float = 6.0
    # Scale of the noise in x_start (1: a draw of the forward process; 0: start from the mean motion,
    # which makes 1-step sampling the deterministic estimate of E[x0 | speaker]).
    start_noise: float = 1.0


class FacialActionDiffusion(nn.Module):
    """The noise schedule, the training loss and the sampler over normalized listener motion."""

    def __init__(self, train_steps: int = 100) -> None:
        super().__init__()
        betas = squared_cosine_betas(train_steps)
        self.train_steps = train_steps
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0), persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0): sqrt(a_t) x0 + sqrt(1 - a_t) noise, per batch element."""
        alpha_bar = self.alphas_cumprod[steps].view(-1, *([1] * (x0.dim() - 1)))
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def training_loss(
        self,
        denoiser: nn.Module,
        x0: torch.Tensor,
        condition: torch.Tensor,
        generator: torch.Generator | None = None,
        focus: tuple[int, int] | None = None,
        focus_share: float = 0.0,
        weighting: str = "uniform",
        dim_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Epsilon-prediction MSE at drawn steps: uniform over all steps, except that a `focus_share`
        of the batch draws uniformly inside the `focus` range (inclusive), where few-step sampling
        reads the model. Any share keeps it the same epsilon-MSE objective, re-weighted over steps.

        weighting "uniform" is DDPM's L_simple; "inverse_alpha_bar" weights each step's epsilon MSE
        by 1 / alpha_bar_t, which for a preconditioned ELNet is exactly the MSE of its v output and,
        at high noise, of the one-step x0. L_simple gives those steps a weight of alpha_bar_t
        (2.4e-7 at the last step), so the speaker condition, which matters only there, is barely
        learned in a short training run.

        `dim_weights` (one per motion dim, mean 1) weights each dim's squared error.
        """
        batch = x0.shape[0]
        steps = torch.randint(0, self.train_steps, (batch,), device=x0.device, generator=generator)
        if focus is not None and focus_share > 0:
            low, high = focus
            focused = torch.randint(low, high + 1, (batch,), device=x0.device, generator=generator)
            chosen = torch.rand(batch, device=x0.device, generator=generator) < focus_share
            steps = torch.where(chosen, focused, steps)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        predicted = denoiser(self.add_noise(x0, noise, steps), steps, condition)
        if weighting not in ("uniform", "inverse_alpha_bar"):
            raise ValueError(f"unknown loss weighting {weighting!r}")
        squared = (predicted - noise) ** 2
        if dim_weights is not None:
            squared = squared * dim_weights
        if weighting == "uniform":
            return squared.mean()
        per_sample = squared.flatten(1).mean(dim=1)
        return (per_sample / self.alphas_cumprod[steps]).mean()

    def timesteps(self, settings: SamplerSettings) -> list[int]:
        """Evenly spaced timesteps from start_step down to 0 (duplicates dropped), K = settings.steps."""
        if not 1 <= settings.steps <= self.train_steps:
            raise ValueError(f"denoising steps must be in 1..{self.train_steps}, got {settings.steps}")
        if not 0 <= settings.start_step < self.train_steps:
            raise ValueError(f"start step must be in 0..{self.train_steps - 1}, got {settings.start_step}")
        if settings.steps == 1:
            return [settings.start_step]
        spaced = torch.linspace(settings.start_step, 0, settings.steps).round().long().tolist()
        return sorted(set(spaced), reverse=True)

    def predict_x0(self, x_t: torch.Tensor, epsilon: torch.Tensor, step: int, clip_sample: float) -> torch.Tensor:
        """Closed-form x0 from x_t and the predicted noise at `step`, clamped to +-clip_sample."""
        alpha_bar = self.alphas_cumprod[step]
        x0 = (x_t - (1 - alpha_bar).sqrt() * epsilon) / alpha_bar.sqrt()
        return x0.clamp(-clip_sample, clip_sample)

    def initial_sample(self, shape: tuple[int, ...], start_step: int, generator: NoiseGenerator = None,
                       device: torch.device | str = "cpu") -> torch.Tensor:
        """x_start: the forward process at start_step applied to the (zero) mean motion."""
        noise = standard_normal(shape, generator, device)
        return (1 - self.alphas_cumprod[start_step]).sqrt() * noise

    @torch.no_grad()
    def sample(
        self,
        denoiser: nn.Module,
        condition: torch.Tensor,
        shape: tuple[int, ...],
        settings: SamplerSettings,
        generator: NoiseGenerator = None,
        initial: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise from x_start to x0 with the DDPM posterior; returns normalized motion of `shape`."""
        timesteps = self.timesteps(settings)
        if initial is None:
            initial = settings.start_noise * self.initial_sample(shape, timesteps[0], generator, condition.device)
        x = initial
        for index, step in enumerate(timesteps):
            step_batch = torch.full((shape[0],), step, dtype=torch.long, device=condition.device)
            epsilon = denoiser(x, step_batch, condition)
            x0 = self.predict_x0(x, epsilon, step, settings.clip_sample)
            if index == len(timesteps) - 1:
                return x0
            x = self._posterior_step(x, x0, step, timesteps[index + 1], generator)
        raise AssertionError("unreachable: timesteps is never empty")

    def _posterior_step(
        self, x_t: torch.Tensor, x0: torch.Tensor, step: int, previous: int, generator: NoiseGenerator
    ) -> torch.Tensor:
        """One draw from q(x_prev | x_t, x0) for a possibly strided pair of steps (DDPM eq. 7)."""
        alpha_bar, alpha_bar_prev = self.alphas_cumprod[step], self.alphas_cumprod[previous]
        alpha = alpha_bar / alpha_bar_prev
        beta = 1 - alpha
        mean = (alpha_bar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - alpha_bar_prev) * x_t) / (1 - alpha_bar)
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * beta
        noise = standard_normal(tuple(x_t.shape), generator, x_t.device)
        return mean + variance.clamp(min=1e-20).sqrt() * noise
