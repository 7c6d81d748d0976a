"""Checkpoints: safetensors round trip, atomic swap, and refusing what is not ours."""

import json

import numpy as np
import pytest
import torch

from fad_edge.checkpoint import MODEL_JSON, MODEL_WEIGHTS, load_checkpoint, save_checkpoint
from fad_edge.data.normalization import Normalization
from fad_edge.errors import CheckpointError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import preset


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
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(folder)


def test_a_pickle_is_never_loaded(tmp_path):
    model, stats = _model_and_stats()
    folder = save_checkpoint(tmp_path / "ckpt", model, stats)
    torch.save(model.state_dict(), folder / MODEL_WEIGHTS)  # a pickle where safetensors belongs
    with pytest.raises(CheckpointError):
        load_checkpoint(folder)
