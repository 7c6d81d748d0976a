"""The video encoder's pretraining: it draws each frame with its own coefficients, learns to read a face,
depends on its seed alone, and a run skips it where nothing could be learned."""

import numpy as np
import pytest
import torch
from helpers import TrainingStopped, assert_seed_decides, capture_train_configs, run_cli, tiny_dataset, tiny_run_config
from torch import nn

from fad_edge.checkpoint import load_checkpoint
from fad_edge.listener_model import ListenerModel
from fad_edge.models.encoders import VideoEncoder
from fad_edge.models.presets import preset
from fad_edge.train import TrainConfig, train
from fad_edge.train_precision import MixedPrecision
from fad_edge.video_pretraining import FramePool, pretrain_video

CPU = MixedPrecision(torch.device("cpu"), None)


def _numbered_sessions(lengths: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sessions whose frame k of session s has every pixel s * 100 + k, and coefficient 0 the same number."""
    frames, speaker = [], []
    for s, length in enumerate(lengths):
        ids = s * 100 + np.arange(length)
        frames.append(np.broadcast_to(ids[:, None, None, None], (length, 4, 4, 3)).astype(np.uint8))
        coefficients = np.zeros((length, 56), np.float32)
        coefficients[:, 0] = ids
        speaker.append(coefficients)
    return frames, speaker


def test_the_pool_holds_only_sessions_with_known_speakers_and_draws_each_frame_with_its_own_coefficients():
    frames, speaker = _numbered_sessions([5, 3, 7])
    pool = FramePool(frames, [speaker[0], None, speaker[2]])
    assert len(pool) == 12
    images, targets = pool.draw(np.random.default_rng(0), 400)
    assert images.shape == (400, 3, 4, 4) and targets.shape == (400, 56)
    pixel = torch.round(images[:, 0, 0, 0] * 255)
    assert torch.equal(pixel, targets[:, 0])  # each image came with its own frame's coefficients
    drawn = set(pixel.int().tolist())
    assert drawn == {*range(5), *range(200, 207)}  # every frame of the known sessions, none of the unknown one


def test_the_pool_of_sessions_without_known_speakers_is_empty_and_pretraining_refuses_it():
    frames, _ = _numbered_sessions([4])
    pool = FramePool(frames, [None])
    assert len(pool) == 0
    config = preset("tiny", speaker_aux_weight=1.0)
    with pytest.raises(ValueError, match="known speakers"):
        pretrain_video(VideoEncoder(config), nn.Linear(config.video_features, 56), pool, 1, 8, 0, CPU)


def _bright_faces(sessions: int = 4, frames: int = 40, size: int = 32):
    """Frames whose lower-half brightness is coefficient 0 (a stand-in for a smile); the rest is noise."""
    rng = np.random.default_rng(1)
    images, speaker = [], []
    for _ in range(sessions):
        level = rng.uniform(0, 1, frames).astype(np.float32)
        picture = rng.uniform(0, 60, (frames, size, size, 3))
        picture[:, size // 2:] += 190 * level[:, None, None, None]
        images.append(picture.astype(np.uint8))
        coefficients = 0.1 * rng.standard_normal((frames, 56)).astype(np.float32)
        coefficients[:, 0] = (level - 0.5) * 3
        speaker.append(coefficients)
    return FramePool(images, speaker)


def test_pretraining_learns_to_read_the_frame():
    config = preset("tiny", speaker_aux_weight=1.0)
    torch.manual_seed(0)
    encoder, head = VideoEncoder(config), nn.Linear(config.video_features, 56)
    done: list[int] = []
    report = pretrain_video(encoder, head, _bright_faces(), steps=60, frames_per_step=32, seed=0, precision=CPU,
                            augment=None, after_step=done.append)
    assert done == list(range(1, 61))
    assert report.part == "video encoder" and report.steps == 60 and report.windows == 32
    # Coefficient 0 is 0.75 of the summed variance; an encoder that did not read the brightness could not
    # bring the loss below the mean's.
    assert report.last_loss < 0.5 * report.first_loss


def test_pretraining_depends_on_its_seed_alone_and_leaves_the_global_rng_alone():
    config = preset("tiny", speaker_aux_weight=1.0)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    models = []
    for _ in range(3):
        torch.manual_seed(0)
        models.append(nn.ModuleList([VideoEncoder(config), nn.Linear(config.video_features, 56)]))
    torch.manual_seed(123)
    for model, seed in zip(models, (5, 5, 6)):
        pretrain_video(model[0], model[1], _bright_faces(), steps=3, frames_per_step=8, seed=seed, precision=CPU)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert_seed_decides(*models)


def test_the_video_pretraining_frames_must_be_positive():
    with pytest.raises(ValueError, match="video_pretrain_frames"):
        preset("tiny", speaker_aux_weight=1.0, video_pretrain_steps=10, video_pretrain_frames=0)
    with pytest.raises(ValueError, match="video_pretrain_steps"):
        preset("tiny", video_pretrain_steps=-1)


@pytest.mark.slow
def test_a_run_pretrains_the_video_encoder_once_and_not_for_an_audio_only_model(tmp_path):
    data = tiny_dataset(tmp_path)
    overrides = {"speaker_aux_weight": 1.0, "video_pretrain_steps": 3, "video_pretrain_frames": 16}

    def config(out: str, **changes) -> TrainConfig:
        return tiny_run_config(data, tmp_path / out, overrides, **changes)

    first = train(config("run", max_steps=1))
    assert first.video_pretraining is not None and first.video_pretraining.steps == 3
    assert train(config("run", max_steps=2), resume=True).video_pretraining is None  # resumed: already pretrained
    assert train(config("audio", max_steps=1, modalities="audio")).video_pretraining is None
    # Without the speaker loss there is no head to regress the speaker with: nothing to pretrain.
    overrides["speaker_aux_weight"] = 0.0
    assert train(config("no-speaker-loss", max_steps=1)).video_pretraining is None


def test_train_cli_sets_the_video_pretraining_where_the_preset_has_the_speaker_loss(monkeypatch, capsys, tmp_path):
    seen = capture_train_configs(monkeypatch)
    with pytest.raises(TrainingStopped):
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "a",
                "--video-pretrain-steps", "0")
    assert seen[0].overrides == {"video_pretrain_steps": 0}
    with pytest.raises(TrainingStopped):
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "c",
                "--no-freeze-pretrained-video")
    assert seen[1].overrides == {"freeze_pretrained_video": False}
    code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "b",
                           "--preset", "paper", "--video-pretrain-steps", "10")
    assert code == 2 and "no speaker loss" in output, output
    assert len(seen) == 2


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def _same(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(first[name], second[name]) for name in first)


def test_a_frozen_video_encoder_keeps_its_weights_and_statistics_while_the_rest_learns():
    torch.manual_seed(0)
    model = ListenerModel(preset("tiny", speaker_aux_weight=1.0, encoder_norm="batch"))
    model.freeze_video()
    model.eval()
    model.train()  # a training loop's call: the frozen part stays on its running statistics
    assert model.training and model.audio_encoder.training
    assert not model.video_encoder.training and not model.speaker_heads[0].training
    video, head, audio = _state(model.video_encoder), _state(model.speaker_heads[0]), _state(model.audio_encoder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    images, mel = torch.rand(2, 16, 3, 32, 32), torch.randn(2, 16, 1, 8, 80)
    valid, motion, speaker = torch.ones(2, 16), torch.randn(2, 16, 56), torch.randn(2, 16, 56)
    for _ in range(2):
        loss = model(images, mel, valid, motion, torch.Generator().manual_seed(0), 1, speaker, torch.ones(2, 16))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert _same(video, _state(model.video_encoder)) and _same(head, _state(model.speaker_heads[0]))
    assert not _same(audio, _state(model.audio_encoder))
    assert all(p.grad is None for p in model.video_encoder.parameters())


def test_the_speaker_loss_of_a_frozen_model_leaves_out_the_video_head():
    model = ListenerModel(preset("tiny", speaker_aux_weight=1.0))
    features, speaker = torch.randn(3, 5, model.config.condition_dim), torch.randn(3, 5, 56)
    known = torch.ones(3, 5)
    both = model.speaker_loss(features, speaker, known)
    model.freeze_video()
    audio_only = model.speaker_loss(features, speaker, known)
    split = model.config.video_features
    video_only = ((model.speaker_heads[0](features[..., :split]) - speaker) ** 2).mean(-1).mean()
    torch.testing.assert_close(audio_only, both - video_only)


@pytest.mark.slow
def test_fad_steps_leave_a_frozen_pretrained_video_encoder_as_pretrained_resumed_too(tmp_path):
    data = tiny_dataset(tmp_path)
    overrides = {"speaker_aux_weight": 1.0, "video_pretrain_steps": 3, "video_pretrain_frames": 16,
                 "encoder_norm": "batch", "freeze_pretrained_video": True}

    def weights(out: str, max_steps: int, resume: bool = False) -> ListenerModel:
        result = train(tiny_run_config(data, tmp_path / out, overrides, max_steps=max_steps),
                       resume=resume)
        return load_checkpoint(result.checkpoint).model

    one, three = weights("run", 1), weights("other", 3)
    assert _same(_state(one.video_encoder), _state(three.video_encoder))
    assert not _same(_state(one.audio_encoder), _state(three.audio_encoder))
    resumed = weights("run", 3, resume=True)
    assert _same(_state(one.video_encoder), _state(resumed.video_encoder))
    overrides["freeze_pretrained_video"] = False  # the control: FAD's steps train the encoder by the speaker loss
    assert not _same(_state(one.video_encoder), _state(weights("unfrozen", 3).video_encoder))
