"""encoder_norm="batch": BatchNorm trunks that the export folds into the convolutions, so INT8 stays int8."""

from __future__ import annotations

import collections
import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import run_cli
from torch import nn

import fad_edge.train as training
from fad_edge.artifact import AUDIO_ENCODER, VIDEO_ENCODER, ExportManifest
from fad_edge.checkpoint import load_checkpoint, save_checkpoint
from fad_edge.data.normalization import Normalization
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig, preset
from fad_edge.models.resnet import ResNetTrunk, fold_batch_norms
from fad_edge.samples import synthetic_samples

NORM_OPS = {"BatchNormalization", "InstanceNormalization", "GroupNormalization", "LayerNormalization"}
ENCODERS = {VIDEO_ENCODER: "images", AUDIO_ENCODER: "mel"}


class _Stop(Exception):
    """Raised where training would start."""


def _randomize_batch_norms(module: nn.Module, seed: int) -> None:
    """Running statistics and affine parameters far from identity, so that a missed fold shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, nn.BatchNorm2d):
                channels = norm.num_features
                norm.running_mean.copy_(0.2 * torch.randn(channels, generator=generator))
                norm.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
                norm.weight.copy_(0.5 + torch.rand(channels, generator=generator))
                norm.bias.copy_(0.1 * torch.randn(channels, generator=generator))


def _op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def _ops_ort_runs(path: Path, tmp_path: Path) -> collections.Counter:
    """Op counts of the graph ONNX Runtime runs after its QDQ fusions (the portable, not the CPU-specific, level)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _op_counts(onnx.load(options.optimized_model_filepath))


@pytest.fixture(scope="module")
def batch_export(tmp_path_factory) -> Path:
    """A tiny model with BatchNorm encoders (non-trivial statistics) exported to FP32 and INT8 ONNX."""
    from fad_edge.export.pipeline import ExportOptions, export_model

    root = tmp_path_factory.mktemp("batch_export")
    torch.manual_seed(0)
    model = ListenerModel(preset("tiny", encoder_norm="batch", context_clips=1))
    _randomize_batch_norms(model, seed=1)
    checkpoint = save_checkpoint(root / "checkpoint", model, Normalization.identity())
    export_model(ExportOptions(checkpoint=checkpoint, out=root / "model", int8=True, check_sessions=1,
                               check_seconds=3.0, calibration_sessions=1, calibration_seconds=3.0, threads=1))
    return root / "model"


def test_encoder_norm_is_checked_and_group_by_default():
    assert preset("small").encoder_norm == "group" and preset("paper").encoder_norm == "group"
    older = preset("tiny").to_dict()
    del older["encoder_norm"]  # a checkpoint saved before the field existed
    assert ModelConfig.from_dict(older).encoder_norm == "group"
    with pytest.raises(ValueError, match="encoder_norm"):
        preset("tiny", encoder_norm="layer")


def test_train_cli_passes_the_encoder_norm_and_refuses_others(monkeypatch, capsys, tmp_path):
    seen = []

    def stop_before_training(config, *args, **kwargs):
        seen.append(config)
        raise _Stop

    monkeypatch.setattr(training, "train", stop_before_training)
    with pytest.raises(_Stop):
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run", "--encoder-norm", "batch")
    assert seen[0].overrides == {"encoder_norm": "batch"}
    code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "other",
                           "--encoder-norm", "layer")
    assert code == 2 and "--encoder-norm" in output and "group, batch" in output


def test_batch_norm_replaces_group_norm_in_the_encoder_trunks_only():
    model = ListenerModel(preset("tiny", encoder_norm="batch"))
    for encoder in (model.video_encoder, model.audio_encoder):
        kinds = {type(module) for module in encoder.trunk.modules()}
        assert nn.BatchNorm2d in kinds and nn.GroupNorm not in kinds
    assert any(isinstance(module, nn.GroupNorm) for module in model.elnet.modules())
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.elnet.modules())
    grouped = ListenerModel(preset("tiny"))
    assert not any(isinstance(module, nn.BatchNorm2d) for module in grouped.modules())
    assert grouped.state_dict().keys() != model.state_dict().keys()  # BatchNorm adds its running statistics


def test_folding_keeps_the_trunks_eval_output_and_needs_eval_mode():
    torch.manual_seed(0)
    trunk = ResNetTrunk(3, (8, 16), (2, 1), stem_pool=True, norm="batch")
    _randomize_batch_norms(trunk, seed=2)
    trunk.eval()
    images = torch.randn(4, 3, 32, 32)
    folded = copy.deepcopy(trunk)
    fold_batch_norms(folded)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    torch.testing.assert_close(folded(images), trunk(images), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batch_norms(ResNetTrunk(3, (8,), (1,), norm="batch"))


def test_training_with_batch_norm_updates_the_running_statistics():
    torch.manual_seed(0)
    model = ListenerModel(preset("tiny", encoder_norm="batch")).train()
    config = model.config
    frames = config.condition_frames
    images = torch.rand(2, frames, 3, config.image_size, config.image_size)
    mel = torch.randn(2, frames, 1, config.audio_window, config.n_mels)
    valid = torch.ones(2, frames)
    loss = model(images, mel, valid, torch.randn(2, config.clip_len, config.n_coeffs), torch.Generator())
    loss.backward()
    stem_norm = model.video_encoder.trunk.stem[1]
    assert isinstance(stem_norm, nn.BatchNorm2d) and int(stem_norm.num_batches_tracked) == 1
    assert not torch.allclose(stem_norm.running_mean, torch.zeros_like(stem_norm.running_mean))
    assert model.video_encoder.trunk.stem[0].weight.grad is not None and torch.isfinite(loss)


def test_fp32_encoder_graphs_have_no_norms_and_give_the_torch_features(batch_export):
    manifest = ExportManifest.load(batch_export)
    assert all(row["max_rel"] <= 1e-4 for row in manifest.reports["parity"])
    model = load_checkpoint(batch_export.parent / "checkpoint").model.eval()
    sample = synthetic_samples(model.config, 1, 1.0)[0].inputs
    inputs = {"images": sample.images, "mel": sample.mel}
    with torch.no_grad():
        expected = {VIDEO_ENCODER: model.video_encoder(torch.from_numpy(sample.images)).numpy(),
                    AUDIO_ENCODER: model.audio_encoder(torch.from_numpy(sample.mel)).numpy()}
    for graph, input_name in ENCODERS.items():
        path = batch_export / manifest.graphs[graph]["fp32"]
        assert not NORM_OPS & set(_op_counts(onnx.load(str(path)))), graph
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (features,) = session.run(None, {input_name: inputs[input_name]})
        np.testing.assert_allclose(features, expected[graph], rtol=1e-4, atol=1e-4 * np.abs(expected[graph]).max())


def test_int8_encoders_run_in_int8_from_input_to_output(batch_export, tiny_export, tmp_path):
    """Group norm needs a dequantize per norm; folded BatchNorm leaves one at the encoder's output."""
    grouped = ListenerModel(preset("tiny"))
    norms = sum(isinstance(module, nn.GroupNorm) for module in grouped.video_encoder.trunk.modules())
    assert norms == sum(isinstance(module, nn.GroupNorm) for module in grouped.audio_encoder.trunk.modules())
    for export, folded in ((batch_export, True), (tiny_export, False)):
        manifest = ExportManifest.load(export)
        for graph in ENCODERS:
            ops = _ops_ort_runs(export / manifest.graphs[graph]["int8"], tmp_path)
            assert ops["QLinearConv"] > 0 and ops["Conv"] == 0, (graph, ops)
            if folded:
                assert ops["DequantizeLinear"] <= 2 and not NORM_OPS & set(ops), (graph, ops)
            else:
                assert ops["DequantizeLinear"] >= norms, (graph, ops)


def test_int8_encoder_features_stay_close_to_fp32(batch_export):
    manifest = ExportManifest.load(batch_export)
    config = load_checkpoint(batch_export.parent / "checkpoint").config
    sample = synthetic_samples(config, 1, 1.0, seed=5)[0].inputs
    inputs = {"images": sample.images, "mel": sample.mel}
    for graph, input_name in ENCODERS.items():
        outputs = {}
        for precision in ("fp32", "int8"):
            session = ort.InferenceSession(str(batch_export / manifest.graphs[graph][precision]),
                                           providers=["CPUExecutionProvider"])
            (outputs[precision],) = session.run(None, {input_name: inputs[input_name]})
        error = np.abs(outputs["int8"] - outputs["fp32"]).mean() / outputs["fp32"].std()
        assert error < 0.1, (graph, error)
