"""Bad or awkward input to evaluate, bench, profile and demo: a clear one-line refusal, or a run that is right."""

from __future__ import annotations

import json
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from helpers import capture_train_configs, run_cli, stop_at, tiny_checkpoint

from fad_edge.cli import main
from fad_edge.cli.validate import check_disk
from fad_edge.models.presets import preset
from fad_edge.resources import readable_size

Usage = namedtuple("Usage", "total used free")


class BenchReached(Exception):
    """Raised in place of the bench's work: its arguments passed the CLI's checks."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from fad_edge.data.synthetic_dataset import write_synthetic_dataset

    root = tmp_path_factory.mktemp("checks")
    write_synthetic_dataset(root / "data", sessions=4, seconds=5.0, seed=11, image_size=48)
    return root / "data"


def _one_line_refusal(code: int, output: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output


@pytest.mark.slow
def test_evaluate_feeds_each_checkpoint_inputs_of_its_own_image_size(dataset, tmp_path):
    from fad_edge.checkpoint import load_checkpoint
    from fad_edge.evaluation import evaluate

    small = load_checkpoint(tiny_checkpoint(tmp_path / "small"))
    large = load_checkpoint(tiny_checkpoint(tmp_path / "large", image_size=48))
    assert (small.config.image_size, large.config.image_size) == (32, 48)
    both = evaluate([("small", small), ("large", large)], dataset, react=None)
    alone = evaluate([("large", large)], dataset, react=None)
    assert both.rows["large"] == alone.rows["large"]
    assert both.rows["small"]["expression"]["L2"] > 0


@pytest.mark.slow
def test_evaluate_keeps_a_row_per_checkpoint_of_the_same_config(dataset, tmp_path, monkeypatch, capsys):
    first = tiny_checkpoint(tmp_path / "seed0" / "best", seed=0)
    second = tiny_checkpoint(tmp_path / "seed1" / "best", seed=1)
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", first, "--checkpoint", second,
                           "--data", dataset, "--no-react", "--out", tmp_path / "report")
    assert code == 0, output
    labels = ["FAD (both, context 0, seed0/best)", "FAD (both, context 0, seed1/best)"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row for row in report["rows"] if row.startswith("FAD")] == labels
    assert report["rows"][labels[0]] != report["rows"][labels[1]]
    assert list(report["samplers"]) == labels
    markdown = (tmp_path / "report.md").read_text()
    assert all(f"| {label} |" in markdown for label in labels)
    assert output.count("seed0/best") >= 2 and output.count("seed1/best") >= 2  # both groups' tables
    assert max(len(line) for line in output.splitlines()) <= 80


def test_model_labels_are_distinct_and_short():
    from fad_edge.cli.evaluate_commands import model_labels

    tiny, ablated = preset("tiny"), preset("tiny", modalities="audio")
    assert model_labels([tiny], [Path("a")]) == ["FAD"]
    assert model_labels([tiny, ablated], [Path("a/best"), Path("b/best")]) == [
        "FAD (both, context 0)", "FAD (audio, context 0)"]
    assert model_labels([tiny, tiny, ablated, tiny], [Path("x/best"), Path("x/best"), Path("y"), Path("z/best")]) == [
        "FAD (both, context 0, x/best)", "FAD (both, context 0, x/best #2)", "FAD (audio, context 0)",
        "FAD (both, context 0, z/best)"]


def _bench_reached(monkeypatch) -> list:
    import fad_edge.bench.run as bench_run

    return stop_at(monkeypatch, bench_run, "run_bench", BenchReached)


@pytest.mark.parametrize(("frames", "advice"), [("12", "use 8 or 16"), ("3", "use 8"), ("8,20", "use 16 or 24")])
def test_bench_refuses_fad_frames_that_are_not_whole_clips(frames, advice, tmp_path, monkeypatch, capsys):
    seen = _bench_reached(monkeypatch)
    code, output = run_cli(monkeypatch, capsys, "bench", "--preset", "tiny", "--frames", frames, "--runs", "1",
                           "--pipelines", "fad", "--no-stream", "--out", tmp_path / "bench")
    _one_line_refusal(code, output)
    assert "--frames" in output and "multiple of 8" in output and advice in output and not seen


def test_bench_refuses_throughput_frames_that_are_not_whole_clips(tmp_path, monkeypatch, capsys):
    seen = _bench_reached(monkeypatch)
    code, output = run_cli(monkeypatch, capsys, "bench", "--preset", "tiny", "--frames", "8", "--device", "cpu",
                           "--throughput-frames", "1000,1001", "--out", tmp_path / "bench")
    _one_line_refusal(code, output)
    assert "--throughput-frames" in output and "1001" in output and not seen


def test_bench_takes_any_frame_count_for_the_replicas_alone(tmp_path, monkeypatch):
    seen = _bench_reached(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["fad-edge", "bench", "--preset", "tiny", "--frames", "12", "--pipelines",
                                      "deca", "--out", str(tmp_path / "bench")])
    with pytest.raises(BenchReached):
        main()
    assert seen[0].frames == [12]


def test_profile_refuses_more_than_100_steps_before_any_work(tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "profile", tmp_path / "no-export", "--steps", "1000", "--runs", "1")
    _one_line_refusal(code, output)
    assert "--steps" in output and "100" in output


@pytest.fixture
def no_dataset_writes(monkeypatch) -> None:
    """Writing a synthetic dataset fails the test (a refusal must come first)."""
    import fad_edge.data.synthetic_dataset as synthetic_dataset

    def refused(*args, **kwargs):
        raise AssertionError("the demo started writing its dataset")

    monkeypatch.setattr(synthetic_dataset, "write_synthetic_dataset", refused)


def test_demo_refuses_a_dataset_the_disk_cannot_hold(no_dataset_writes, tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "demo", "--out", tmp_path / "demo", "--sessions", "100000000",
                           "--steps", "1", "--preset", "tiny")
    _one_line_refusal(code, output)
    assert "--sessions" in output and "free" in output and not (tmp_path / "demo" / "data").exists()


def test_demo_reuses_its_dataset_and_refuses_one_made_with_other_settings_or_a_foreign_folder(
        tmp_path, monkeypatch, capsys):
    from helpers import TrainingStopped

    from fad_edge.data.synthetic_dataset import write_synthetic_dataset

    demo = tmp_path / "demo"
    write_synthetic_dataset(demo / "data", sessions=3, seconds=4.0, seed=2, image_size=32)
    (demo / "demo_summary.json").write_text("{}")  # an earlier run's: gone once this one starts
    trained = capture_train_configs(monkeypatch)
    args = ["demo", "--out", demo, "--steps", "1", "--preset", "tiny", "--sessions", "3", "--seconds", "4"]
    monkeypatch.setattr(sys, "argv", ["fad-edge", *map(str, args), "--seed", "2"])
    with pytest.raises(TrainingStopped):
        main()
    assert trained and trained[0].max_steps == 1 and not (demo / "demo_summary.json").exists()
    capsys.readouterr()  # that run's stage lines
    for other, value in (("--sessions", "96"), ("--seconds", "20"), ("--seed", "0")):
        changed = [*args, "--seed", "2"]
        changed[changed.index(other) + 1] = value
        code, output = run_cli(monkeypatch, capsys, *changed)
        _one_line_refusal(code, output)
        assert "an earlier demo's dataset of 3 sessions of 4 s (seed 2)" in " ".join(output.split())
    (demo / "thesis.tex").write_text("mine")
    code, output = run_cli(monkeypatch, capsys, *args, "--seed", "2")
    _one_line_refusal(code, output)
    assert "holds 'thesis.tex', which the demo does not write" in output and (demo / "thesis.tex").exists()


def test_the_demos_outputs_table_keeps_each_path_on_one_line_at_80_columns():
    import io

    from rich.console import Console

    from fad_edge.bench.tables import print_table
    from fad_edge.cli.demo_command import outputs_table

    for folder, stacked in (("demo_out", False), ("/home/someone/experiments/2026/listener/demo_final", True)):
        outputs = [("dataset", f"{folder}/data"), ("listener motion", f"{folder}/generate/listener_coeffs.npy")]
        out = io.StringIO()
        print_table(Console(file=out, width=80), outputs_table(outputs, 300.4))
        text = out.getvalue()
        assert all(len(line) <= 80 for line in text.splitlines()) and "fad-edge demo (300 s)" in text
        assert all(path in text for _, path in outputs)  # whole, never folded across lines
        assert ("  where: " in text) == stacked


def test_the_disk_check_prints_small_sizes_in_a_unit_that_shows_them(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2**30, 2**30 - 3 * 2**20, 3 * 2**20))
    with pytest.raises(Exception) as refusal:
        check_disk(tmp_path, 50 * 2**20, "the dataset")
    message = str(refusal.value)
    assert "needs at least 50 MiB" in message and "3 MiB free" in message and "0.0" not in message


def test_readable_sizes_keep_their_digits():
    assert [readable_size(n) for n in (512, 1536, 1.25 * 2**20, 1023.9 * 2**20, 2**30, 3.456 * 2**30)] == [
        "512 bytes", "1.5 KiB", "1.25 MiB", "1,024 MiB", "1 GiB", "3.46 GiB"]
    # --frames 99999999999999999999 asked for 166702270507812512.0 GiB
    assert [readable_size(n) for n in (2.5 * 2**40, 1.79e20, 2**60 * 3e6)] == ["2.5 TiB", "155 EiB", "3e+06 EiB"]
    assert readable_size(999.6 * 2**30) == "1,000 GiB"  # not "1e+03 GiB"
    assert readable_size(10**400).startswith("more than 1.56e+290 EiB")  # an integer beyond any float


def test_generate_never_writes_into_a_dataset(dataset, tmp_path, monkeypatch, capsys):
    session = dataset / "session_000"
    truth = (session / "listener_coeffs.npy").read_bytes()
    (tmp_path / "linked").symlink_to(session)
    checkpoint = tiny_checkpoint(tmp_path / "ck")
    for out, fragment in ((session, "is a dataset session"), (tmp_path / "linked", "is a dataset session"),
                          (dataset / "generated", f"inside the dataset {dataset.resolve()}"),
                          (session / "deeper", "inside the dataset")):
        code, output = run_cli(monkeypatch, capsys, "generate", "--model", checkpoint,
                               "--video", session / "speaker.mp4", "--out", out)
        _one_line_refusal(code, output)
        assert fragment in output, output
    assert (session / "listener_coeffs.npy").read_bytes() == truth and not (dataset / "generated").exists()


def test_an_output_reached_by_a_link_is_still_the_input(tmp_path):
    import typer

    from fad_edge.cli.validate import check_not_inputs

    video = tmp_path / "talk.mp4"
    video.write_bytes(b"video")
    (tmp_path / "soft.png").symlink_to(video)
    (tmp_path / "hard.png").hardlink_to(video)
    for out in (tmp_path / "soft.png", tmp_path / "hard.png", tmp_path / "." / "talk.mp4"):
        with pytest.raises(typer.BadParameter, match="would replace the input"):
            check_not_inputs([out], [None, video])
    check_not_inputs([tmp_path / "saliency.png", tmp_path / "talk"], [video, None])  # beside it: fine


@pytest.mark.parametrize("backend, device, hint", [
    ("ort", "cuda", "for a GPU use --backend trt or ort-cuda or ort-trt"),
    ("cuda", "cpu", "for a CPU use --backend torch"),
    ("ort-cuda", "cpu", "for a CPU use --backend ort"),
])
def test_the_device_hint_names_only_backends_that_read_the_same_folder(backend, device, hint, tmp_path, monkeypatch,
                                                                      capsys):
    code, output = run_cli(monkeypatch, capsys, "generate", "--model", tmp_path / "model", "--backend", backend,
                           "--device", device, "--video", tmp_path / "v.mp4", "--out", tmp_path / "o")
    _one_line_refusal(code, output)
    assert output.strip().endswith(f"{hint}"), output


def test_synth_refuses_an_odd_image_size_its_video_could_not_keep(no_dataset_writes, tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "synth", "--out", tmp_path / "d", "--sessions", "3", "--seconds",
                           "2", "--image-size", "129")
    _one_line_refusal(code, output)
    assert "--image-size" in output and "129 is odd" in output and not (tmp_path / "d").exists()
