"""Encoder norms that fold into the convolutions, so INT8 stays int8: BatchNorm, or GroupNorm frozen."""

from __future__ import annotations

import collections
import copy
import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import TrainingStopped, capture_train_configs, run_cli
from torch import nn

from fad_edge.artifact import AUDIO_ENCODER, VIDEO_ENCODER, ExportManifest
from fad_edge.checkpoint import load_checkpoint, save_checkpoint
from fad_edge.data.normalization import Normalization
from fad_edge.errors import ExportError
from fad_edge.export.frozen_norms import freeze_group_norms, frozen_group_norm
from fad_edge.export.quantize import trunk_nodes
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig
from fad_edge.models.presets import preset
from fad_edge.models.resnet import ResNetTrunk, fold_batch_norms
from fad_edge.samples import HELD_OUT_SEED, synthetic_samples
from fad_edge.sampling import SamplerSettings

NORM_OPS = {"BatchNormalization", "InstanceNormalization", "GroupNormalization", "LayerNormalization"}
ENCODERS = {VIDEO_ENCODER: "images", AUDIO_ENCODER: "mel"}


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


def test_encoder_norm_is_checked_and_group_by_default_batch_in_small():
    assert preset("paper").encoder_norm == "group" and preset("small").encoder_norm == "batch"
    older = preset("tiny").to_dict()
    for field in ("encoder_norm", "condition_shortcut", "video_diffusion_gradient"):
        del older[field]  # a checkpoint saved before these fields existed: the model it was trained as
    restored = ModelConfig.from_dict(older)
    assert restored.encoder_norm == "group" and not restored.condition_shortcut
    assert restored.video_diffusion_gradient == 1.0
    with pytest.raises(ValueError, match="encoder_norm"):
        preset("tiny", encoder_norm="layer")


def test_train_cli_passes_the_encoder_norm_and_refuses_others(monkeypatch, capsys, tmp_path):
    seen = capture_train_configs(monkeypatch)
    with pytest.raises(TrainingStopped):
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run", "--encoder-norm", "batch")
    assert seen[0].overrides == {"encoder_norm": "batch"}
    with pytest.raises(TrainingStopped):
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run2",
                "--video-diffusion-gradient", "0.5", "--no-condition-shortcut", "--augment-shift", "2")
    assert seen[1].overrides == {"video_diffusion_gradient": 0.5, "condition_shortcut": False}
    assert seen[1].augment_shift == 2 and seen[0].augment_shift is None
    code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run3",
                           "--video-diffusion-gradient", "2")
    assert code == 2 and "--video-diffusion-gradient" in output
    with pytest.raises(TrainingStopped):
        run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run4",
                "--rotation-head", "64", "--loss-dim-weighting", "expression_variance")
    assert seen[2].overrides == {"rotation_head_channels": 64, "loss_dim_weighting": "expression_variance"}
    code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run5",
                           "--rotation-head", "12")
    assert code == 2 and "--rotation-head" in output and "groups (8)" in output
    code, output = run_cli(monkeypatch, capsys, "train", "--data", tmp_path, "--out", tmp_path / "run6",
                           "--loss-dim-weighting", "loud")
    assert code == 2 and "--loss-dim-weighting" in output and "expression_variance" in output
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
    """Folded BatchNorm and frozen GroupNorm alike leave one dequantize, at the trunk's output; the heads run FP32."""
    assert ExportManifest.load(tiny_export).reports["int8"]["encoder_norms"] == "frozen"
    assert ExportManifest.load(batch_export).reports["int8"]["encoder_norms"] == "as trained"
    for export in (batch_export, tiny_export):
        manifest = ExportManifest.load(export)
        for graph in ENCODERS:
            ops = _ops_ort_runs(export / manifest.graphs[graph]["int8"], tmp_path)
            head_convs = 1 if graph == VIDEO_ENCODER else 0  # the spatial softmax's keypoint convolution
            assert ops["QLinearConv"] > 0 and ops["Conv"] == head_convs, (graph, ops)
            assert ops["DequantizeLinear"] <= 2 and not NORM_OPS & set(ops), (graph, ops)


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


def test_a_frozen_group_norm_is_the_group_norm_for_an_image_with_those_statistics():
    norm = nn.GroupNorm(2, 8)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
        norm.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    image = 3.0 + 2.0 * torch.randn(1, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    grouped = image.reshape(1, 2, -1)
    frozen = frozen_group_norm(norm, grouped.mean(-1)[0], grouped.var(-1, unbiased=False)[0])
    torch.testing.assert_close(frozen(image), norm(image), atol=1e-5, rtol=1e-5)
    other = image * 2.0  # other statistics: the frozen norm no longer renormalizes it
    assert (frozen(other) - norm(other)).abs().max() > 0.5


def test_freezing_replaces_every_trunk_group_norm_and_then_folds_away():
    from fad_edge.export.graphs import folded_encoder
    from fad_edge.models.encoders import VideoEncoder

    torch.manual_seed(0)
    encoder = VideoEncoder(preset("tiny")).eval()
    norms = sum(isinstance(module, nn.GroupNorm) for module in encoder.trunk.modules())
    generator = torch.Generator().manual_seed(1)
    frames = (torch.rand(1, 3, 32, 32, generator=generator) + 0.05 * torch.rand(12, 3, 32, 32, generator=generator))
    with torch.no_grad():
        exact = encoder(frames)
    frozen = copy.deepcopy(encoder)
    assert freeze_group_norms(frozen, [frames[:6], frames[6:]]) == norms > 0
    assert not any(isinstance(module, nn.GroupNorm) for module in frozen.trunk.modules())
    folded = folded_encoder(frozen)
    assert not any(isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)) for module in folded.trunk.modules())
    with torch.no_grad():
        approximate, refolded = frozen(frames), folded(frames)
    torch.testing.assert_close(refolded, approximate, atol=1e-4, rtol=1e-4)
    # Frames alike (as face crops are) have alike statistics: the features stay close to the exact ones.
    assert (approximate - exact).abs().mean() < 0.1 * exact.std()
    with pytest.raises(ValueError, match="at least one calibration batch"):
        freeze_group_norms(copy.deepcopy(encoder), [])


def test_only_the_trunk_of_an_encoder_graph_is_quantized(tiny_export):
    manifest = ExportManifest.load(tiny_export)
    graph = onnx.load(str(tiny_export / manifest.graphs[VIDEO_ENCODER]["fp32"]))
    chosen = set(trunk_nodes(tiny_export / manifest.graphs[VIDEO_ENCODER]["fp32"]))
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    head = [node.name for node in convs if any("pool.keypoint_conv" in name for name in node.input)]
    assert len(head) == 1 and head[0] not in chosen
    assert {node.name for node in convs} - set(head) <= chosen
    assert not any(node.op_type in ("Gemm", "MatMul") and node.name in chosen for node in graph.graph.node)
    with pytest.raises(ExportError, match="encoder graph"):
        trunk_nodes(tiny_export / manifest.graphs["elnet_x0"]["fp32"])


@pytest.mark.parametrize("l2s, expected", [
    # L2 by (ELNet in int8, encoders frozen), for the mean sampler or as (mean, diverse); FP32 scores 1.0 with
    # either, and the budget is 1% either way. The same scores on the reported and the choice sessions.
    ({(True, True): 1.005}, ("int8", "frozen", 1.005)),
    ({(True, True): 1.05, (False, True): 1.06, (True, False): 1.03}, ("int8", "group", 1.03)),
    ({(True, True): 1.05, (False, True): 1.04, (False, False): 1.045}, ("fp32", "frozen", 1.04)),
    ({(True, True): 0.95, (False, True): 0.998}, ("fp32", "frozen", 0.998)),  # lower is off budget too
    ({(True, True): (1.0, 1.08), (False, True): (1.002, 1.003)}, ("fp32", "frozen", 1.002)),  # the diverse sampler
    # Chosen on the choice sessions, measured on the reported ones: ELNet in FP32 is closer on the former
    # (1.02 against 1.05) though not on the latter (1.03 against 1.02); it is kept, and its 1.03 reported.
    ({(True, True): {"reported": 1.02, "choice": 1.05}, (False, True): {"reported": 1.03, "choice": 1.02},
      (False, False): {"reported": 1.0, "choice": 1.04}}, ("fp32", "frozen", 1.03)),
    # On budget on the reported sessions, off budget on the choice ones: the fallback is tried and kept.
    ({(True, True): {"reported": 1.005, "choice": 1.05}, (False, True): {"reported": 1.002, "choice": 1.004}},
     ("fp32", "frozen", 1.002)),
])
def test_int8_fallbacks_are_tried_off_budget_and_kept_only_where_they_bring_l2_closer(monkeypatch, tmp_path, l2s,
                                                                                     expected):
    from types import SimpleNamespace

    from fad_edge.export import int8_budget

    def record(source: Path, target: Path, feeds: list, nodes: list | None = None) -> None:
        target.write_text(source.parent.name)  # which graph it was quantized from: "frozen" or the export's own

    monkeypatch.setattr(int8_budget, "quantize_graph", record)
    monkeypatch.setattr(int8_budget, "check_runs", lambda path: None)
    monkeypatch.setattr(int8_budget, "trunk_nodes", lambda path: [])
    monkeypatch.setattr(int8_budget, "mean_l2", lambda predicted, truth: predicted)
    out = tmp_path / "out"
    out.mkdir()

    class ScoredRunner:
        """Scores what the manifest holds now: each sampler's motion is its L2 (mean_l2 passes it through)."""

        config, seed = preset("small"), 0  # its two samplers' settings differ

        def __init__(self, folder, precision, threads, manifest):
            elnet_int8 = manifest.graphs["elnet_x0"]["int8"] == "elnet_x0.int8.onnx"
            frozen = all((folder / manifest.graphs[graph]["int8"]).read_text() == "frozen" for graph in ENCODERS)
            self.scored = l2s[(elnet_int8, frozen)]
            self.settings = SamplerSettings.named("mean", self.config)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def l2(self, sessions: str) -> float:
            scored = self.scored[sessions] if isinstance(self.scored, dict) else self.scored
            diverse = self.settings == SamplerSettings.named("diverse", self.config)
            return scored if isinstance(scored, float) else scored[diverse]

    monkeypatch.setattr(int8_budget, "OrtRunner", ScoredRunner)
    monkeypatch.setattr(int8_budget, "encode_inputs", lambda runner, inputs: inputs)  # which sessions they are
    monkeypatch.setattr(int8_budget, "sample_encoded", lambda runner, encoded, seed: runner.l2(encoded))
    manifest = ExportManifest("0", "sha", {}, {}, 18, {graph: {"fp32": f"{graph}.onnx"} for graph in
                                                        (*ENCODERS, "elnet_x0", "elnet_eps")})
    frozen = int8_budget.FrozenGraphs({graph: tmp_path / "frozen" / f"{graph}.onnx" for graph in ENCODERS}, norms=4)
    fp32 = {"mean": 1.0, "diverse": 1.0}
    reported, choice = (int8_budget.ScoredChecks(name, [SimpleNamespace(inputs=name, listener=None)], fp32)
                        for name in ("reported", "choice"))
    feeds = {graph: [] for graph in manifest.graphs}
    report = int8_budget.quantize_within_budget(out, manifest, feeds, reported, 1, frozen, choice)
    assert (report["elnet"], report["encoder_norms"], report["l2_int8"]) == expected
    assert all(manifest.graphs[graph]["int8"] == f"{graph}.int8.onnx" for graph in ENCODERS)
    quantized = [graph for graph in manifest.graphs if graph in ENCODERS or report["elnet"] == "int8"]
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{graph}.int8.onnx" for graph in quantized)
    assert report["l2_int8"] == ScoredRunner(out, "int8", 1, manifest).l2("reported")  # what the manifest holds
    assert report["within_budget"] == (report["deviation"] <= 0.01)
    assert report["chosen_on"]["sessions"] == "choice"
    assert (len(report["chosen_on"]["deviations"]) > 1) == (len(l2s) > 1)  # tried only off budget (scored only then)


def test_int8_fallbacks_are_chosen_on_the_val_split_or_on_fresh_sessions_never_the_reported_ones(monkeypatch,
                                                                                                  tmp_path):
    from types import SimpleNamespace

    from fad_edge.export import pipeline

    loaded = SimpleNamespace(config=preset("tiny"))
    asked: list = []
    monkeypatch.setattr(pipeline, "split_samples", lambda config, data, split: asked.append(split) or [])
    monkeypatch.setattr(pipeline, "synthetic_samples", lambda config, count, seconds, seed: asked.append(seed) or [])
    monkeypatch.setattr(pipeline, "sampler_l2s", lambda runner, encoded, checks: {})
    reported = pipeline.ScoredChecks("val", [], {})
    options = pipeline.ExportOptions(tmp_path / "ckpt", tmp_path / "out", int8=True, data=tmp_path, split="val")
    assert pipeline._choice_checks(options, loaded, None, reported) is reported  # choosing is what val is for
    options = dataclasses.replace(options, split="test")
    assert pipeline._choice_checks(options, loaded, None, reported).name == "val"
    options = dataclasses.replace(options, data=None)
    assert pipeline._choice_checks(options, loaded, None, reported).name.startswith("synthetic")
    assert asked == ["val", pipeline.CHOICE_SEED] and pipeline.CHOICE_SEED != HELD_OUT_SEED


@pytest.mark.parametrize("encoder_class", ["VideoEncoder", "AudioEncoder"])
def test_the_folded_encoder_gives_the_encoders_eval_outputs_with_no_norm_left(encoder_class):
    """The feature standardizer's running statistics fold into the projection (the exported graphs' source)."""
    from fad_edge.export.graphs import folded_encoder
    from fad_edge.models import encoders

    torch.manual_seed(0)
    config = preset("tiny", encoder_norm="batch")
    encoder = getattr(encoders, encoder_class)(config).train()
    shape = ((3, config.image_size, config.image_size) if encoder_class == "VideoEncoder"
             else (1, config.audio_window, config.n_mels))
    with torch.no_grad():
        for _ in range(5):  # running statistics far from the initial (0, 1)
            encoder(3.0 + 2.0 * torch.rand(16, *shape))
    encoder.eval()
    assert encoder.standardize.running_var.sub(1).abs().max() > 0.1
    inputs = 3.0 + 2.0 * torch.rand(8, *shape)
    folded = folded_encoder(encoder)
    assert not any(isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) for module in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(inputs), encoder(inputs), rtol=1e-4, atol=1e-4)
    assert encoder.training is False and isinstance(encoder.standardize, nn.BatchNorm1d)  # the original is kept
