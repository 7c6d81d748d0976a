"""The prosody branch's pretraining: it reads what the encoder passes on, learns a cue, depends on its seed
alone, and a run that pretrains still resumes exactly."""

import numpy as np
import pytest
import torch
from helpers import TrainingStopped, assert_seed_decides, capture_train_configs, run_cli, tiny_dataset, tiny_run_config

from fad_edge.data.audio_features import SILENCE, frame_spectra, frame_windows
from fad_edge.models.elnet import ProsodyBranch
from fad_edge.models.encoders import AudioEncoder
from fad_edge.models.presets import preset
from fad_edge.prosody_pretraining import pretrain_prosody
from fad_edge.train import TrainConfig, train


def test_frame_spectra_are_what_the_audio_encoder_passes_on_to_the_branch():
    config = preset("tiny", prosody_channels=8)
    mel = np.random.default_rng(0).uniform(SILENCE, 1, size=(40 * 4, config.n_mels)).astype(np.float32)
    with torch.no_grad():
        passed = AudioEncoder(config).eval()(torch.from_numpy(frame_windows(mel, config.audio_window_frames)))
    torch.testing.assert_close(torch.from_numpy(frame_spectra(mel)), passed[:, config.audio_features:].T)


def test_session_pairs_hold_each_sessions_spectra_and_its_normalized_motion_frame_by_frame():
    from fad_edge.data.dataset import SessionFeatures
    from fad_edge.prosody_pretraining import session_pairs

    rng = np.random.default_rng(2)
    mel = rng.uniform(SILENCE, 1, size=(10 * 4 + 3, 6)).astype(np.float32)  # 3 mel frames of a frame cut short
    listener = rng.standard_normal((11, 56)).astype(np.float32)
    session = SessionFeatures("s", np.zeros((11, 8, 8, 3), np.uint8), mel, listener, None)
    motion = (listener - 1.0) / 2.0
    ((spectra, target),) = session_pairs([session], [motion])
    assert spectra.shape == (6, 10) and target.shape == (56, 10) and target.dtype == torch.float32
    torch.testing.assert_close(spectra[:, 3], torch.from_numpy(mel[12:16].mean(axis=0)))
    torch.testing.assert_close(target, torch.from_numpy(motion[:10].T.copy()))


def _cue_pairs(sessions: int = 6, frames: int = 300, n_mels: int = 16, dims: int = 7):
    """Spectra with loud bursts, and a motion whose dim 0 rises 4 frames after each burst (the rest is noise)."""
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(sessions):
        loud = (rng.random(frames) < 0.05).astype(np.float32)
        spectra = (SILENCE + 0.1 * rng.random((n_mels, frames)) + loud[None]).astype(np.float32)
        motion = 0.3 * rng.standard_normal((dims, frames)).astype(np.float32)
        motion[0] += 3 * np.convolve(np.roll(loud, 4), np.ones(3), mode="same")
        pairs.append((torch.from_numpy(spectra), torch.from_numpy(motion)))
    return pairs


def _branch(seed: int) -> ProsodyBranch:
    torch.manual_seed(seed)
    return ProsodyBranch(8, (1, 2, 4), 4)


def test_pretraining_learns_a_lagged_cue_from_the_spectra_alone():
    report = pretrain_prosody(_branch(0), _cue_pairs(), torch.ones(7), steps=60, windows=4, seed=0)
    assert report.window_frames == 256 and report.steps == 60
    # Dim 0 is 9 / (9 + 0.09) of the weighted variance to explain and 0.3^2 per dim of noise is not;
    # a branch that did not hear the bursts could not bring the loss below the mean's.
    assert report.last_loss < 0.5 * report.first_loss


def test_pretraining_depends_on_its_seed_alone_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    branches = [_branch(0) for _ in range(3)]
    torch.random.set_rng_state(before)
    for branch, seed in zip(branches, (5, 5, 6)):
        pretrain_prosody(branch, _cue_pairs(), torch.ones(7), steps=3, windows=2, seed=seed)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert_seed_decides(*branches)


def test_short_sessions_get_shorter_windows_only_where_no_session_is_long_enough():
    report = pretrain_prosody(_branch(0), _cue_pairs(frames=100), torch.ones(7), steps=2, windows=2, seed=0)
    assert report.window_frames == 100
    mixed = _cue_pairs(frames=100)[:2] + _cue_pairs(frames=300)
    report = pretrain_prosody(_branch(0), mixed, torch.ones(7), steps=2, windows=2, seed=0)
    assert report.window_frames == 256


def test_pretraining_steps_need_the_branch():
    with pytest.raises(ValueError, match="prosody_pretrain_steps needs the prosody branch"):
        preset("tiny", prosody_pretrain_steps=10)
    with pytest.raises(ValueError, match="prosody_pretrain_windows"):
        preset("tiny", prosody_channels=8, prosody_pretrain_steps=10, prosody_pretrain_windows=0)


@pytest.mark.slow
def test_a_run_that_pretrains_resumes_to_the_weights_of_an_unbroken_one(tmp_path):
    data = tiny_dataset(tmp_path)
    overrides = {"prosody_channels": 8, "prosody_pretrain_steps": 4, "prosody_pretrain_windows": 2}

    def config(out: str, **changes) -> TrainConfig:
        return tiny_run_config(data, tmp_path / out, overrides, **{"epochs": 2, "checkpoint_every": 3, **changes})

    straight = train(config("straight"))
    assert straight.prosody_pretraining is not None and straight.prosody_pretraining.steps == 4
    assert train(config("resumed", max_steps=3)).prosody_pretraining is not None
    resumed = train(config("resumed"), resume=True)
    assert resumed.prosody_pretraining is None  # the checkpoint holds the pretrained branch, trained on
    a = train_state_weights(tmp_path / "straight")
    b = train_state_weights(tmp_path / "resumed")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    # A video-only model's branch hears masked zeros: nothing to pretrain.
    assert train(config("video", max_steps=1, modalities="video")).prosody_pretraining is None


def train_state_weights(run) -> dict[str, torch.Tensor]:
    from fad_edge.checkpoint import load_train_state
    from fad_edge.train_state import training_weights

    return training_weights(load_train_state(run / "checkpoint")[0])


def test_train_cli_sets_the_branch_width_and_drops_the_pretraining_with_the_branch(monkeypatch, capsys, tmp_path):
    seen = capture_train_configs(monkeypatch)
    with pytest.raises(TrainingStopped):
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "a", "--prosody-channels", "32")
    assert seen[0].overrides == {"prosody_channels": 32}
    with pytest.raises(TrainingStopped):  # the small preset pretrains its branch; without one, nothing to pretrain
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "b", "--prosody-channels", "0")
    assert seen[1].overrides == {"prosody_channels": 0, "prosody_pretrain_steps": 0}
    preset("small", **seen[1].overrides)  # a valid config
    for args, fragment in ((["--prosody-channels", "12"], "groups (8)"),
                           (["--prosody-channels", "100000"], "--prosody-channels"),
                           (["--prosody-channels", "0", "--prosody-pretrain-steps", "10"], "no prosody branch")):
        code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "c", *args)
        assert code == 2 and fragment in output, output
    assert len(seen) == 2
