"""The DDPM noise schedule and the sampler's step, in NumPy: shared by training and every runner.

The schedule is the squared cosine of Nichol & Dhariwal (2021), 100 training steps, betas capped at
0.999 as diffusers' `squaredcos_cap_v2`. As in diffusers' `DDPMScheduler`, the sampler never calls
the network: whoever owns the network (the torch model, an ONNX Runtime session, a TensorRT engine)
owns the loop and calls `DiffusionSampler.step_x0` (a network that gives x0 itself, as the torch ELNet
does) or `step` (one that gives its noise estimate, as the exported `elnet_eps` graph does) between its
own network calls:

    x = sampler.initial_state(clips, generator)
    for t, t_prev in sampler.pairs():
        x0 = network(x, t, condition)
        x = sampler.step_x0(x0, t, x, t_prev, sampler.noise(x.shape, generator, t_prev))

`step` and `step_x0` work on NumPy arrays and on torch tensors alike (it only multiplies by Python floats and
calls `.clip`), so this module imports no torch and the edge runtime needs none.

Why sampling does not start at the last training step: with one step the x0 estimate is
x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), and at t = 99 this schedule has a_t = 2.4e-7, so any
error in eps is multiplied by ~2000 (a_98: 64x, a_70: 2.3x). Sampling therefore starts at
`start_step` (a model config value, measured on validation data) from the forward process applied
to the mean motion (zero after normalization): x_start = sqrt(1 - a_start) z. Later steps follow the
DDPM posterior over evenly spaced timesteps down to 0.

Two named samplers read their settings from the model config, so they travel with the checkpoint and
the export (`SamplerSettings.named`):

- "mean": the model's own setting (`inference_steps`, `sample_start_step`, `sample_start_noise`). With
  a mean start and one step it is the deterministic estimate of E[x0 | speaker]: the same motion for
  every seed, the least L2, but less variance than real motion.
- "diverse": a draw from the reaction distribution (`diverse_steps` from `diverse_start_step`, start
  noise `diverse_start_noise`, per-step noise scaled by `diverse_temperature`, and the rotation dims'
  by `diverse_rotation_noise` more), calibrated on validation data for Frechet distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from fad_edge.constants import ROTATION
from fad_edge.errors import FadEdgeError

if TYPE_CHECKING:
    import torch

    from fad_edge.models.config import ModelConfig

# step() takes NumPy arrays or torch tensors (it only needs * + - / and .clip) and returns the same kind.
Array = TypeVar("Array", np.ndarray, "torch.Tensor")

SAMPLERS = ("mean", "diverse")  # the named samplers; the first is the default everywhere
DEFAULT_SAMPLER = SAMPLERS[0]


def check_sampler(name: str) -> str:
    """`name` if it is a known sampler, else a one-line error that lists them."""
    if name not in SAMPLERS:
        raise FadEdgeError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return name


def squared_cosine_betas(steps: int, max_beta: float = 0.999) -> np.ndarray:
    """Betas of the squared-cosine schedule: 1 - abar((i+1)/T) / abar(i/T), capped at max_beta (float32)."""

    def alpha_bar(fraction: float) -> float:
        return math.cos((fraction + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return np.asarray(betas, dtype=np.float32)


def cumulative_alphas(betas: np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), accumulated in float32 as the torch training code does."""
    return np.cumprod(1.0 - betas, dtype=np.float32)


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: denoising steps, the timestep to start from, the x0 clamp, the start noise scale."""

    steps: int = 1
    start_step: int = 70
    clip_sample: float = 6.0
    # Scale of the noise in x_start (1: a draw of the forward process; 0: start from the mean motion,
    # which makes 1-step sampling the deterministic estimate of E[x0 | speaker]).
    start_noise: float = 1.0
    # Scale of the posterior noise added at each step but the last (1: DDPM; 0: its mean, no noise).
    temperature: float = 1.0
    # The jaw and head dims' posterior noise relative to the expression dims' (1: the same). A model can
    # be surer of one group than of the other; `fad-edge tune-sampler` can calibrate each.
    rotation_noise: float = 1.0

    @classmethod
    def from_config(cls, config: ModelConfig, steps: int | None = None) -> SamplerSettings:
        """The model's own sampling settings (the "mean" sampler), with the number of steps optionally overridden."""
        return cls(steps=steps or config.inference_steps, start_step=config.sample_start_step,
                   clip_sample=config.clip_sample, start_noise=config.sample_start_noise)

    @classmethod
    def named(cls, name: str, config: ModelConfig, steps: int | None = None) -> SamplerSettings:
        """The settings of sampler `name` (one of SAMPLERS) as the model config holds them; `steps` overrides."""
        if check_sampler(name) == "mean":
            return cls.from_config(config, steps)
        return cls(steps=steps or config.diverse_steps, start_step=config.diverse_start_step,
                   clip_sample=config.clip_sample, start_noise=config.diverse_start_noise,
                   temperature=config.diverse_temperature, rotation_noise=config.diverse_rotation_noise)

    def describe(self) -> str:
        """One short line: "4 steps from t = 90, start noise 1, temperature 1" (and the rotation noise if not 1).

        The steps are the network calls made: more steps than timesteps from the start down to 0 make no more.
        """
        calls = len(sampling_timesteps(self.steps, self.start_step))
        steps = f"{calls} step{'s' if calls > 1 else ''}"
        rotation = f", rotation noise {self.rotation_noise:g}" if self.rotation_noise != 1.0 else ""
        return (f"{steps} from t = {self.start_step}, start noise {self.start_noise:g}, "
                f"temperature {self.temperature:g}{rotation}")


def sampling_timesteps(steps: int, start_step: int) -> list[int]:
    """Evenly spaced timesteps from start_step down to 0, duplicates dropped: one network call each."""
    if steps == 1:
        return [start_step]
    spaced = np.round(np.linspace(start_step, 0, steps)).astype(int).tolist()
    return sorted(set(spaced), reverse=True)


class DiffusionSampler:
    """The schedule plus one sampling setting: its timesteps, the start state and the posterior step."""

    def __init__(self, settings: SamplerSettings, train_steps: int = 100) -> None:
        if not 1 <= settings.steps <= train_steps:
            raise ValueError(f"denoising steps must be in 1..{train_steps}, got {settings.steps}")
        if not 0 <= settings.start_step < train_steps:
            raise ValueError(f"start step must be in 0..{train_steps - 1}, got {settings.start_step}")
        for name in ("temperature", "rotation_noise"):
            value = getattr(settings, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        self.settings = settings
        self.alphas_cumprod = cumulative_alphas(squared_cosine_betas(train_steps))
        # As Python floats: torch.compile traces NumPy indexing as tensor ops, and float() of one as a graph break.
        self._alpha_bars = tuple(float(a) for a in self.alphas_cumprod)
        self.timesteps = sampling_timesteps(settings.steps, settings.start_step)

    def pairs(self) -> list[tuple[int, int | None]]:
        """(t, t_prev) for each network call; t_prev is None at the last one, which returns x0."""
        following: list[int | None] = [*self.timesteps[1:], None]
        return list(zip(self.timesteps, following))

    def alpha_bar(self, step: int) -> float:
        return self._alpha_bars[step]

    def initial_state(self, clips: int, generator: np.random.Generator, clip_len: int, n_coeffs: int,
                      guess: np.ndarray | None = None) -> np.ndarray:
        """x at the first timestep: start_noise-scaled forward noise, plus sqrt(alpha_bar) * `guess`.

        `guess` is a normalized motion estimate (clips, L, 56), e.g. the listener's previous clip
        carried forward, which pulls the sample towards it (as SDEdit does); None starts from the mean.
        The noise is drawn whatever start_noise is, so every backend consumes the same noise stream.
        """
        start = self.timesteps[0]
        noise = generator.standard_normal((clips, clip_len, n_coeffs), dtype=np.float32)
        state = np.float32(self.settings.start_noise * math.sqrt(1 - self.alpha_bar(start))) * noise
        if guess is not None:
            state = state + np.float32(math.sqrt(self.alpha_bar(start))) * np.asarray(guess, np.float32)
        return state.astype(np.float32, copy=False)

    def noise(self, shape: tuple[int, ...], generator: np.random.Generator, t_prev: int | None) -> np.ndarray | None:
        """The posterior noise for a step towards t_prev (none for the last step, which returns x0).

        Shape (..., 56): the rotation dims' noise is scaled by `rotation_noise` here, so that `step`
        stays one scalar formula for every backend.
        """
        if t_prev is None:
            return None
        noise = generator.standard_normal(shape, dtype=np.float32)
        if self.settings.rotation_noise != 1.0:
            noise[..., ROTATION] *= np.float32(self.settings.rotation_noise)
        return noise

    def predict_x0(self, epsilon: Array, t: int, x: Array) -> Array:
        """Closed-form x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) (DDPM eq. 15), clamped to +-clip_sample."""
        return self.clip_x0(self._x0_from_epsilon(epsilon, t, x))

    def _x0_from_epsilon(self, epsilon: Array, t: int, x: Array) -> Array:
        alpha_bar = self.alpha_bar(t)
        return (x - math.sqrt(1 - alpha_bar) * epsilon) / math.sqrt(alpha_bar)

    def clip_x0(self, x0: Array) -> Array:
        """An x0 estimate clamped to +-clip_sample, as every step's is (for a network that gives x0 itself)."""
        return x0.clip(-self.settings.clip_sample, self.settings.clip_sample)

    def step(self, epsilon: Array, t: int, x: Array, t_prev: int | None, noise: Array | None = None) -> Array:
        """One DDPM step from x_t to x_{t_prev} given the network's noise estimate (see `step_x0`).

        For a network that can give x0 itself, `step_x0` is the better call: near t = 99, x0 from the
        noise divides its rounding by sqrt(a_t) (1 / 2000), which float32 keeps near 1e-4 of the motion
        and float16 does not.
        """
        return self.step_x0(self._x0_from_epsilon(epsilon, t, x), t, x, t_prev, noise)

    def step_x0(self, x0: Array, t: int, x: Array, t_prev: int | None, noise: Array | None = None) -> Array:
        """One DDPM step from x_t to x_{t_prev} given an x0 estimate; with t_prev None, that x0 itself.

        1. the x0 estimate, clamped to +-clip_sample;
        2. the mean of the posterior q(x_prev | x_t, x0) for a possibly strided pair of steps (eq. 7);
        3. plus its standard deviation times `noise` (the "fixed small" variance, floored at 1e-20), times
           the temperature (1: DDPM).
        """
        x0 = self.clip_x0(x0)
        if t_prev is None:
            return x0
        if noise is None:
            raise ValueError("a step towards an earlier timestep needs its posterior noise")
        alpha_bar, alpha_bar_prev = self.alpha_bar(t), self.alpha_bar(t_prev)
        alpha = alpha_bar / alpha_bar_prev
        beta = 1 - alpha
        x0_weight = math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)
        x_weight = math.sqrt(alpha) * (1 - alpha_bar_prev) / (1 - alpha_bar)
        deviation = self.settings.temperature * math.sqrt(max((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, 1e-20))
        return x0_weight * x0 + x_weight * x + deviation * noise
