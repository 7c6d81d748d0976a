"""ONNX export and the ONNX Runtime backend: parity, identity checks, INT8 and FP16 variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import run_cli, tiny_checkpoint

from fad_edge.artifact import META_PREFIX, ExportManifest
from fad_edge.checkpoint import load_checkpoint
from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.errors import EngineMismatchError, ExportError
from fad_edge.export.onnx_export import read_metadata
from fad_edge.runtime.ort_runner import OrtRunner
from fad_edge.runtime.torch_runner import TorchRunner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session():
    return generate_session(5, SyntheticConfig(seconds=64 / 30 + 0.5, image_size=48))


def test_manifest_and_metadata_tie_every_graph_to_its_checkpoint(tiny_export):
    manifest = ExportManifest.load(tiny_export)
    assert manifest.variants() == ["fp32", "int8", "fp16"]
    for graph, files in manifest.graphs.items():
        model = onnx.load(str(tiny_export / files["fp32"]))
        meta = read_metadata(model)
        assert meta[META_PREFIX + "graph"] == graph
        assert meta[META_PREFIX + "checkpoint_sha256"] == manifest.checkpoint_sha256
        assert json.loads(meta[META_PREFIX + "config"])["context_clips"] == 1
        assert len(json.loads(meta[META_PREFIX + "normalization"])["mean"]) == 56
        assert model.opset_import[0].version == 18
        # the batch axis is dynamic
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    rows = manifest.reports["parity"]
    assert {row["inputs"] for row in rows} >= {"random", "synthetic"}
    assert max(row["max_rel"] for row in rows) <= 1e-4


@pytest.mark.parametrize("frames", [64, 61])
def test_ort_gives_the_torch_motion_for_whole_and_partial_windows(tiny_export, session, frames):
    checkpoint = load_checkpoint(tiny_export.parent / "checkpoint")
    args = (session.frames[:frames], session.audio[: frames * 16000 // 30 + 533], 16000)
    reference = TorchRunner(checkpoint.model, seed=3).run(*args)
    ours = OrtRunner(tiny_export, "fp32", threads=1, seed=3).run(*args)
    assert ours.shape == reference.shape == (frames, 56)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * np.abs(reference).max())
    # a different seed draws different noise: the comparison above is not trivially true
    assert np.abs(OrtRunner(tiny_export, "fp32", threads=1, seed=4).run(*args) - ours).max() > 1e-3


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_model_with_the_prosody_branch_and_rotation_head_exports_and_runs_as_in_torch(tmp_path, session, exporter):
    """The spectrum rides through the audio graph, the 2D branch and the rotation head through ELNet's,
    within parity, by either exporter (the default fixture export uses only the first)."""
    from helpers import tiny_checkpoint

    from fad_edge.export.pipeline import ExportOptions, export_model

    checkpoint = tiny_checkpoint(tmp_path / "checkpoint", context_clips=2, audio_window_frames=1,
                                 audio_context_frames=8, prosody_channels=8, prosody_dilations=(1, 2, 4),
                                 rotation_head_channels=8)
    manifest = export_model(ExportOptions(checkpoint=checkpoint, out=tmp_path / "model", check_sessions=2,
                                          parity_sessions=1, check_seconds=3.0, threads=1, exporter=exporter))
    assert manifest.reports["exporter"] == exporter
    # PyTorch's motion is compared on the first session only; the FP32 L2 is over both
    motion = next(row for row in manifest.reports["parity"] if row["graph"] == "motion (ort-fp32 vs torch)")
    assert motion["inputs"] == "1 synthetic session" and len(manifest.reports["accuracy"]["sessions"]) == 2
    args = (session.frames[:64], session.audio[: 64 * 16000 // 30 + 533], 16000)
    reference = TorchRunner(load_checkpoint(checkpoint).model, seed=3).run(*args)
    ours = OrtRunner(tmp_path / "model", "fp32", threads=1, seed=3).run(*args)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def test_export_mish_is_torchs_mish_without_a_softplus_and_never_nan_in_half_precision(tiny_export):
    import torch

    from fad_edge.export.graphs import ExportMish

    values = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor([-1e4, -200.0, -90.0, 45.0, 90.0, 1e4])])
    assert (ExportMish()(values) - torch.nn.functional.mish(values)).abs().max() < 2e-6
    halves = torch.tensor([-60000.0, -20.0, -5.0, 0.0, 5.0, 6.0, 12.0, 60000.0], dtype=torch.float16)
    exported = ExportMish()(halves)
    assert torch.isfinite(exported).all()
    error = (exported.float() - torch.nn.functional.mish(halves.float())).abs()
    assert (error <= 2e-3 * halves.float().abs().clamp(min=1)).all()
    # The graphs hold no Softplus (ONNX Runtime's is a scalar loop); ELNet's Mish became Exp and friends.
    for name in ("elnet_x0", "elnet_eps"):
        ops = {node.op_type for node in onnx.load(str(tiny_export / f"{name}.onnx")).graph.node}
        assert "Softplus" not in ops and "Exp" in ops, name


def test_multi_step_sampling_matches_torch(tiny_export, session):
    checkpoint = load_checkpoint(tiny_export.parent / "checkpoint")
    args = (session.frames[:16], session.audio[: 16 * 16000 // 30], 16000)
    reference = TorchRunner(checkpoint.model, steps=4, seed=1).run(*args)
    ours = OrtRunner(tiny_export, "fp32", threads=1, steps=4, seed=1).run(*args)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def test_fp16_noise_graph_keeps_the_step_and_the_preconditioning_in_fp32(tiny_export):
    """eps = sqrt(1 - a_t) x_t + sqrt(a_t) F summed in FP16 would be rounded by ~5e-4, which a sampler's x0 from
    eps multiplies by up to 2000 at t = 99; the step embedding's sines reach ~100 radians."""
    manifest = ExportManifest.load(tiny_export)
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_export / manifest.graphs["elnet_eps"]["fp16"]))).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types |= {i.name: i.data_type for i in graph.initializer}
    assert types[graph.output[0].name] == onnx.TensorProto.FLOAT
    producers = {output: node for node in graph.node for output in node.output}
    last = producers[graph.output[0].name]
    if last.op_type == "Cast":  # the converter's own cast at the output: the sum is before it
        last = producers[last.input[0]]
    assert last.op_type == "Add"
    for node in graph.node:
        if node.op_type in ("Sin", "Cos") or node is last:
            assert all(types.get(name) == onnx.TensorProto.FLOAT for name in node.input), (node.name, list(node.input))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)  # the U-Net is FP16


def test_int8_and_fp16_graphs_are_really_converted_and_close(tiny_export, session):
    manifest = ExportManifest.load(tiny_export)
    int8 = onnx.load(str(tiny_export / manifest.graphs["video_encoder"]["int8"]))
    assert any(node.op_type == "DequantizeLinear" for node in int8.graph.node)
    fp16 = onnx.load(str(tiny_export / manifest.graphs["video_encoder"]["fp16"]))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in fp16.graph.initializer)
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # FP32 I/O
    args = (session.frames[:32], session.audio[: 32 * 16000 // 30], 16000)
    fp32 = OrtRunner(tiny_export, "fp32", threads=1).run(*args)
    half = OrtRunner(tiny_export, "fp16", threads=1).run(*args)
    assert np.abs(half - fp32).max() <= 1e-2 * np.abs(fp32).max()
    assert manifest.reports["fp16"]["max_rel"] <= 1e-2
    assert manifest.reports["int8"]["ratio"] <= 1.02
    audit = manifest.reports["fp16"]["audit"]["video_encoder"]
    assert 0 < audit["peak"] < 65504


def test_a_truncated_onnx_is_a_clear_error(tiny_export, tmp_path, monkeypatch, capsys):
    broken = tmp_path / "model"
    shutil.copytree(tiny_export, broken)
    path = broken / "video_encoder.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ExportError, match="video_encoder.onnx"):
        OrtRunner(broken)
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", broken, "--video", "v.mp4", "--audio", "a.wav",
                           "--out", tmp_path / "out")
    assert code == 2 and "video_encoder.onnx" in output and "Traceback" not in output


def test_a_graph_from_another_model_is_refused(tiny_export, tmp_path):
    mixed = tmp_path / "model"
    shutil.copytree(tiny_export, mixed)
    model = onnx.load(str(mixed / "audio_encoder.onnx"))
    meta = read_metadata(model)
    meta[META_PREFIX + "checkpoint_sha256"] = "0" * 64
    from fad_edge.export.onnx_export import save_onnx, set_metadata

    set_metadata(model, meta)
    save_onnx(model, mixed / "audio_encoder.onnx")
    with pytest.raises(ExportError, match="contents are not the ones this export recorded"):
        OrtRunner(mixed)
    ExportManifest.load(mixed).save(mixed)  # the new file's digest recorded: its metadata still names another model
    with pytest.raises(EngineMismatchError, match="another model"):
        OrtRunner(mixed)


def test_a_graph_edited_after_the_export_is_refused_and_an_older_manifest_is_read_unchecked(tiny_export, tmp_path):
    edited = tmp_path / "model"
    shutil.copytree(tiny_export, edited)
    data = bytearray((edited / "elnet_x0.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of a weight: still a valid graph, with other motion
    (edited / "elnet_x0.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportError, match="elnet_x0.onnx: its contents are not the ones"):
        OrtRunner(edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    assert set(manifest["files"]) == {name for files in manifest["graphs"].values() for name in files.values()}
    del manifest["files"]  # as an export made before digests were recorded
    (edited / "manifest.json").write_text(json.dumps(manifest))
    OrtRunner(edited).close()


def test_a_manifest_whose_normalization_was_edited_is_refused(tiny_export, tmp_path):
    edited = tmp_path / "model"
    shutil.copytree(tiny_export, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["normalization"]["mean"] = [value + 1.0 for value in manifest["normalization"]["mean"]]
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineMismatchError, match="manifest's normalization is not the one"):
        OrtRunner(edited)


@pytest.mark.parametrize("field, value", [("image_size", 64), ("n_mels", 40), ("n_coeffs", 58), ("clip_len", 16),
                                          ("sample_start_step", 50)])
def test_a_manifest_whose_config_was_edited_is_refused_before_any_run(field, value, tiny_export, tmp_path, monkeypatch,
                                                                      capsys):
    """ONNX Runtime would fail mid-run on the new shapes (or, for the folded step, run another sampler silently)."""
    edited = tmp_path / "model"
    shutil.copytree(tiny_export, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["config"][field] = value
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineMismatchError, match=f"{field} {value}.*manifest.json was edited; re-export"):
        OrtRunner(edited)
    code, output = run_cli(monkeypatch, capsys, "profile", edited, "--frames", "16", "--runs", "1", "--threads", "1")
    assert code == 2 and "manifest.json was edited" in output and "Traceback" not in output
    assert len([line for line in output.splitlines() if line.startswith("error:")]) == 1


def test_the_sampler_settings_of_a_manifest_may_differ_from_its_graphs(tiny_export, tmp_path):
    """tune-sampler's settings are read at run time, from the manifest: no graph fixes them."""
    edited = tmp_path / "model"
    shutil.copytree(tiny_export, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["config"].update(inference_steps=2, sample_start_noise=0.5, diverse_steps=2, diverse_temperature=1.3,
                              diverse_rotation_noise=0.5, diverse_start_step=60, diverse_start_noise=0.8)
    (edited / "manifest.json").write_text(json.dumps(manifest))
    with OrtRunner(edited, "int8", threads=1, sampler="diverse") as runner:
        assert runner.settings.temperature == 1.3 and runner.settings.steps == 2


def test_a_graph_config_is_compared_field_by_field_without_a_model(tmp_path):
    config = {"image_size": 32, "video_widths": (8, 16), "diverse_temperature": 1.0}
    manifest = ExportManifest("v", "0" * 64, config, {}, 18)
    recorded = json.dumps({**config, "video_widths": [8, 16], "diverse_temperature": 1.4})
    manifest.check_graph_config(tmp_path / "g.onnx", recorded)  # tuples as JSON lists; a sampler setting may differ
    manifest.check_graph_config(tmp_path / "g.onnx", None)  # a graph that records no config: unchecked
    for bad in (json.dumps({**config, "image_size": 64}), json.dumps({**config, "extra": 1}), "not json", "[1]"):
        with pytest.raises(EngineMismatchError, match="g.onnx"):
            manifest.check_graph_config(tmp_path / "g.onnx", bad)


@pytest.mark.parametrize("width", [40, 80])
def test_the_parity_table_cuts_no_label_or_number_at_any_width(width, monkeypatch):
    import io

    from rich.console import Console

    from fad_edge.cli import export_commands

    console = Console(file=io.StringIO(), width=width, record=True)
    monkeypatch.setattr(export_commands, "console", console)
    export_commands.print_reports({"parity": [
        {"graph": "video_encoder", "inputs": "random", "max_abs": 2.68e-07, "max_rel": 6.77e-07},
        {"graph": "motion (ort-fp32 vs torch)", "inputs": "2 synthetic sessions", "max_abs": 3.74e-07,
         "max_rel": 1.49e-06}]})
    text = console.export_text()
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
    for whole in ("2.68e-07", "6.77e-07", "3.74e-07", "1.49e-06"):
        assert whole in text, whole
    if width == 80:  # narrower, the labels fold (never the numbers)
        assert "motion (ort-fp32 vs torch)" in text and "2 synthetic sessions" in text


@pytest.mark.parametrize("out, fragment", [("/proc/fad-edge-test", "cannot be written"),
                                           ("/dev/fad-edge-test", "where devices are")])
def test_an_export_folder_that_cannot_be_written_is_refused_before_any_work(out, fragment, tmp_path, monkeypatch,
                                                                            capsys):
    from fad_edge.export import pipeline

    if not Path(out).parent.exists():
        pytest.skip(f"no {Path(out).parent} here")

    def no_work(*args, **kwargs):
        raise AssertionError("the export ran")

    monkeypatch.setattr(pipeline, "export_model", no_work)
    code, output = run_cli(monkeypatch, capsys, "export", "--checkpoint", tmp_path / "ck", "--out", out)
    assert code == 2 and fragment in output and out in output and "Traceback" not in output
    assert ".tmp" not in output and not Path(out).exists()


def test_a_folder_without_manifest_or_variant_is_a_clear_error(tiny_export, tmp_path):
    with pytest.raises(ExportError, match="manifest.json"):
        OrtRunner(tmp_path)
    partial = tmp_path / "model"
    shutil.copytree(tiny_export, partial)
    manifest = ExportManifest.load(partial)
    for files in manifest.graphs.values():
        files.pop("int8")
    manifest.save(partial)
    with pytest.raises(ExportError, match="--int8"):
        OrtRunner(partial, "int8")


def test_export_cli_prints_the_parity_table(tmp_path, monkeypatch, capsys):
    from helpers import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "out",
                           "--threads", "1")
    assert code == 0, output
    assert "elnet_x0" in output and "max rel" in output
    assert (tmp_path / "out" / "manifest.json").exists()


def test_an_unknown_exporter_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from helpers import tiny_checkpoint

    from fad_edge.export.graphs import graph_specs
    from fad_edge.export.onnx_export import trace_to_onnx

    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "out",
                           "--exporter", "onnxscript")
    assert code == 2 and "--exporter" in output and "dynamo" in output and "Traceback" not in output
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="unknown exporter"):
        trace_to_onnx(graph_specs(load_checkpoint(checkpoint).model)[0], exporter="onnxscript")


def test_export_fails_when_parity_exceeds_the_tolerance(tmp_path, monkeypatch, capsys):
    from helpers import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / "out",
                           "--tolerance", "0", "--threads", "1")
    assert code == 2 and "parity check failed" in output and "Traceback" not in output
    assert not (tmp_path / "out" / "manifest.json").exists()  # a failed export is never mistaken for a good one


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _quick_options(checkpoint, out, **overrides):
    from fad_edge.export.pipeline import ExportOptions

    return ExportOptions(checkpoint=checkpoint, out=out, check_sessions=1, check_seconds=3.0, threads=1, **overrides)


def test_a_failed_re_export_leaves_the_good_export_untouched(tiny_export, tmp_path, monkeypatch, capsys):
    good = tmp_path / "model"
    shutil.copytree(tiny_export, good)
    before = _snapshot(good)
    code, output = run_cli(monkeypatch, capsys, "export", "--checkpoint", tiny_export.parent / "checkpoint",
                           "--out", good, "--tolerance", "0", "--threads", "1")
    assert code == 2 and "parity check failed" in output and "Traceback" not in output
    assert _snapshot(good) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the half-built folder is gone
    assert OrtRunner(good, "int8", threads=1).manifest.variants() == ["fp32", "int8", "fp16"]


def test_an_interrupted_re_export_leaves_the_good_export_untouched(tiny_export, tmp_path, monkeypatch):
    from fad_edge.export import pipeline

    good = tmp_path / "model"
    shutil.copytree(tiny_export, good)
    before = _snapshot(good)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C after the FP32 graphs were written

    monkeypatch.setattr(pipeline, "_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_model(_quick_options(tiny_export.parent / "checkpoint", good))
    assert _snapshot(good) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_re_export_replaces_the_folder_whole(tiny_export, tmp_path):
    from fad_edge.export.pipeline import export_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_export, folder)
    manifest = export_model(_quick_options(tiny_export.parent / "checkpoint", folder))
    assert manifest.variants() == ["fp32"]
    expected = sorted([files["fp32"] for files in manifest.graphs.values()] + ["manifest.json"])
    assert sorted(p.name for p in folder.iterdir()) == expected  # the old INT8 and FP16 graphs are gone
    assert ExportManifest.load(folder).variants() == ["fp32"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_the_folded_graph_is_calibrated_on_the_mean_start_and_on_noise(tmp_path):
    """A preset that starts from the mean motion feeds all-zero x_start; calibrated on that alone, INT8 would round
    a noisy start (a one-step sampler with start noise) to whole numbers."""
    from fad_edge.export.graphs import graph_specs
    from fad_edge.export.pipeline import _calibration_feeds
    from fad_edge.samples import synthetic_samples

    loaded = load_checkpoint(tiny_checkpoint(tmp_path / "ck", sample_start_noise=0.0, sample_start_step=99))
    samples = synthetic_samples(loaded.config, 1, 2.0)
    feeds = _calibration_feeds(loaded.model.eval(), graph_specs(loaded.model), samples)
    starts = np.concatenate([feed["x_start"] for feed in feeds["elnet_x0"]])
    zero = [clip for clip in starts if not clip.any()]
    noisy = np.concatenate([clip for clip in starts if clip.any()])
    assert len(starts) > 2 and len(zero) == len(starts) - len(starts) // 2  # the clips take the two starts in turn
    assert 0.9 < noisy.std() < 1.1 and noisy.min() < -2  # a forward draw at t = 99: unit noise, both signs


def test_checking_on_the_calibration_split_is_refused(tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "export", "--checkpoint", tiny_checkpoint(tmp_path / "ck"),
                           "--out", tmp_path / "model", "--int8", "--data", tmp_path, "--split", "train")
    assert code == 2 and "calibrated on" in output and not (tmp_path / "model").exists()
