"""Baselines as Learning to Listen defines them, and `fad-edge evaluate` end to end on tiny data."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_checkpoint
from rich.console import Console

from fad_edge.baselines import Baselines, BaselineSequence
from fad_edge.bench.tables import min_width, print_table
from fad_edge.checkpoint import load_checkpoint
from fad_edge.data import layout
from fad_edge.data.synthetic_dataset import write_synthetic_dataset
from fad_edge.evaluation import EvaluationTable, evaluate
from fad_edge.evaluation_report import rich_tables

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
    np.testing.assert_allclose(baselines.predict("Median", test)[5],
                               np.median(np.concatenate([s.listener for s in train]), 0))
    np.testing.assert_array_equal(baselines.predict("Mirror", test), test.speaker)
    # a test sequence that is a training sequence finds itself window by window
    np.testing.assert_allclose(baselines.predict("NN motion", test)[:128], test.listener[:128])
    np.testing.assert_allclose(baselines.predict("NN audio", test)[:128], test.listener[:128])
    first, again = baselines.predict("Random", test, 0), baselines.predict("Random", test, 0)
    assert np.array_equal(first, again) and not np.array_equal(first, baselines.predict("Random", test, 1))
    assert all(baselines.predict(name, test).shape == (130, 56) for name in baselines.available(test))
    no_speaker = BaselineSequence(None, test.mel, test.listener)
    assert "Mirror" not in baselines.available(no_speaker)


def _direct_ranking(index, query: np.ndarray, count: int) -> np.ndarray:
    """The search the shortlist must agree with: every window's distance summed directly, ties to the lowest index."""
    standardized = ((query - index.mean) / index.std).astype(np.float32)
    distances = np.square(index.keys[:, : len(query)] - standardized[None]).sum(axis=(1, 2))
    return np.argsort(distances, kind="stable")[:count]


@pytest.mark.parametrize("spread", [1.0, 1e3])  # queries among the training windows, and far from all of them
def test_nearest_windows_match_a_direct_search_ties_and_short_windows_included(spread, monkeypatch):
    from fad_edge import baselines
    from fad_edge.baselines import _WindowIndex

    monkeypatch.setattr(baselines, "SHORTLIST_BLOCK", 3)  # shortlists span several blocks

    rng = np.random.default_rng(7)
    features = [rng.standard_normal((200, 12)).astype(np.float32) for _ in range(5)]
    features.append(features[0].copy())  # every window of session 0 twice: exact ties
    # every window of session 1 again, a rounding error away: near ties that a product alone ranks by its rounding
    features.append(features[1] * np.float32(1 + 3e-7))
    listeners = [rng.standard_normal((200, 56)).astype(np.float32) for _ in features]
    index = _WindowIndex(features, listeners, window=32, stride=4)
    # near copies of training windows (the close calls), a whole copy (a tie), random ones, and short ones
    queries = [features[2][40:72] + rng.standard_normal((32, 12)).astype(np.float32) * 1e-3 * spread,
               features[0][8:40].copy(), rng.standard_normal((32, 12)).astype(np.float32) * spread,
               features[3][100:117] * 1.01, rng.standard_normal((1, 12)).astype(np.float32)]
    queries += [features[1][start : start + 32] + rng.standard_normal((32, 12)).astype(np.float32) * spread
                for start in range(0, 160, 8)]
    for count in (1, 5):
        found = index.nearest_ranked_many(queries, count)
        for query, answer in zip(queries, found, strict=True):
            expected = index.values[_direct_ranking(index, query, count), : len(query)]
            np.testing.assert_array_equal(answer, expected)
    tied = _direct_ranking(index, queries[1], 2)
    assert tied[0] < tied[1] and np.array_equal(index.keys[tied[0]], index.keys[tied[1]])  # the lower index first


def test_baselines_give_m_draws_where_they_can():
    train = [_sequence(0), _sequence(1)]
    baselines = Baselines(train, window=64, stride=8)
    test = _sequence(2)
    for name in baselines.available(test):
        draws = baselines.draws(name, test, index=3, count=4)
        np.testing.assert_array_equal(draws[0], baselines.predict(name, test, 3))  # the first is predict's answer
        assert all(d.shape == (130, 56) for d in draws)
        if name in ("Mirror", "Median"):
            assert len(draws) == 1
        else:
            assert len(draws) == 4 and not np.array_equal(draws[0], draws[1])
    # NN's draw k is the k-th nearest window: a training sequence finds itself first, then something else
    own = baselines.draws("NN motion", train[1], count=2)
    np.testing.assert_allclose(own[0][:128], train[1].listener[:128])
    assert not np.allclose(own[1][:64], train[1].listener[:64])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    write_synthetic_dataset(root / "data", sessions=4, seconds=5.0, seed=11, image_size=48)
    return root / "data"


def test_evaluate_prints_and_writes_the_paper_table(dataset, tmp_path, monkeypatch, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", checkpoint, "--data", dataset,
                           "--out", tmp_path / "lr1.5e-3",  # a dot in the name is not a suffix
                           "--samples", "2", "--start-noise", "1",
                           "--steps-curve", "1,3")
    assert code == 0, output
    report = json.loads((tmp_path / "lr1.5e-3.json").read_text(), parse_constant=refuse_non_json)
    assert list(report["rows"]) == ["NN motion", "NN audio", "Random", "Mirror", "Median", "FAD", "GT"]
    for group in ("expression", "rotation"):
        assert report["rows"]["FAD"][group]["L2"] > 0 and report["rows"]["GT"][group]["L2"] == 0
        assert report["rows"]["FAD"][group]["diversity"] > 0  # two noisy draws differ
        assert report["rows"]["FAD"][group]["P-FD"] > 0
        assert report["rows"]["GT"][group]["P-FD"] == pytest.approx(0, abs=1e-6)
    # the test session is 144 frames: shorter than one REACT window of 256, so that table is left out, and said so
    assert report["react"] is None and any("REACT metrics: skipped" in note for note in report["notes"])
    # 144 frames against the expression's 50 dims: its per-sequence FD is said to be weak; the rotation's is not
    assert [note.split(":")[0] for note in report["notes"] if "covariance" in note] == ["expression"]
    assert report["rows"]["FAD"]["expression"]["FD pooled"] > 0 and "rot P-FD" in output
    # per frame, the 56-dim norm lies between the larger group's norm and the sum of both
    rows = report["rows"]["FAD"]
    groups = (rows["expression"]["L2"], rows["rotation"]["L2"])
    assert max(groups) <= rows["all"]["L2"] <= sum(groups) + 1e-9
    markdown = (tmp_path / "lr1.5e-3.md").read_text()
    assert "| Median |" in markdown and "Frechet" in markdown and "all-56 L2" in markdown and "P-FD" in markdown
    assert "Pooled over the whole split" in markdown
    assert (tmp_path / "lr1.5e-3_steps.png").stat().st_size > 5000
    curve = json.loads((tmp_path / "lr1.5e-3_steps.json").read_text())
    assert set(curve) == {"1", "3"} and curve["3"]["expression"]["L2"] > 0
    assert not (tmp_path / "lr1.json").exists()


def test_sessions_a_model_was_trained_on_are_named_in_a_note_whatever_their_split_or_name():
    from types import SimpleNamespace

    from fad_edge.digests import motion_fingerprint
    from fad_edge.evaluation import in_sample_notes

    rng = np.random.default_rng(0)
    sessions = [rng.standard_normal((45, 56)).astype(np.float32) for _ in range(3)]
    trained = SimpleNamespace(info={"train_motion_fingerprints": [motion_fingerprint(sessions[1])]})
    older = SimpleNamespace(info={})  # a checkpoint saved before fingerprints were recorded: nothing to say
    notes = in_sample_notes([("FAD", trained), ("old", older)], sessions, "test")
    assert notes == ["FAD: 1 of the 3 test sessions were in its training data, so its figures are in-sample for them"]
    # The fingerprint is of the whole clips the model reads: a copy cut to them is the same session.
    assert motion_fingerprint(sessions[1][:40]) == motion_fingerprint(sessions[1])
    assert in_sample_notes([("FAD", trained)], [sessions[0], sessions[2]], "test") == []


def refuse_non_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


@pytest.mark.parametrize("width", [40, 60, 80])
def test_the_tables_show_small_figures_apart_and_long_labels_whole(width):
    """At 80 columns the labels fold; narrower than the numbers need, each row is stacked lines."""
    long_a, long_b = "FAD (both, context 0, runs/experiment_a/best)", "FAD (both, context 0, runs/experiment_b/best)"
    table = EvaluationTable("test", ["s"], 600)
    for name, rotation_fd in (("NN motion", 0.00086), (long_a, 0.00036), (long_b, 0.00074)):
        group = {"L2": 0.279, "FD": 0.059, "FD pooled": 0.0123, "P-FD": 0.1, "P-FD pooled": 0.2, "SI": 4.2,
                 "TLCC lag": 53.5, "TLCC r": 0.031}
        table.rows[name] = {"expression": group, "rotation": {**group, "FD": rotation_fd, "FD pooled": 0.00001},
                            "all": {"L2": 0.282}}
    console = Console(width=width, record=True, file=io.StringIO())
    tables = rich_tables(table, "test")
    for rich_table in tables:
        print_table(console, rich_table)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
    assert all(f in text for f in ("0.000360", "0.000740", "0.000860", "0.0000100", "0.0123", "53.5", "0.100"))
    assert text.count("experiment_a/best") == 3 and text.count("experiment_b/best") == 3  # folded, not cut
    assert ("TLCC lag: 53.5" in text) == (width < min(min_width(t) for t in tables))  # stacked only when narrow


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


def test_evaluate_adds_the_react_table(dataset, tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "ck"),
                           "--data", dataset, "--out", tmp_path / "report", "--react-window", "64",
                           "--react-samples", "3")
    assert code == 0, output
    react = json.loads((tmp_path / "report.json").read_text())["react"]
    assert react["windows"] == 2 and react["samples"] == 3 and react["source"] == "alternatives"
    rows = react["rows"]
    assert list(rows) == ["NN motion", "NN audio", "Random", "Mirror", "Median", "FAD", "Alternatives", "GT held out"]
    for group in ("expression", "rotation"):
        assert set(rows["FAD"][group]) == {"FRCorr", "FRDist", "FRDiv", "FRDvs", "FRVar", "FRSyn"}
        assert rows["FAD"][group]["FRDiv"] > 0  # sampled at start noise 1: the seeds differ
        assert rows["Random"][group]["FRDiv"] > 0 and rows["Mirror"][group]["FRDiv"] is None  # NaN: JSON's null
        assert -1 <= rows["Alternatives"][group]["FRCorr"] < 1  # scored without itself
        assert rows["GT held out"][group]["FRDist"] > 0
        ratio = react["ratios"]["FAD"][group]["FRDiv / Alternatives"]
        assert ratio == pytest.approx(rows["FAD"][group]["FRDiv"] / rows["Alternatives"][group]["FRDiv"])
    assert "FRCorr" in output and "start noise 1" in output
    markdown = (tmp_path / "report.md").read_text()
    assert "### REACT metrics" in markdown and "| Alternatives |" in markdown


def test_draws_encode_once_and_match_one_run_per_seed(dataset):
    from fad_edge.checkpoint import load_checkpoint
    from fad_edge.model_draws import draws, encode_inputs, sample_encoded
    from fad_edge.runtime.torch_runner import TorchRunner
    from fad_edge.samples import split_samples

    loaded = load_checkpoint(tiny_checkpoint(dataset.parent / "ck_draws"))
    runner = TorchRunner(loaded.model)
    runner.settings = dataclasses.replace(runner.settings, start_noise=1.0)
    sample = split_samples(loaded.config, dataset, "test")[0]
    samples = draws(runner, sample.inputs, 2)
    for seed, draw in enumerate(samples):
        runner.seed = seed
        np.testing.assert_array_equal(draw, runner.run_inputs(sample.inputs))
    assert not np.array_equal(samples[0], samples[1])
    # sampling only the clips a window needs gives the same first frames (one step: the same start noise)
    first = sample_encoded(runner, encode_inputs(runner, sample.inputs), 1, frames=70)
    np.testing.assert_allclose(first, samples[1][:70], rtol=1e-6, atol=1e-6)


def test_a_broken_alternatives_file_is_a_clear_error(dataset, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    session = layout.read_splits(copy)["test"][0]
    np.save(copy / session / layout.LISTENER_ALTERNATIVES, np.zeros((2, 10, 56), np.float32))
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", tiny_checkpoint(tmp_path / "ck"),
                           "--data", copy, "--out", tmp_path / "r", "--react-window", "64")
    assert code == 2 and "Traceback" not in output and layout.LISTENER_ALTERNATIVES in output
