"""Facial Action Diffusion's training side: the noise schedule as torch buffers, the forward process and the loss.

ELNet only predicts noise; the schedule and the sampler's step live in `fad_edge.sampling` (NumPy,
shared with the torch-free edge runtime), and each runner owns its own sampling loop. Training uses
100 steps of the squared-cosine schedule and the epsilon-prediction MSE loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fad_edge.device_copies import to_device
from fad_edge.sampling import cumulative_alphas, squared_cosine_betas


class FacialActionDiffusion(nn.Module):
    """The noise schedule and the training loss over normalized listener motion."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def __init__(self, train_steps: int = 100) -> None:
        super().__init__()
        betas = squared_cosine_betas(train_steps)
        self.train_steps = train_steps
        self.register_buffer("betas", torch.from_numpy(betas), persistent=False)
        self.register_buffer("alphas_cumprod", torch.from_numpy(cumulative_alphas(betas)), persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0): sqrt(a_t) x0 + sqrt(1 - a_t) noise, per batch element."""
        alpha_bar = self.alphas_cumprod[steps].view(-1, *([1] * (x0.dim() - 1)))
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def training_loss(
        self,
        denoiser: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
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
        # Drawn where the generator lives (the trainer keeps it on the CPU, so a run on a GPU draws
        # the same steps and noise as on the CPU and its saved state resumes on either), then moved.
        draw = generator.device if generator is not None else x0.device
        steps = torch.randint(0, self.train_steps, (batch,), device=draw, generator=generator)
        if focus is not None and focus_share > 0:
            low, high = focus
            focused = torch.randint(low, high + 1, (batch,), device=draw, generator=generator)
            chosen = torch.rand(batch, device=draw, generator=generator) < focus_share
            steps = torch.where(chosen, focused, steps)
        noise = torch.randn(x0.shape, device=draw, generator=generator)
        steps, noise = to_device(steps, x0.device), to_device(noise, x0.device)
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
