"""Encoders, spatial softmax, ELNet and the assembled ListenerModel."""

import dataclasses

import pytest
import torch

from fad_edge.constants import ROTATION
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig
from fad_edge.models.elnet import ELNet
from fad_edge.models.encoders import AudioEncoder, VideoEncoder
from fad_edge.models.presets import SIZE_FIELDS, preset
from fad_edge.models.spatial_softmax import SpatialSoftmax


def test_spatial_softmax_finds_the_peak():
    pool = SpatialSoftmax(1, 5, 5, keypoints=1)
    with torch.no_grad():
        pool.keypoint_conv.weight.fill_(50.0)
        pool.keypoint_conv.bias.zero_()
    features = torch.zeros(2, 1, 5, 5)
    features[0, 0, 0, 4] = 1.0  # top right: x = +1, y = -1
    features[1, 0, 2, 2] = 1.0  # centre
    out = pool(features)
    torch.testing.assert_close(out[0], torch.tensor([1.0, -1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], torch.tensor([0.0, 0.0]), atol=1e-3, rtol=0)


def test_paper_quick_is_the_papers_sizes_with_the_small_presets_recipe():
    """Every field that sets a size comes from `paper`, every other one (the recipe) from `small`, but the
    diverse sampler's noise, calibrated on a paper-quick model of its own, and the video pretraining, which
    it was measured without."""
    quick, paper, small = preset("paper-quick"), preset("paper"), preset("small")
    assert (quick.diverse_temperature, quick.diverse_rotation_noise) == (1.3, 0.65)
    assert quick.video_pretrain_steps == 0 < small.video_pretrain_steps
    for field in dataclasses.fields(ModelConfig):
        if field.name in ("preset", "diverse_temperature", "diverse_rotation_noise", "video_pretrain_steps"):
            continue
        source = paper if field.name in SIZE_FIELDS else small
        assert getattr(quick, field.name) == getattr(source, field.name), field.name
    assert quick.image_size == 96 and quick.video_widths == (64, 128, 256, 512)  # the paper's ResNet-18
    assert quick.speaker_aux_weight == 1.0 and quick.encoder_norm == "batch" and paper.encoder_norm == "group"


@pytest.mark.parametrize("name", ["tiny", "small", "small-prosody", "paper", "paper-quick"])
def test_encoders_give_one_feature_vector_per_frame(name):
    config = preset(name)
    video = VideoEncoder(config)(torch.rand(3, 3, config.image_size, config.image_size))
    audio = AudioEncoder(config)(torch.randn(3, 1, config.audio_window, config.n_mels))
    assert video.shape == (3, config.video_features)
    assert audio.shape == (3, config.audio_output_dim)


def test_video_encoder_keeps_where_things_are():
    """Spatial softmax (unlike GAP) must tell a bright square on the left from one on the right."""
    config = preset("tiny")
    encoder = VideoEncoder(config).eval()
    left, right = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    left[..., 10:20, 2:10] = 1.0
    right[..., 10:20, 22:30] = 1.0
    with torch.no_grad():
        assert (encoder(left) - encoder(right)).abs().max() > 1e-3


def test_clip_conditions_windows_and_zero_context_before_the_start():
    model = ListenerModel(preset("tiny", context_clips=1))
    features = torch.arange(16, dtype=torch.float32).view(1, 16, 1).expand(1, 16, model.config.condition_dim)
    conditions = model.clip_conditions(features)
    assert conditions.shape == (2, 16, model.config.condition_dim)
    assert torch.all(conditions[0, :8] == 0)  # nothing precedes the first clip
    assert torch.equal(conditions[0, 8:, 0], torch.arange(8.0))
    assert torch.equal(conditions[1, :, 0], torch.arange(16.0))


@pytest.mark.parametrize("modalities,zero", [("audio", slice(0, 16)), ("video", slice(16, 32))])
def test_modality_ablation_zeroes_the_other_branch(modalities, zero):
    model = ListenerModel(preset("tiny", modalities=modalities)).eval()
    features = model.encode(torch.rand(4, 3, 32, 32), torch.randn(4, 1, 8, 80))
    assert torch.all(features[:, zero] == 0)
    assert features.abs().sum() > 0


def test_generate_denormalizes():
    model = ListenerModel(preset("tiny")).eval()
    model.set_normalization(torch.full((56,), 5.0), torch.full((56,), 1e-4))
    motion = model.generate(torch.rand(16, 3, 32, 32), torch.randn(16, 1, 8, 80))
    assert motion.shape == (16, 56)
    torch.testing.assert_close(motion, torch.full((16, 56), 5.0), atol=1e-2, rtol=0)


def test_config_round_trip_and_rejects_unknown_fields():
    config = preset("small", context_clips=2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    from fad_edge.errors import CheckpointError

    with pytest.raises(CheckpointError):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_window_conditions_share_frames_between_clips_and_match_clip_conditions():
    model = ListenerModel(preset("tiny", context_clips=1))
    dim = model.config.condition_dim
    sequence = torch.randn(1, 24, dim)
    # A training window holding one context clip and two clips equals the stream's view of clips 1 and 2.
    from_window = model.window_conditions(sequence)
    from_stream = model.clip_conditions(sequence)[1:]
    assert from_window.shape == (2, 16, dim)
    torch.testing.assert_close(from_window, from_stream)
    motion = torch.arange(2 * 16 * 56, dtype=torch.float32).view(2, 16, 56)
    assert torch.equal(model.clip_motion(motion)[1], motion[0, 8:])
    with pytest.raises(ValueError):
        model.window_conditions(torch.randn(1, 8, dim))  # context only, no clip


@pytest.mark.parametrize("context", [1, 2])
def test_window_conditions_are_the_same_with_and_without_a_gradient(context):
    """Inference unfolds the windows at once, training slices them clip by clip: the same windows."""
    model = ListenerModel(preset("tiny", context_clips=context))
    features = torch.randn(3, (context + 3) * 8, model.config.condition_dim)
    sliced = model.window_conditions(features.clone().requires_grad_())
    assert sliced.requires_grad
    assert torch.equal(model.window_conditions(features), sliced.detach())


def test_speaker_auxiliary_loss_trains_the_encoders_only_where_the_speaker_is_known():
    model = ListenerModel(preset("tiny", speaker_aux_weight=1.0))
    images, mel = torch.rand(2, 16, 3, 32, 32), torch.randn(2, 16, 1, 8, 80)
    valid, motion = torch.ones(2, 16), torch.randn(2, 16, 56)
    speaker = torch.randn(2, 16, 56)
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    without = model(images, mel, valid, motion, generator())
    unknown = model(images, mel, valid, motion, generator(), 1, speaker, torch.zeros(2, 16))
    known = model(images, mel, valid, motion, generator(), 1, speaker, torch.ones(2, 16))
    torch.testing.assert_close(without, unknown)
    assert known > without
    known.backward()
    assert model.speaker_heads[0].weight.grad.abs().sum() > 0
    assert model.video_encoder.project.weight.grad.abs().sum() > 0


def test_group_variance_weights_make_the_loss_each_groups_error_in_its_own_units():
    from fad_edge.constants import EXPRESSION

    model = ListenerModel(preset("tiny", loss_dim_weighting="group_variance"))
    std = torch.linspace(0.1, 2.0, 56)
    model.set_normalization(torch.zeros(56), std)
    weights = model.dim_weights()
    for group in (EXPRESSION, ROTATION):
        assert weights[group].mean() == pytest.approx(1.0)
        # proportional to variance within the group
        ratio = weights[group] / std[group] ** 2
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))
    # The loss weights each dim's squared error: with a denoiser that predicts no noise, the
    # loss is the weighted mean of the drawn noise squared.
    diffusion = model.diffusion
    x0 = torch.zeros(3, model.config.clip_len, 56)
    zero = lambda x, steps, condition: torch.zeros_like(x)  # noqa: E731
    loss = diffusion.training_loss(zero, x0, None, torch.Generator().manual_seed(1), dim_weights=weights)
    generator = torch.Generator().manual_seed(1)
    torch.randint(0, diffusion.train_steps, (3,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    assert float(loss) == pytest.approx(float((noise**2 * weights).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="loss_dim_weighting"):
        preset("tiny", loss_dim_weighting="per_frame")


def test_expression_variance_weights_leave_every_rotation_dim_at_one():
    from fad_edge.constants import EXPRESSION

    model = ListenerModel(preset("tiny", loss_dim_weighting="expression_variance"))
    std = torch.linspace(0.1, 2.0, 56)
    model.set_normalization(torch.zeros(56), std)
    weights = model.dim_weights()
    assert torch.equal(weights[ROTATION], torch.ones(6))
    assert weights[EXPRESSION].mean() == pytest.approx(1.0)
    assert weights[EXPRESSION][-1] / weights[EXPRESSION][0] == pytest.approx(float((std[49] / std[0]) ** 2))
    heavier = ListenerModel(preset("tiny", loss_dim_weighting="expression_variance", rotation_loss_weight=8.0))
    heavier.set_normalization(torch.zeros(56), std)
    assert torch.equal(heavier.dim_weights()[ROTATION], torch.full((6,), 8.0))
    assert torch.equal(heavier.dim_weights()[EXPRESSION], weights[EXPRESSION])
    with pytest.raises(ValueError, match="rotation_loss_weight"):
        preset("tiny", rotation_loss_weight=-1.0)


def test_frame_local_audio_hears_exactly_the_frames_ending_with_each_frame():
    config = preset("tiny", context_clips=1, audio_window_frames=1, audio_context_frames=8)
    elnet = ELNet(config).eval()
    condition = torch.randn(1, config.condition_dim, config.condition_frames)
    base = elnet.hear(condition)
    split, frame = config.video_features, 12
    for source, heard in [(frame, True), (frame - 7, True), (frame - 8, False), (frame + 1, False)]:
        changed = condition.clone()
        changed[0, split:, source] += 1.0
        moved = (elnet.hear(changed) - base)[0, split:, frame].abs().max().item()
        assert (moved > 1e-6) == heard, (source, moved)
    assert torch.equal(elnet.hear(condition)[:, :split], condition[:, :split])  # video passes untouched
    assert config.audio_encoder == "frame" and config.audio_span_frames == 8


def test_frame_local_audio_needs_context_to_cover_its_span():
    with pytest.raises(ValueError, match="context_clips >= 1"):
        preset("tiny", audio_window_frames=1, audio_context_frames=8)
    assert preset("tiny").audio_encoder == "window" and ELNet(preset("tiny")).audio_temporal is None


def test_the_loss_reads_each_clips_condition_once_for_all_its_noise_draws():
    """Sharing the condition path between noise draws is an optimization: the loss is the repeated one's."""
    torch.manual_seed(0)
    model = ListenerModel(preset("tiny", context_clips=1, prosody_channels=8, prosody_dilations=(1, 2))).eval()
    condition = torch.randn(3, model.config.condition_frames, model.config.condition_dim)
    motion = torch.randn(3, model.config.clip_len, 56)
    shared = model.loss(condition, motion, torch.Generator().manual_seed(5), noise_draws=4)
    repeated = model.diffusion.training_loss(model.elnet, motion.repeat(4, 1, 1), condition.repeat(4, 1, 1),
                                             torch.Generator().manual_seed(5))
    torch.testing.assert_close(shared, repeated, rtol=1e-5, atol=0)
    calls = []
    model.elnet.cond_projection.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    model.loss(condition, motion, noise_draws=4)
    assert calls == [3]  # once per clip, not per draw


def test_video_diffusion_gradient_scales_only_the_video_encoders_share_of_the_diffusion_gradient():
    images, mel = torch.rand(2, 16, 3, 32, 32), torch.randn(2, 16, 1, 8, 80)
    valid, motion = torch.ones(2, 16), torch.randn(2, 16, 56)
    losses, video, audio = {}, {}, {}
    for share in (1.0, 0.25, 0.0):
        torch.manual_seed(0)
        model = ListenerModel(preset("tiny", video_diffusion_gradient=share))
        loss = model(images, mel, valid, motion, torch.Generator().manual_seed(0))
        loss.backward()
        losses[share] = loss.detach()
        video[share] = model.video_encoder.project.weight.grad.clone()
        audio[share] = model.audio_encoder.project.weight.grad.clone()
    torch.testing.assert_close(losses[0.0], losses[1.0])  # the forward pass is the same
    torch.testing.assert_close(video[0.25], 0.25 * video[1.0])
    assert video[0.0].abs().sum() == 0 and video[1.0].abs().sum() > 0
    torch.testing.assert_close(audio[0.0], audio[1.0])
    with pytest.raises(ValueError, match="video_diffusion_gradient"):
        preset("tiny", video_diffusion_gradient=1.5)
