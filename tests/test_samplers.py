"""The named samplers ("mean", "diverse"): the registry, the config fields behind them, the temperature,
and that "mean" is, bit for bit, the sampling every runner did before samplers had names."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fad_edge.errors import FadEdgeError
from fad_edge.models.config import ModelConfig
from fad_edge.models.presets import PRESETS, preset
from fad_edge.sampling import DEFAULT_SAMPLER, SAMPLERS, DiffusionSampler, SamplerSettings, check_sampler


def test_the_registry_names_mean_first_and_refuses_others_in_one_line():
    assert SAMPLERS == ("mean", "diverse") and DEFAULT_SAMPLER == "mean"
    assert check_sampler("diverse") == "diverse"
    with pytest.raises(FadEdgeError, match="unknown sampler 'noisy'; choose one of mean, diverse") as caught:
        SamplerSettings.named("noisy", preset("tiny"))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_mean_is_the_models_own_setting_and_diverse_reads_its_fields(name):
    config = preset(name)
    assert SamplerSettings.named("mean", config) == SamplerSettings.from_config(config)
    assert SamplerSettings.named("mean", config, steps=5) == SamplerSettings.from_config(config, steps=5)
    calibrated = dataclasses.replace(config, diverse_start_step=40, diverse_start_noise=0.5, diverse_steps=3,
                                     diverse_temperature=0.8, diverse_rotation_noise=0.6)
    diverse = SamplerSettings.named("diverse", calibrated)
    assert diverse == SamplerSettings(steps=3, start_step=40, clip_sample=config.clip_sample, start_noise=0.5,
                                      temperature=0.8, rotation_noise=0.6)
    assert SamplerSettings.named("mean", calibrated).rotation_noise == 1.0
    assert SamplerSettings.named("diverse", calibrated, steps=7).steps == 7  # steps= still overrides
    assert SamplerSettings.named("diverse", config).start_noise == 1.0


def test_the_small_preset_draws_its_diverse_sample_as_calibrated():
    small = preset("small")
    mean, diverse = SamplerSettings.named("mean", small), SamplerSettings.named("diverse", small)
    assert (mean.start_step, mean.start_noise) == (99, 0.0)
    assert (diverse.start_step, diverse.start_noise, diverse.steps) == (99, 1.0, 3)
    assert (diverse.temperature, diverse.rotation_noise) == (1.4, 0.55)
    prosody = SamplerSettings.named("diverse", preset("small-prosody"))
    assert (prosody.steps, prosody.temperature, prosody.rotation_noise) == (3, 1.3, 0.58)


def test_the_small_presets_train_on_the_same_steps_wherever_their_one_step_starts():
    # `small` samples from t = 99 and `small-prosody` from t = 90; both focus half of each batch on
    # steps 80-99, so moving the sampling start did not change what the small preset trains.
    small, prosody = preset("small"), preset("small-prosody")
    assert (small.sample_start_step, prosody.sample_start_step) == (99, 90)
    assert small.step_focus_range == prosody.step_focus_range == (80, 99)
    assert dataclasses.replace(small, sample_start_step=50).step_focus_range == (31, 69)
    assert dataclasses.replace(small, sample_start_step=5, step_focus_width=10).step_focus_range == (0, 15)


def test_configs_saved_before_the_diverse_fields_load_with_their_defaults():
    saved = preset("small").to_dict()
    for name in ("diverse_start_step", "diverse_start_noise", "diverse_steps", "diverse_temperature",
                 "diverse_rotation_noise"):
        del saved[name]
    config = ModelConfig.from_dict(saved)
    assert (config.diverse_start_step, config.diverse_steps, config.diverse_start_noise) == (70, 1, 1.0)
    assert config.diverse_rotation_noise == 1.0


@pytest.mark.parametrize("field, value", [("diverse_start_step", 100), ("diverse_start_step", -1),
                                          ("diverse_start_step", 7.5), ("diverse_steps", 0), ("diverse_steps", 101),
                                          ("diverse_start_noise", 1.5), ("diverse_start_noise", math.nan),
                                          ("diverse_temperature", -0.1), ("diverse_temperature", math.inf),
                                          ("diverse_temperature", True), ("diverse_rotation_noise", 2.5),
                                          ("diverse_rotation_noise", -0.5)])
def test_diverse_fields_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        preset("tiny", **{field: value})


def _legacy_step(sampler: DiffusionSampler, epsilon, t, x, t_prev, noise):
    """The DDPM step as it was before the temperature: the reference for bit-identity."""
    x0 = sampler.predict_x0(epsilon, t, x)
    alpha_bar, alpha_bar_prev = sampler.alpha_bar(t), sampler.alpha_bar(t_prev)
    alpha = alpha_bar / alpha_bar_prev
    beta = 1 - alpha
    x0_weight = math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)
    x_weight = math.sqrt(alpha) * (1 - alpha_bar_prev) / (1 - alpha_bar)
    deviation = math.sqrt(max((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, 1e-20))
    return x0_weight * x0 + x_weight * x + deviation * noise


def test_temperature_one_is_the_ddpm_step_bit_for_bit_and_scales_only_the_noise():
    rng = np.random.default_rng(0)
    x, epsilon, noise = (rng.standard_normal((3, 8, 56), dtype=np.float32) for _ in range(3))
    ddpm = DiffusionSampler(SamplerSettings(steps=4, start_step=70))
    np.testing.assert_array_equal(ddpm.step(epsilon, 70, x, 47, noise), _legacy_step(ddpm, epsilon, 70, x, 47, noise))
    steps = {temperature: DiffusionSampler(SamplerSettings(steps=4, start_step=70, temperature=temperature))
             for temperature in (0.0, 0.5, 1.0)}
    quiet, half, full = (steps[k].step(epsilon, 70, x, 47, noise) for k in (0.0, 0.5, 1.0))
    np.testing.assert_allclose(half - quiet, 0.5 * (full - quiet), rtol=1e-5, atol=1e-6)
    assert np.abs(full - quiet).max() > 1e-2  # the noise term is really there
    # the last step returns x0 whatever the temperature
    np.testing.assert_array_equal(steps[0.5].step(epsilon, 18, x, None), ddpm.step(epsilon, 18, x, None))
    with pytest.raises(ValueError, match="temperature"):
        DiffusionSampler(SamplerSettings(temperature=-1.0))


def test_the_rotation_noise_scales_the_jaw_and_head_dims_posterior_noise_alone():
    plain, quiet = (DiffusionSampler(SamplerSettings(steps=3, start_step=99, rotation_noise=scale))
                    for scale in (1.0, 0.5))
    noise = plain.noise((2, 8, 56), np.random.default_rng(4), 50)
    scaled = quiet.noise((2, 8, 56), np.random.default_rng(4), 50)
    assert noise is not None and scaled is not None
    np.testing.assert_array_equal(scaled[..., :50], noise[..., :50])
    np.testing.assert_array_equal(scaled[..., 50:], np.float32(0.5) * noise[..., 50:])
    assert quiet.noise((2, 8, 56), np.random.default_rng(4), None) is None  # the last step adds none
    assert quiet.settings.describe().endswith("temperature 1, rotation noise 0.5")
    with pytest.raises(ValueError, match="rotation_noise"):
        DiffusionSampler(SamplerSettings(rotation_noise=math.nan))


def test_describe_is_one_short_line():
    assert SamplerSettings(steps=4, start_step=90, start_noise=1.0, temperature=0.5).describe() == \
        "4 steps from t = 90, start noise 1, temperature 0.5"
    assert SamplerSettings(steps=1, start_step=70, start_noise=0.0).describe().startswith("1 step from t = 70")


@pytest.mark.parametrize("steps, start_step, calls", [(100, 70, 71), (5, 2, 3), (5, 99, 5)])
def test_describe_counts_the_network_calls_the_sampler_makes(steps, start_step, calls):
    """More steps than timesteps down to 0 make no more calls: the line says what runs."""
    settings = SamplerSettings(steps=steps, start_step=start_step)
    assert len(DiffusionSampler(settings).pairs()) == calls
    assert settings.describe().startswith(f"{calls} steps from t = {start_step}")


def test_replacing_a_runners_settings_moves_its_sampler_too():
    """Evaluation gives a mean-start runner start noise for its REACT draws; the start state must follow."""
    from fad_edge.runtime.base import ClipRunner

    class Bare(ClipRunner):
        def encode_video_batch(self, images):  # pragma: no cover - not called
            raise AssertionError

        def encode_audio_batch(self, mel):  # pragma: no cover - not called
            raise AssertionError

        def clips_motion(self, conditions, state, generator):  # pragma: no cover - not called
            raise AssertionError

        @classmethod
        def open(cls, path, *, precision, steps, seed, threads, sampler="mean"):  # pragma: no cover
            raise AssertionError

    config = preset("small")
    runner = Bare(config, SamplerSettings.named("mean", config))
    assert not runner.initial_state(2, np.random.default_rng(0)).any()  # the mean start
    runner.settings = dataclasses.replace(runner.settings, start_noise=1.0)
    assert runner.sampler.settings.start_noise == 1.0
    assert np.abs(runner.initial_state(2, np.random.default_rng(0))).min() > 0
    assert runner.folded_one_step  # one step from the model's start step: the export's folded graph serves it
    runner.settings = SamplerSettings.named("diverse", dataclasses.replace(config, diverse_start_step=60,
                                                                                diverse_steps=1))
    assert not runner.folded_one_step and runner.sampler.timesteps == [60]
    with pytest.raises(ValueError, match="start step"):
        runner.settings = SamplerSettings(start_step=100)
