"""Baselines as Learning to Listen defines them, and `fad-edge evaluate` end to end on tiny data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fad_edge.baselines import Baselines, BaselineSequence
from fad_edge.checkpoint import load_checkpoint
from fad_edge.evaluation import evaluate
from fad_edge.data import layout
from fad_edge.data.synthetic import write_synthetic_dataset
from helpers import run_cli, tiny_checkpoint

pytestmark = pytest.mark.slow


def _sequence(seed: int, frames: int = 130) -> BaselineSequence:
    rng = np.random.default_rng(seed)
    return BaselineSequence(rng.standard_normal((frames, 56)).astype(np.float32),
                            rng.standard_normal((frames * 4, 80)).astype(np.float32),
                            rng.standard_normal((frames, 56)).astype(np.float32))


def test_baselines_follow_their_definitions():
    train = [_sequence(0), _sequence(1)]
    baselines = Baselines(train, window=64, stride=8)
    test = train[1]
    np.testing.assert_allclose(baselines.predict("Median", test)[5], np.median(np.concatenate([s.listener for s in train]), 0))
    np.testing.assert_array_equal(baselines.predict("Mirror", test), test.speaker)
    # a test sequence that is a training sequence finds itself window by window
    np.testing.assert_allclose(baselines.predict("NN motion", test)[:128], test.listener[:128])
    np.testing.assert_allclose(baselines.predict("NN audio", test)[:128], test.listener[:128])
    first, again = baselines.predict("Random", test, 0), baselines.predict("Random", test, 0)
    assert np.array_equal(first, again) and not np.array_equal(first, baselines.predict("Random", test, 1))
    assert all(baselines.predict(name, test).shape == (130, 56) for name in baselines.available(test))
    no_speaker = BaselineSequence(None, test.mel, test.listener)
    assert "Mirror" not in baselines.available(no_speaker)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_synthetic_dataset(root / "data", sessions=4, seconds=5.0, seed=11, image_size=48)
    return root / "data"


def test_evaluate_prints_and_writes_the_paper_table(dataset, tmp_path, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", checkpoint, "--data", dataset,
                           "--out", tmp_path / "report", "--samples", "2", "--start-noise", "1",
                           "--steps-curve", "1,3")
    assert code == 0, output
    report = json.loads((tmp_path / "report.json").read_text())
    assert list(report["rows"]) == ["NN motion", "NN audio", "Random", "Mirror", "Median", "FAD", "GT"]
    for group in ("expression", "rotation"):
        assert report["rows"]["FAD"][group]["L2"] > 0 and report["rows"]["GT"][group]["L2"] == 0
        assert report["rows"]["FAD"][group]["diversity"] > 0  # two noisy draws differ
    # per frame, the 56-dim norm lies between the larger group's norm and the sum of both
    rows = report["rows"]["FAD"]
    groups = (rows["expression"]["L2"], rows["rotation"]["L2"])
    assert max(groups) <= rows["all"]["L2"] <= sum(groups) + 1e-9
    markdown = (tmp_path / "report.md").read_text()
    assert "| Median |" in markdown and "Frechet" in markdown and "all-56 L2" in markdown
    assert (tmp_path / "report_steps.png").stat().st_size > 5000
    curve = json.loads((tmp_path / "report_steps.json").read_text())
    assert set(curve) == {"1", "3"} and curve["3"]["expression"]["L2"] > 0


def test_an_empty_split_is_a_clear_error(dataset, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    splits = layout.read_splits(copy)
    layout.write_splits(copy, {**splits, "test": []})
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "ck"),
                           "--data", copy, "--out", tmp_path / "r")
    assert code == 2 and "Traceback" not in output and "test" in output


def test_a_checkpoint_with_broken_normalization_is_refused(dataset, tmp_path, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    info_path = checkpoint / "model.json"
    info = json.loads(info_path.read_text())
    info["normalization"]["std"] = [0.0] * 56
    info_path.write_text(json.dumps(info))
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", checkpoint, "--data", dataset,
                           "--out", tmp_path / "r")
    assert code == 2 and "normalization" in output and "Traceback" not in output


def test_too_few_frames_for_the_metrics_is_a_clear_error(tmp_path, monkeypatch, capsys):
    write_synthetic_dataset(tmp_path / "short", sessions=3, seconds=2.0, seed=1, image_size=48)
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "ck"),
                           "--data", tmp_path / "short", "--out", tmp_path / "r")
    assert code == 2 and "frames" in output and "Traceback" not in output


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_on_cuda_matches_the_cpu(dataset, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    on_cpu = evaluate([("FAD", load_checkpoint(checkpoint))], dataset, device="cpu").rows["FAD"]
    on_gpu = evaluate([("FAD", load_checkpoint(checkpoint))], dataset, device="cuda").rows["FAD"]
    for group in ("expression", "rotation", "all"):
        # cuDNN may run the convolutions in TF32: close, not equal.
        assert on_gpu[group]["L2"] == pytest.approx(on_cpu[group]["L2"], rel=1e-2)
