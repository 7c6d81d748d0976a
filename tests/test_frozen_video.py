"""A frozen video encoder's features computed once: the same features as encoding each step, in the windows the
dataset cuts, and a run that trains as one encoding each step does where nothing is augmented."""

import copy

import numpy as np
import pytest
import torch
from helpers import TrainingStopped, capture_train_configs, run_cli, tiny_dataset, tiny_run_config

from fad_edge.checkpoint import load_train_state
from fad_edge.data.augment import augment_batch
from fad_edge.data.dataset import ClipDataset, SessionFeatures, load_split
from fad_edge.data.normalization import Normalization
from fad_edge.frozen_video import encode_frozen_video
from fad_edge.listener_model import ListenerModel
from fad_edge.models.presets import preset
from fad_edge.train import SilentReporter, train
from fad_edge.train_precision import MixedPrecision
from fad_edge.train_state import training_weights

CPU = MixedPrecision(torch.device("cpu"), None)
FROZEN = {"speaker_aux_weight": 1.0, "video_pretrain_steps": 2, "video_pretrain_frames": 8,
          "encoder_norm": "batch", "freeze_pretrained_video": True}


def _frozen_model() -> ListenerModel:
    torch.manual_seed(0)
    model = ListenerModel(preset("tiny", speaker_aux_weight=1.0, encoder_norm="batch"))
    model.freeze_video()
    return model


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.mark.parametrize("device", DEVICES)
def test_the_features_are_the_encoders_frame_by_frame_over_any_batch_size(device):
    model = _frozen_model()
    frames = [np.random.default_rng(s).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for s, n in ((0, 7), (1, 2))]
    on_device = copy.deepcopy(model).to(device)
    # 7 frames: batches of 3, 3 and 1; the features come back to the CPU
    encoded = encode_frozen_video(on_device, frames, MixedPrecision(torch.device(device), None), batch=3)
    assert [f.shape for f in encoded] == [(7, model.config.video_features), (2, model.config.video_features)]
    assert all(f.dtype == np.float32 for f in encoded)
    tolerance = 1e-5 if device == "cpu" else 2e-3  # a GPU's convolutions may round through TF32
    with torch.no_grad():
        for session, features in zip(frames, encoded):
            images = torch.from_numpy(session).permute(0, 3, 1, 2).float() / 255
            for row, image in enumerate(images):  # one frame at a time, on the CPU
                np.testing.assert_allclose(features[row], model.encode_video(image[None])[0].numpy(),
                                           rtol=tolerance, atol=tolerance)


def test_only_a_frozen_encoder_is_encoded_once():
    model = ListenerModel(preset("tiny", speaker_aux_weight=1.0))
    with pytest.raises(ValueError, match="frozen"):
        encode_frozen_video(model, [np.zeros((2, 32, 32, 3), np.uint8)], CPU)
    model.train()
    with pytest.raises(ValueError, match="frozen video encoder only"):
        model(torch.zeros(1, 16, model.config.video_features), torch.zeros(1, 16, 1, 8, 80), torch.ones(1, 16),
              torch.zeros(1, 16, 56))


def _numbered_dataset() -> ClipDataset:
    sessions = [SessionFeatures(f"s{s}", np.zeros((n, 4, 4, 3), np.uint8), np.zeros((4 * n, 80), np.float32),
                                np.zeros((n, 56), np.float32), np.zeros((n, 56), np.float32))
                for s, n in enumerate((24, 40))]
    return ClipDataset(sessions, Normalization.identity(), audio_window_frames=2, context_clips=1, stride=8)


def test_a_dataset_with_features_gives_each_windows_frames_features_and_leaves_the_original_its_images():
    dataset = _numbered_dataset()
    # Session s's frame k has every feature s * 100 + k.
    features = [np.repeat((s * 100 + np.arange(n, dtype=np.float32))[:, None], 5, axis=1)
                for s, n in enumerate((24, 40))]
    with_features = dataset.with_video_features(features)
    for item in range(len(dataset)):
        session, start = dataset.index[item]
        window = with_features[item]
        assert "images" not in window and window["video_features"].shape == (16, 5)
        frame_ids = np.arange(start - 8, start + 8)
        expected = session * 100 + np.clip(frame_ids, 0, None)  # context before the start: frame 0, masked by valid
        np.testing.assert_array_equal(window["video_features"][:, 0].numpy(), expected)
        np.testing.assert_array_equal(window["valid"].numpy(), frame_ids >= 0)
    assert "images" in dataset[0] and "video_features" not in dataset[0]
    with pytest.raises(ValueError, match="video features of"):
        dataset.with_video_features(features[:1])


def test_a_batch_of_features_has_only_its_mel_augmented():
    batch = {"video_features": torch.ones(2, 16, 5), "mel": torch.full((2, 16, 1, 4, 80), 0.5)}
    augmented = augment_batch(batch, torch.Generator().manual_seed(0))
    assert augmented["video_features"] is batch["video_features"]
    assert not torch.equal(augmented["mel"], batch["mel"])


@pytest.mark.slow
def test_a_run_that_encodes_once_trains_as_one_that_encodes_each_step_and_resumes_exactly(tmp_path):
    data = tiny_dataset(tmp_path)

    encoded: dict[str, list[int]] = {}

    def weights(out: str, **changes) -> dict[str, torch.Tensor]:
        config = tiny_run_config(data, tmp_path / out, FROZEN, **{"max_steps": 3, "augment": False, **changes})
        reporter = SilentReporter()
        reporter.encoded_video = lambda frames, seconds: encoded.setdefault(out, []).append(frames)  # type: ignore
        result = train(config, reporter, resume=(tmp_path / out).exists())
        parts = result.parts_seconds()
        assert (parts["video_encoding"] > 0) == config.frozen_video_once and parts["video_pretraining"] >= 0
        assert sum(parts.values()) == pytest.approx(result.seconds) and parts["fad_steps"] > 0
        return training_weights(load_train_state(tmp_path / out / "checkpoint")[0])

    once, each_step = weights("once"), weights("each", frozen_video_once=False)
    training_frames = sum(session.n_frames for session in load_split(data, "train", 32, 80))
    assert encoded == {"once": [training_frames]}  # every training frame once; none where each step encodes
    assert once.keys() == each_step.keys()
    for name in once:  # the same features, batched otherwise: equal up to rounding
        torch.testing.assert_close(once[name], each_step[name], rtol=1e-4, atol=1e-5, msg=name)
    weights("resumed", max_steps=1)
    resumed = weights("resumed")  # resumes from step 1 and encodes with the saved encoder
    assert encoded["resumed"] == [training_frames, training_frames]
    for name in once:
        torch.testing.assert_close(once[name], resumed[name], rtol=1e-5, atol=1e-6, msg=name)
    config = tiny_run_config(data, tmp_path / "resumed", FROZEN, max_steps=3, augment=False)
    reporter = SilentReporter()
    reporter.encoded_video = lambda frames, seconds: encoded["resumed"].append(frames)  # type: ignore
    assert train(config, reporter, resume=True).steps_run == 0
    assert len(encoded["resumed"]) == 2  # a finished run resumed has no steps left to encode for


def test_the_train_command_chooses_once_or_each_step(monkeypatch, capsys, tmp_path):
    seen = capture_train_configs(monkeypatch)
    for out, flags in (("a", ()), ("b", ("--frozen-video-each-step",)), ("c", ("--frozen-video-once",))):
        with pytest.raises(TrainingStopped):
            run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / out, *flags)
    assert [config.frozen_video_once for config in seen] == [True, False, True]
