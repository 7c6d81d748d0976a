"""ELNet: shapes, its condition path (convolutions, prosody branch, shortcut, rotation head), precision."""

import pytest
import torch

from fad_edge.constants import ROTATION
from fad_edge.models.config import ModelConfig
from fad_edge.models.elnet import ELNet
from fad_edge.models.encoders import AudioEncoder
from fad_edge.models.presets import preset


@pytest.mark.parametrize("context", [0, 2])
def test_elnet_shapes_and_that_every_input_matters(context):
    config = preset("tiny", context_clips=context)
    net = ELNet(config).eval()
    x, steps = torch.randn(2, 8, 56), torch.tensor([3, 70])
    cond = torch.randn(2, config.condition_frames, config.condition_dim)
    out = net(x, steps, cond)
    assert out.shape == (2, 8, 56)
    assert (net(x, torch.tensor([50, 10]), cond) - out).abs().max() > 1e-4
    assert (net(x, steps, cond + 1.0) - out).abs().max() > 1e-4
    if context:
        changed = cond.clone()
        changed[:, :8] += 1.0  # only the context frames
        assert (net(x, steps, changed) - out).abs().max() > 1e-4


def test_elnet_uses_groupnorm_not_batchnorm():
    net = ELNet(preset("tiny"))
    kinds = {type(m).__name__ for m in net.modules()}
    assert "GroupNorm" in kinds and "BatchNorm1d" not in kinds


def test_elnet_output_stays_float32_under_bf16_autocast_where_preconditioning_needs_it():
    """At t = 99, sqrt(a) = 5e-4: the model's own output F is recoverable from epsilon only if the
    preconditioning sum is formed in float32 (bf16 keeps ~3 significant digits)."""
    torch.manual_seed(0)
    config = preset("tiny")
    elnet = ELNet(config).eval()
    x = torch.randn(4, config.clip_len, config.n_coeffs)
    condition = torch.randn(4, config.condition_frames, config.condition_dim)
    steps = torch.full((4,), 99)
    with torch.no_grad():
        exact = elnet(x, steps, condition)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = elnet(x, steps, condition)
    assert mixed.dtype == torch.float32
    signal, noise = elnet.signal_scale[99], elnet.noise_scale[99]
    recovered = [(out - noise * x) / signal for out in (exact, mixed)]
    error = (recovered[0] - recovered[1]).abs().max() / recovered[0].abs().max()
    assert error < 0.05


@pytest.mark.parametrize("causal", [False, True])
def test_condition_convolutions_reach_as_far_as_the_config_says(causal):
    config = preset("tiny", context_clips=8, condition_dilations=(1, 2, 4, 8), causal_condition=causal)
    before, after = config.condition_reach
    assert (before, after) == ((60, 0) if causal else (30, 30))
    cond_temporal = ELNet(config).cond_temporal.eval()
    for block in cond_temporal:  # GroupNorm shares statistics over the whole window, not frame content
        block.norm = torch.nn.Identity()
    frames = config.condition_frames
    cond = torch.randn(1, config.cond_dim, frames)
    base = cond_temporal(cond)
    frame = frames - 1 if causal else frames // 2  # far enough from both ends to test the reach
    for source, seen in [(frame - before, True), (frame - before - 1, False), (frame + after, True),
                         (frame + after + 1, False)]:
        if not 0 <= source < frames:
            continue
        changed = cond.clone()
        changed[0, :, source] += 1.0
        moved = (cond_temporal(changed) - base)[0, :, frame].abs().max().item()
        assert (moved > 1e-6) == seen, (source, moved)


def test_condition_settings_are_checked():
    with pytest.raises(ValueError, match="condition_dilations"):
        preset("tiny", condition_dilations=(1, 0))
    with pytest.raises(ValueError, match="causal_condition"):
        preset("tiny", causal_condition="yes")


def _prosody_config(**overrides) -> ModelConfig:
    return preset("tiny", context_clips=4, prosody_channels=8, prosody_dilations=(1, 2, 4), **overrides)


def test_the_audio_encoder_passes_each_frames_own_spectrum_on_for_the_prosody_branch():
    config = _prosody_config()
    assert config.audio_output_dim == config.audio_features + config.n_mels
    assert config.condition_dim == config.video_features + config.audio_output_dim
    mel = torch.randn(3, 1, config.audio_window, config.n_mels)
    out = AudioEncoder(config).eval()(mel)
    torch.testing.assert_close(out[:, config.audio_features:], mel[:, 0, -4:].mean(dim=1))  # 4 mel frames a frame
    assert AudioEncoder(preset("tiny"))(mel).shape[1] == preset("tiny").audio_features  # off: features only


def test_prosody_branch_hears_its_reach_back_and_nothing_ahead():
    config = _prosody_config()
    assert config.prosody_reach == 14
    elnet = ELNet(config).eval()
    assert elnet.prosody is not None
    elnet.prosody.norms = torch.nn.ModuleList(torch.nn.Identity() for _ in elnet.prosody.norms)  # window-wide stats
    condition = torch.randn(1, config.condition_dim, config.condition_frames)
    base = elnet.hear(condition)
    # The spectra start where the audio features end, in the condition and in what ELNet hears alike.
    start, frame = config.video_features + config.audio_features, 30
    for source, heard in [(frame, True), (frame - 14, True), (frame - 15, False), (frame + 1, False)]:
        changed = condition.clone()
        changed[0, start:, source] += 1.0
        moved = (elnet.hear(changed) - base)[0, start:, frame].abs().max().item()
        assert (moved > 1e-6) == heard, (source, moved)
    assert elnet.hear(condition).shape[1] == start + 2 * config.prosody_channels


def test_prosody_branch_tells_a_rising_from_a_falling_harmonic_after_training():
    """A few steps of fitting must separate the two slopes, at any base pitch: what the cue needs."""
    torch.manual_seed(0)
    config = _prosody_config()
    branch = ELNet(config).prosody
    assert branch is not None
    readout = torch.nn.Linear(2 * config.prosody_channels, 1)
    optimizer = torch.optim.Adam([*branch.parameters(), *readout.parameters()], lr=3e-3)

    def contours(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        rising = torch.rand(count) < 0.5
        start = torch.randint(20, 50, (count,))
        frames = torch.arange(16)
        slope = torch.where(rising, 1, -1)
        bins = (start[:, None] + slope[:, None] * frames[None] // 2).clamp(0, config.n_mels - 1)  # (count, 16)
        spectra = torch.zeros(count, config.n_mels, 16)
        spectra.scatter_(1, bins[:, None, :], 1.0)
        return spectra, rising.float()

    for _ in range(150):
        spectra, rising = contours(32)
        logits = readout(branch(spectra)[..., -1]).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, rising)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    spectra, rising = contours(200)
    with torch.no_grad():
        accuracy = ((readout(branch(spectra)[..., -1]).squeeze(1) > 0).float() == rising).float().mean().item()
    assert accuracy > 0.95


def test_prosody_channels_are_checked():
    with pytest.raises(ValueError, match="prosody_channels"):
        preset("tiny", prosody_channels=12)  # not a multiple of groups (8)
    with pytest.raises(ValueError, match="prosody_dilations"):
        preset("tiny", prosody_channels=8, prosody_dilations=())
    assert preset("tiny").prosody_reach == 0 and ELNet(preset("tiny")).prosody is None


def test_condition_shortcut_reads_the_condition_past_the_unet():
    """With the U-Net's output layer zeroed, only the shortcut can carry the condition to the output."""
    x, steps = torch.randn(2, 8, 56), torch.tensor([90, 90])
    changes = {}
    for shortcut in (False, True):
        torch.manual_seed(0)
        net = ELNet(preset("tiny", condition_shortcut=shortcut)).eval()
        cond = torch.randn(2, net.config.condition_frames, net.config.condition_dim)
        with torch.no_grad():
            net.final[-1].weight.zero_()
            net.final[-1].bias.zero_()
            changes[shortcut] = (net(x, steps, cond + 1.0) - net(x, steps, cond)).abs().max()
    assert changes[False] == 0
    assert changes[True] > 1e-4


def test_rotation_head_adds_to_the_rotation_dims_only_and_hears_the_context():
    """With the U-Net's output zeroed and the condition shortcut off, only the head carries the
    condition, to the 6 jaw and head dims, and it hears the oldest context clip."""
    x, steps = torch.randn(2, 8, 56), torch.tensor([90, 90])
    torch.manual_seed(0)
    net = ELNet(preset("tiny", rotation_head_channels=16, context_clips=2)).eval()
    cond = torch.randn(2, net.config.condition_frames, net.config.condition_dim)
    with torch.no_grad():
        net.final[-1].weight.zero_()
        net.final[-1].bias.zero_()
        change = (net(x, steps, cond + 1.0) - net(x, steps, cond)).abs()  # (2, 8, 56)
        earlier = cond.clone()
        earlier[:, :8] += 5.0  # the oldest context clip, 9-16 frames before the clip
        heard = (net(x, steps, earlier) - net(x, steps, cond)).abs()
    assert change[..., :ROTATION.start].max() == 0
    assert change[..., ROTATION].min() > 0
    assert heard[..., ROTATION].min() > 0


def test_rotation_head_channels_must_split_into_groups():
    with pytest.raises(ValueError, match="rotation_head_channels"):
        preset("tiny", rotation_head_channels=12)  # groups = 8


@pytest.mark.parametrize("precondition", [True, False])
def test_the_one_step_x0_is_the_noise_estimates_and_keeps_float32_precision_at_the_last_step(precondition):
    """`denoise_x0` is (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) of `denoise`'s eps; preconditioned, it keeps
    the precision that formula loses in float32 from a noisy x_t at t = 99 (1 / sqrt(a_99) = 2000)."""
    config = preset("tiny", precondition=precondition)
    torch.manual_seed(0)
    net = ELNet(config).eval()
    x, steps = torch.randn(4, 8, 56), torch.tensor([99, 99, 70, 10])
    cond = net.read_condition(torch.randn(4, config.condition_frames, config.condition_dim))

    def through_epsilon(model: ELNet, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        signal, noise = model.signal_scale[steps][:, None, None], model.noise_scale[steps][:, None, None]
        return (x - noise * model.denoise(x, steps, cond)) / signal

    with torch.no_grad():
        exact = through_epsilon(net.double(), x.double(), cond.double())  # float64: nothing lost
        net.float()
        direct, rounded = net.denoise_x0(x, steps, cond), through_epsilon(net, x, cond)
    direct_error = (direct.double() - exact).abs().max().item()
    assert direct_error < 1e-4 * exact.abs().max().item()
    if precondition:
        assert direct_error < 0.05 * (rounded.double() - exact).abs().max().item()
