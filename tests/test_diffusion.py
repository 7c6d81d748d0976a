"""The noise schedule and the loss of FacialActionDiffusion, and the NumPy sampler every runner loops over."""

import numpy as np
import pytest
import torch

from fad_edge.diffusion import FacialActionDiffusion
from fad_edge.sampling import DiffusionSampler, SamplerSettings, squared_cosine_betas


def test_schedule_matches_diffusers_squaredcos_cap_v2():
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    ours = FacialActionDiffusion(100)
    torch.testing.assert_close(ours.betas, reference.betas.float(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod, reference.alphas_cumprod.float(), rtol=1e-4, atol=1e-9)


def test_add_noise_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    x0, noise = torch.randn(4, 8, 56), torch.randn(4, 8, 56)
    steps = torch.tensor([0, 10, 50, 99])
    torch.testing.assert_close(
        FacialActionDiffusion(100).add_noise(x0, noise, steps), reference.add_noise(x0, noise, steps),
        rtol=1e-4, atol=1e-5,
    )


def test_last_step_is_nearly_pure_noise_which_is_why_sampling_starts_earlier():
    alphas = FacialActionDiffusion(100).alphas_cumprod
    assert alphas[99] < 1e-6  # x0 at t=99 would amplify eps errors ~2000x
    assert 0.1 < alphas[70] < 0.3


def test_betas_are_capped():
    assert float(squared_cosine_betas(100).max()) <= 0.999 + 1e-7


class Oracle(torch.nn.Module):  # for the training loss
    """A denoiser that knows x0 and returns the exact noise, so every sampler must recover x0."""

    def __init__(self, diffusion, x0):
        super().__init__()
        self.diffusion, self.x0 = diffusion, x0

    def forward(self, x_t, steps, condition):
        alpha_bar = self.diffusion.alphas_cumprod[steps].view(-1, 1, 1)
        return (x_t - alpha_bar.sqrt() * self.x0) / (1 - alpha_bar).sqrt()


def _sample_with_oracle(sampler: DiffusionSampler, x0: np.ndarray, seed: int) -> np.ndarray:
    """The ten-line loop a runner owns, with a network that returns the exact noise for x0."""
    generator = np.random.default_rng(seed)
    x = sampler.initial_state(len(x0), generator, x0.shape[1], x0.shape[2])
    for t, t_prev in sampler.pairs():
        alpha_bar = sampler.alpha_bar(t)
        epsilon = (x - np.sqrt(alpha_bar) * x0) / np.sqrt(1 - alpha_bar)
        x = sampler.step(epsilon, t, x, t_prev, sampler.noise(x.shape, generator, t_prev))
    return x


@pytest.mark.parametrize("steps", [1, 2, 5, 50, 100])
def test_sampler_recovers_x0_with_an_exact_denoiser(steps):
    x0 = np.clip(np.random.default_rng(1).standard_normal((3, 8, 56)), -3, 3).astype(np.float32)
    sampler = DiffusionSampler(SamplerSettings(steps=steps, start_step=70 if steps < 100 else 99, clip_sample=6.0))
    np.testing.assert_allclose(_sample_with_oracle(sampler, x0, seed=0), x0, rtol=1e-3, atol=1e-3)


def test_step_matches_diffusers_ddpm_step():
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                                        clip_sample_range=6.0)
    reference.set_timesteps(5)  # "leading" spacing: 80, 60, 40, 20, 0, so t = 60 steps to 40
    sampler = DiffusionSampler(SamplerSettings(steps=5, start_step=60, clip_sample=6.0))
    x, epsilon = torch.randn(2, 8, 56), torch.randn(2, 8, 56)
    expected = reference.step(epsilon, 60, x, generator=torch.Generator().manual_seed(5)).prev_sample
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))  # the draw diffusers made
    torch.testing.assert_close(sampler.step(epsilon, 60, x, 40, noise), expected, rtol=1e-4, atol=1e-5)
    ours_numpy = sampler.step(epsilon.numpy(), 60, x.numpy(), 40, noise.numpy())
    np.testing.assert_allclose(ours_numpy, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert ours_numpy.dtype == np.float32


def test_last_step_returns_the_clamped_x0_and_needs_no_noise():
    sampler = DiffusionSampler(SamplerSettings(steps=1, start_step=70, clip_sample=1.0))
    x = np.full((1, 8, 56), 100.0, np.float32)
    assert np.all(sampler.step(np.zeros_like(x), 70, x, None) == 1.0)
    with pytest.raises(ValueError, match="noise"):
        sampler.step(np.zeros_like(x), 70, x, 50)


def test_initial_state_scales_noise_and_pulls_towards_a_guess():
    settings = SamplerSettings(steps=1, start_step=70, start_noise=0.0)
    sampler = DiffusionSampler(settings)
    guess = np.ones((2, 8, 56), np.float32)
    state = sampler.initial_state(2, np.random.default_rng(0), 8, 56, guess)
    np.testing.assert_allclose(state, np.sqrt(sampler.alpha_bar(70)) * guess, rtol=1e-6)
    noisy = DiffusionSampler(SamplerSettings(steps=1, start_step=70, start_noise=1.0))
    drawn = noisy.initial_state(2, np.random.default_rng(0), 8, 56)
    standard = np.random.default_rng(0).standard_normal((2, 8, 56), dtype=np.float32)
    expected = np.sqrt(1 - noisy.alpha_bar(70)) * standard
    np.testing.assert_allclose(drawn, expected, rtol=1e-6)


def test_schedule_in_numpy_equals_the_training_buffers():
    diffusion = FacialActionDiffusion(100)
    sampler = DiffusionSampler(SamplerSettings())
    np.testing.assert_array_equal(sampler.alphas_cumprod, diffusion.alphas_cumprod.numpy())


def test_settings_from_config():
    from fad_edge.models.presets import preset

    config = preset("small")
    settings = SamplerSettings.from_config(config)
    assert (settings.steps, settings.start_step, settings.start_noise) == (1, 99, 0.0)
    assert SamplerSettings.from_config(config, steps=5).steps == 5


def test_timesteps_are_descending_distinct_and_end_at_zero():
    assert DiffusionSampler(SamplerSettings(1, 70)).timesteps == [70]
    assert DiffusionSampler(SamplerSettings(100, 99)).timesteps == list(range(99, -1, -1))
    assert DiffusionSampler(SamplerSettings(5, 70)).timesteps == [70, 52, 35, 18, 0]
    assert DiffusionSampler(SamplerSettings(5, 70)).pairs()[-1] == (0, None)
    with pytest.raises(ValueError):
        DiffusionSampler(SamplerSettings(0, 70))
    with pytest.raises(ValueError):
        DiffusionSampler(SamplerSettings(101, 70))


def test_training_loss_is_zero_for_the_exact_denoiser_and_positive_otherwise():
    diffusion = FacialActionDiffusion(100)
    x0 = torch.randn(5, 8, 56)
    exact = diffusion.training_loss(Oracle(diffusion, x0), x0, torch.zeros(5, 8, 4), torch.Generator().manual_seed(1))
    assert float(exact) < 1e-6
    zero = diffusion.training_loss(lambda x, t, c: torch.zeros_like(x), x0, torch.zeros(5, 8, 4),
                                   torch.Generator().manual_seed(1))
    assert 0.5 < float(zero) < 1.5  # E[eps^2] = 1


def test_preconditioned_elnet_and_inverse_alpha_bar_weighting_give_the_v_loss():
    """With epsilon = s x_t + a F, the 1/alpha_bar-weighted epsilon MSE is the MSE of F against v = a eps - s x0."""
    from fad_edge.models.elnet import ELNet
    from fad_edge.models.presets import preset

    config = preset("tiny")
    net = ELNet(config)
    diffusion = FacialActionDiffusion(config.train_steps)
    x0 = torch.randn(6, 8, 56)
    condition = torch.randn(6, config.condition_frames, config.condition_dim)
    generator = torch.Generator().manual_seed(3)
    loss = diffusion.training_loss(net, x0, condition, torch.Generator().manual_seed(3), weighting="inverse_alpha_bar")
    # replay the same draws by hand
    steps = torch.randint(0, config.train_steps, (6,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    a = diffusion.alphas_cumprod[steps].sqrt().view(-1, 1, 1)
    s = (1 - diffusion.alphas_cumprod[steps]).sqrt().view(-1, 1, 1)
    x_t = a * x0 + s * noise
    raw = (net(x_t, steps, condition) - s * x_t) / a  # F, undoing the preconditioning
    v = a * noise - s * x0
    torch.testing.assert_close(loss, ((raw - v) ** 2).flatten(1).mean(1).mean(), rtol=1e-4, atol=1e-6)
    assert loss.item() < 1e3  # finite and modest even when t = 99 is drawn


def test_inverse_alpha_bar_weighting_requires_preconditioning():
    from fad_edge.models.presets import preset

    with pytest.raises(ValueError, match="preconditioned"):
        preset("tiny", loss_weighting="inverse_alpha_bar", precondition=False)
