"""Checkpoints: safetensors round trip, atomic swap, and refusing what is not ours."""

import json

import numpy as np
import pytest
import torch

from fad_edge.checkpoint import (
    MODEL_JSON,
    MODEL_WEIGHTS,
    STATE_WEIGHTS,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    state_dict_mismatch,
)
from fad_edge.data.normalization import Normalization
from fad_edge.errors import CheckpointError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.presets import preset


def _model_and_stats():
    torch.manual_seed(0)
    model = ListenerModel(preset("tiny"))
    stats = Normalization(np.linspace(-1, 1, 56).astype(np.float32), np.linspace(0.5, 2, 56).astype(np.float32))
    model.set_normalization(torch.from_numpy(stats.mean), torch.from_numpy(stats.std))
    return model, stats


def test_round_trip_restores_weights_config_and_normalization(tmp_path):
    model, stats = _model_and_stats()
    save_checkpoint(tmp_path / "ckpt", model, stats, {"note": "x"})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.normalization.std, stats.std)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.model.state_dict()[name]), name
    assert loaded.info["note"] == "x" and len(loaded.info["weights_sha256"]) == 64
    assert not loaded.model.training


def test_saving_again_replaces_the_old_checkpoint_whole(tmp_path):
    model, stats = _model_and_stats()
    save_checkpoint(tmp_path / "ckpt", model, stats, {"step": 1})
    save_checkpoint(tmp_path / "ckpt", model, stats, {"step": 2})
    assert load_checkpoint(tmp_path / "ckpt").info["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_an_interrupted_swap_falls_back_to_the_old_copy(tmp_path):
    model, stats = _model_and_stats()
    save_checkpoint(tmp_path / "ckpt", model, stats, {"step": 1})
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.old")  # killed between the two renames
    assert load_checkpoint(tmp_path / "ckpt").info["step"] == 1


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no fad-edge checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / MODEL_JSON).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a fad-edge checkpoint"):
        load_checkpoint(tmp_path)


def test_corrupt_weights_are_a_clear_error(tmp_path):
    model, stats = _model_and_stats()
    folder = save_checkpoint(tmp_path / "ckpt", model, stats)
    (folder / MODEL_WEIGHTS).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(folder)


def test_weights_of_another_config_are_refused(tmp_path):
    model, stats = _model_and_stats()
    folder = save_checkpoint(tmp_path / "ckpt", model, stats)
    info = json.loads((folder / MODEL_JSON).read_text())
    info["config"]["unet_dim"] = 32
    (folder / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"do not fit the saved config \(size mismatch for [\w.]+: .*"
                                              r"; and \d+ more mismatches\)") as refused:
        load_checkpoint(folder)
    assert "\n" not in str(refused.value) and "Error(s) in loading" not in str(refused.value)


def test_a_mismatch_listing_many_keys_is_cut_to_a_few_lines():
    error = RuntimeError("Error(s) in loading state_dict for ListenerModel:\n\tUnexpected key(s) in state_dict: "
                         + ", ".join(f'"block.{i}.weight"' for i in range(500)) + ". ")
    detail = state_dict_mismatch(error)
    assert detail.startswith("Unexpected key(s)") and detail.endswith("[cut]") and len(detail) <= 250


def test_a_pickle_is_never_loaded(tmp_path):
    model, stats = _model_and_stats()
    folder = save_checkpoint(tmp_path / "ckpt", model, stats)
    torch.save(model.state_dict(), folder / MODEL_WEIGHTS)  # a pickle where safetensors belongs
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)


def _flip_one_byte(path, offset=-3):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_weight_bytes_never_load_silently(tmp_path):
    model, stats = _model_and_stats()
    folder = save_checkpoint(tmp_path / "ckpt", model, stats)
    _flip_one_byte(folder / MODEL_WEIGHTS)  # still valid safetensors: one weight changed
    with pytest.raises(CheckpointError, match=r"model.safetensors: SHA-256 \w+ does not match"):
        load_checkpoint(folder)


def test_a_checkpoint_without_its_weights_hash_is_refused(tmp_path):
    model, stats = _model_and_stats()
    folder = save_checkpoint(tmp_path / "ckpt", model, stats)
    info = json.loads((folder / MODEL_JSON).read_text())
    del info["weights_sha256"]
    (folder / MODEL_JSON).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="no valid SHA-256 recorded for model.safetensors"):
        load_checkpoint(folder)


def test_a_corrupt_training_state_is_refused(tmp_path):
    model, stats = _model_and_stats()
    state = {"moment": torch.arange(64, dtype=torch.float32)}
    folder = save_checkpoint(tmp_path / "ckpt", model, stats, train_tensors=state, train_json={"step": 3})
    tensors, saved = load_train_state(folder)
    assert torch.equal(tensors["moment"], state["moment"]) and saved == {"step": 3}
    _flip_one_byte(folder / STATE_WEIGHTS)
    with pytest.raises(CheckpointError, match="train_state.safetensors: SHA-256"):
        load_train_state(folder)


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_staging(tmp_path, monkeypatch):
    from fad_edge import checkpoint

    model, stats = _model_and_stats()
    save_checkpoint(tmp_path / "ckpt", model, stats, {"step": 1})

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "file_sha256", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt", model, stats, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ckpt").info["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("overrides, message", [
    ({"image_size": -4}, "image_size must be a positive integer"),
    ({"image_size": 48.0}, "image_size must be a positive integer"),
    ({"inference_steps": 0}, "inference_steps must be a positive integer"),
    ({"inference_steps": 101}, r"inference_steps must be in 1..train_steps \(100\)"),
    ({"sample_start_step": 100}, r"sample_start_step must be in 0..99"),
    ({"sample_start_step": -1}, r"sample_start_step must be in 0..99"),
    ({"clip_len": 0}, "clip_len must be a positive integer"),
    ({"context_clips": -1}, "context_clips must be in 0..64"),
    ({"context_clips": 100_000}, "context_clips must be in 0..64"),
    ({"video_widths": (16, 0, 16, 16)}, "video_widths must be positive integers"),
    ({"unet_dim_mults": ()}, "unet_dim_mults must be positive integers"),
    ({"sample_start_noise": float("nan")}, "sample_start_noise must be a finite number"),
    ({"step_focus_share": 1.5}, "step_focus_share must be a finite number in"),
    ({"clip_sample": 0.0}, "clip_sample must be positive"),
    ({"train_steps": True}, "train_steps must be a positive integer"),
])
def test_model_config_refuses_out_of_range_numbers(overrides, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", **overrides)


def test_every_preset_is_valid():
    from fad_edge.models.config import ModelConfig
    from fad_edge.models.presets import PRESETS

    for config in PRESETS.values():
        assert ModelConfig.from_dict(config.to_dict()) == config
