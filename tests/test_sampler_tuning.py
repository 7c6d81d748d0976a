"""`fad-edge evaluate --sampler` and the diverse sampler's calibration (`fad-edge tune-sampler`) on tiny data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import run_cli, tiny_checkpoint

import fad_edge.sampler_tuning as sampler_tuning
from fad_edge.appropriate import ReactSession, build_windows
from fad_edge.checkpoint import MODEL_JSON, MODEL_WEIGHTS, load_checkpoint
from fad_edge.data.synthetic_dataset import write_synthetic_dataset
from fad_edge.errors import FadEdgeError
from fad_edge.evaluation import encoded_split, score_settings
from fad_edge.sampler_tuning import (
    FRDIV_RATIO,
    MAX_GRID_SETTINGS,
    DiversityReference,
    GridRow,
    SamplerGrid,
    choose,
    choose_by_diversity,
    run_grid,
    write_calibrated_copy,
)
from fad_edge.sampling import SamplerSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    write_synthetic_dataset(root / "data", sessions=4, seconds=5.0, seed=11, image_size=48)
    return root / "data"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model whose "mean" sampler starts from the mean motion, as the small preset's does."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "ck", sample_start_noise=0.0)


def test_evaluate_names_the_sampler_it_drew_with(dataset, checkpoint, tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", checkpoint, "--data", dataset,
                           "--out", tmp_path / "diverse", "--sampler", "diverse", "--samples", "2",
                           "--steps-curve", "1,2", "--react-window", "64", "--react-samples", "2")
    assert code == 0, output
    report = json.loads((tmp_path / "diverse.json").read_text())
    entry = report["samplers"]["FAD"]
    assert entry["sampler"] == "diverse" and entry["samples"] == 2
    assert entry["settings"] == {"steps": 1, "start_step": 70, "clip_sample": 6.0, "start_noise": 1.0,
                                 "temperature": 1.0, "rotation_noise": 1.0}
    said = " ".join(output.split())  # rich wraps long lines at 80 columns
    assert "FAD: sampler diverse (1 step from t = 70, start noise 1, temperature 1); 2 samples per clip" in said
    assert "- FAD: sampler diverse" in (tmp_path / "diverse.md").read_text()
    assert all(report["rows"]["FAD"][g]["diversity"] > 0 for g in ("expression", "rotation"))
    assert report["react"]["rows"]["FAD"]["expression"]["FRDiv"] > 0  # drawn as calibrated, no start noise forced
    code, output = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", checkpoint, "--data", dataset,
                           "--out", tmp_path / "mean", "--samples", "2", "--react-window", "64",
                           "--react-samples", "2")
    assert code == 0, output
    report = json.loads((tmp_path / "mean.json").read_text())
    assert report["samplers"]["FAD"]["sampler"] == "mean" and report["samplers"]["FAD"]["settings"]["start_noise"] == 0
    assert report["rows"]["FAD"]["expression"]["diversity"] == 0  # the mean start: one answer for every seed
    # The REACT table gives the mean sampler start noise 1, and its samples really differ.
    assert report["react"]["rows"]["FAD"]["expression"]["FRDiv"] > 0 and "start noise set" in " ".join(output.split())


def test_the_rule_takes_the_least_relative_fd_within_the_l2_bound():
    def row(l2: float, fd_exp: float, fd_rot: float) -> GridRow:
        return GridRow("r", SamplerSettings(), {"expression": {"L2": l2, "FD": fd_exp},
                                                "rotation": {"L2": l2 / 10, "FD": fd_rot}})

    rows = [row(1.0, 1.0, 0.01), row(1.1, 0.8, 0.009), row(1.4, 0.1, 0.001), row(1.2, 0.4, 0.012)]
    assert choose(rows, 1.25) == 3  # 0.4 + 1.2 beats 0.8 + 0.9; row 2 drifts too far from the speaker
    assert choose(rows, 1.5) == 2
    assert choose(rows, 1.05) is None


def test_the_frdiv_rule_takes_the_least_relative_l2_among_settings_as_diverse_as_real_listeners():
    def row(l2: float, div_exp: float, div_rot: float) -> GridRow:
        return GridRow("r", SamplerSettings(), {"expression": {"L2": l2, FRDIV_RATIO: div_exp},
                                                "rotation": {"L2": l2 / 10, FRDIV_RATIO: div_rot}})

    rows = [row(1.0, 0.0, 0.0), row(1.2, 0.78, 1.0), row(1.3, 0.85, 1.1), row(1.25, 0.9, 1.3),
            row(1.4, 1.0, 1.0), row(1.1, float("nan"), 1.0)]
    assert choose_by_diversity(rows) == 2  # 1: too little expression diversity; 3: too much head motion
    assert choose_by_diversity(rows, (0.75, 1.25)) == 1
    assert choose_by_diversity(rows, (0.95, 1.05)) == 4
    assert choose_by_diversity(rows, (2.0, 3.0)) is None


def test_frdiv_ratios_compare_samples_for_one_speaker_with_the_alternative_listeners():
    rng = np.random.default_rng(0)
    listener, alternatives = rng.normal(size=(128, 56)), rng.normal(size=(3, 128, 56))
    alternatives[..., 50:] *= 0.1  # the rotation group varies less: each group is its own ratio
    windows = build_windows([ReactSession("s", listener, alternatives=alternatives)], window=64, neighbours=5)
    assert windows is not None and windows.source == "alternatives" and len(windows.names) == 2
    as_draws = [[a] for a in alternatives]  # draws[seed][session]: the 3 alternatives as 3 seeds of 1 session
    raw = DiversityReference(windows, {"expression": 1.0, "rotation": 1.0}, samples=3).ratios(as_draws)
    assert raw["expression"] == pytest.approx(2.0, rel=0.1)  # unit-variance noise: E (a - b)^2 = 2
    reference = DiversityReference(windows, raw, samples=3)
    assert reference.ratios(as_draws) == pytest.approx({"expression": 1.0, "rotation": 1.0})
    assert raw["rotation"] == pytest.approx(raw["expression"] * 0.01, rel=0.2)
    halved = [[listener + (a - listener) * 0.5] for a in alternatives]  # half the spread: a quarter of the MSE
    assert reference.ratios(halved) == pytest.approx({"expression": 0.25, "rotation": 0.25})
    assert reference.ratios([[listener]] * 3) == {"expression": 0.0, "rotation": 0.0}


def test_the_grid_scores_the_mean_sampler_first_and_each_distinct_setting_once(dataset, checkpoint):
    loaded = load_checkpoint(checkpoint)
    grid = SamplerGrid(start_steps=(50, 70), steps=(1, 2), temperatures=(1.0, 0.5))
    candidates = grid.candidates(loaded.config)
    assert len(candidates) == 6  # the temperature is tried only where there is more than one step
    rotation = SamplerGrid(start_steps=(70,), steps=(1, 2), rotation_noises=(1.0, 0.5)).candidates(loaded.config)
    assert [(s.steps, s.rotation_noise) for s in rotation] == [(1, 1.0), (2, 1.0), (2, 0.5)]
    with pytest.raises(FadEdgeError, match="rotation noise 3"):
        SamplerGrid(start_steps=(70,), rotation_noises=(3.0,)).candidates(loaded.config)
    report = run_grid(loaded, dataset, "val", grid, samples=2)
    assert [r.name for r in report.rows] == ["mean", "#1", "#2", "#3", "#4", "#5", "#6"]
    assert report.rows[0].settings == SamplerSettings.named("mean", loaded.config)
    assert [r.settings for r in report.rows[1:]] == candidates
    runner, encoded, truths = encoded_split(loaded, dataset, "val")
    again = score_settings(runner, encoded, truths, candidates[2], samples=2)
    assert report.rows[3].scores == again  # seeds 0..1, from the same encoding: repeatable
    assert report.rows[0].scores["expression"]["diversity"] == 0 < report.rows[1].scores["expression"]["diversity"]
    assert report.chosen == choose(report.rows, report.max_l2_ratio)
    with pytest.raises(FadEdgeError, match="start step 100"):
        SamplerGrid(start_steps=(100,)).candidates(loaded.config)


def test_tune_sampler_writes_a_calibrated_copy_and_leaves_the_input_alone(dataset, checkpoint, tmp_path,
                                                                          monkeypatch, capsys):
    before = (checkpoint / MODEL_JSON).read_bytes()
    copy = tmp_path / "calibrated"
    code, output = run_cli(monkeypatch, capsys, "tune-sampler", "--checkpoint", checkpoint, "--data", dataset,
                           "--start-steps", "60,70", "--steps", "1,3", "--temperature", "0.5",
                           "--rotation-noise", "0.7", "--samples", "1",
                           "--out", tmp_path / "grid", "--write-to", copy, "--pick", "2")
    assert code == 0, output
    assert (checkpoint / MODEL_JSON).read_bytes() == before
    report = json.loads((tmp_path / "grid.json").read_text())
    assert [row["name"] for row in report["rows"]] == ["mean", "#1", "#2", "#3", "#4"]
    assert "| setting |" in (tmp_path / "grid.md").read_text() and "rot FD" in output
    assert output.splitlines()[0] == "sampling 4 settings and the mean sampler on the val split"
    assert "optimistic" not in output  # val: the split a choice is made on
    written = [line for line in output.splitlines() if line.startswith("wrote ")]
    assert written[0] == f"wrote {tmp_path / 'grid.json'} and {tmp_path / 'grid.md'}"  # whole, however long
    assert written[1].startswith(f"wrote {copy}: diverse sampler #2")
    assert all(len(line) <= 80 for line in output.splitlines() if line not in written)
    loaded = load_checkpoint(copy)
    assert SamplerSettings.named("diverse", loaded.config) == SamplerSettings(3, 60, 6.0, 1.0, 0.5, 0.7)  # row #2
    assert (copy / MODEL_WEIGHTS).read_bytes() == (checkpoint / MODEL_WEIGHTS).read_bytes()
    assert loaded.config.sample_start_noise == 0.0  # everything else as it was
    code, output = run_cli(monkeypatch, capsys, "tune-sampler", "--checkpoint", checkpoint, "--data", dataset,
                           "--write-to", copy)
    assert code == 2 and "--overwrite" in output and "Traceback" not in output


def test_tune_sampler_on_the_test_split_says_its_figures_stop_being_held_out(dataset, checkpoint, tmp_path,
                                                                            monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "tune-sampler", "--checkpoint", checkpoint, "--data", dataset,
                           "--split", "test", "--start-steps", "70", "--steps", "1", "--temperature", "1",
                           "--samples", "1", "--out", tmp_path / "grid")
    assert code == 0, output
    assert "note: a setting chosen on the test split makes that split's figures optimistic" in output


def test_tune_sampler_chooses_by_frdiv_where_the_data_has_alternative_listeners(dataset, checkpoint, tmp_path,
                                                                                monkeypatch, capsys):
    args = ["tune-sampler", "--checkpoint", checkpoint, "--start-steps", "70", "--steps", "1,3",
            "--temperature", "0.5,1.5", "--samples", "1", "--rule", "frdiv", "--react-window", "64",
            "--react-samples", "3"]
    code, output = run_cli(monkeypatch, capsys, *args, "--data", dataset, "--out", tmp_path / "grid")
    assert code == 0, output
    report = json.loads((tmp_path / "grid.json").read_text())
    assert report["rule"] == "frdiv" and report["react_samples"] == 3
    rows = [GridRow(r["name"], SamplerSettings(**r["settings"]), r["scores"]) for r in report["rows"]]
    ratios = [[row.scores[g][FRDIV_RATIO] for g in ("expression", "rotation")] for row in rows]
    assert ratios[0] == [0.0, 0.0]  # the mean sampler: one answer for every seed
    assert ratios[3][0] > ratios[2][0] > 0  # three steps at temperature 1.5 scatter more than at 0.5
    assert report["chosen"] == choose_by_diversity(rows)
    assert "FRDiv / the alternative" in output
    assert all(len(line) <= 80 for line in output.splitlines() if not line.startswith("wrote "))
    assert "FRDiv / alternatives" in (tmp_path / "grid.md").read_text()

    code, output = run_cli(monkeypatch, capsys, *args[:-4], "--react-window", "3000", "--data", dataset,
                           "--out", tmp_path / "long")
    assert code == 2 and "3000 frames long" in output and "Traceback" not in output
    bare = tmp_path / "bare"
    shutil.copytree(dataset, bare)
    for alternatives in bare.glob("*/listener_alternatives.npy"):
        alternatives.unlink()
    code, output = run_cli(monkeypatch, capsys, *args, "--data", bare, "--out", tmp_path / "bare_grid")
    assert code == 2 and "no alternative listeners" in output and "--rule fd" in " ".join(output.split())
    assert not (tmp_path / "bare_grid.json").exists()
    code, output = run_cli(monkeypatch, capsys, *args[:-6], "--rule", "best", "--data", dataset,
                           "--out", tmp_path / "unknown")
    assert code == 2 and "unknown rule 'best'" in output

    # A narrower band keeps a margin from the edges: the choice is made within it and it is reported.
    code, output = run_cli(monkeypatch, capsys, *args, "--frdiv-band", "0.85,1.2", "--data", dataset,
                           "--out", tmp_path / "narrow")
    assert code == 0, output
    narrow = json.loads((tmp_path / "narrow.json").read_text())
    assert narrow["frdiv_range"] == [0.85, 1.2] and narrow["chosen"] == choose_by_diversity(rows, (0.85, 1.2))
    assert "within 0.85-1.2x" in " ".join(output.split())
    for band, message in (("0.9", "two ratios"), ("1.2,0.8", "0 < low < high"), ("0,1", "0 < low < high")):
        code, output = run_cli(monkeypatch, capsys, *args, "--frdiv-band", band, "--data", dataset,
                               "--out", tmp_path / "bad")
        assert code == 2 and message in output and "Traceback" not in output, output
    assert not (tmp_path / "bad.json").exists()


def test_a_calibrated_copy_is_written_whole_and_replaces_a_folder_only_when_asked(checkpoint, tmp_path):
    target = tmp_path / "in_place"
    write_calibrated_copy(checkpoint, target, SamplerSettings(2, 40, 6.0, 0.8, 1.0))
    with pytest.raises(FadEdgeError, match="is the input checkpoint"):
        write_calibrated_copy(target, target, SamplerSettings(4, 40, 6.0, 0.8, 1.0))
    with pytest.raises(FadEdgeError, match="inside the checkpoint"):
        write_calibrated_copy(target, target / "sub", SamplerSettings(4, 40, 6.0, 0.8, 1.0))
    run = tmp_path / "run"  # a run folder holding a checkpoint, and a dataset: never replaced whole
    shutil.copytree(target, run / "best")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "splits.json").write_text("{}")
    for folder, message in ((run, "holds the checkpoint"), (tmp_path / "data", "holds 'splits.json'")):
        with pytest.raises(FadEdgeError, match=message):
            write_calibrated_copy(run / "best", folder, SamplerSettings(4, 40, 6.0, 0.8, 1.0), overwrite=True)
    with pytest.raises(FadEdgeError, match="holds 'best'"):
        write_calibrated_copy(target, run, SamplerSettings(4, 40, 6.0, 0.8, 1.0), overwrite=True)
    assert (run / "best" / MODEL_JSON).is_file() and (tmp_path / "data" / "splits.json").is_file()
    shutil.rmtree(run)
    shutil.rmtree(tmp_path / "data")
    write_calibrated_copy(target, target, SamplerSettings(4, 40, 6.0, 0.8, 1.0), overwrite=True)
    assert load_checkpoint(target).config.diverse_steps == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in_place"]  # no staging or .old folder left behind
    assert np.array_equal(np.frombuffer((target / MODEL_WEIGHTS).read_bytes(), np.uint8),
                          np.frombuffer((checkpoint / MODEL_WEIGHTS).read_bytes(), np.uint8))


class GridReached(Exception):
    """Raised in place of the grid's sampling: every check before it passed."""


@pytest.fixture
def grid_calls(monkeypatch):
    """Make tune-sampler stop where it would sample; returns the candidates run_grid was given."""
    given: list = []

    def stop(loaded, data, split, grid, *args, **kwargs):
        given.append(grid)
        raise GridReached

    monkeypatch.setattr(sampler_tuning, "run_grid", stop)
    return given


@pytest.mark.parametrize("write_to, overwrite, message", [
    ("run", True, "holds 'best'"), ("data", True, "inside the input folder"),
    ("ck/sub", False, "inside the checkpoint"), ("data_copy", True, "replaces only a checkpoint folder"),
], ids=["a run folder", "inside the dataset", "inside the checkpoint", "another dataset"])
def test_every_write_to_check_comes_before_the_grid(dataset, checkpoint, tmp_path, monkeypatch, capsys, grid_calls,
                                                    write_to, overwrite, message):
    shutil.copytree(checkpoint, tmp_path / "run" / "best")
    shutil.copytree(dataset, tmp_path / "data_copy")
    target = {"data": dataset / "calibrated", "ck/sub": checkpoint / "sub"}.get(write_to, tmp_path / write_to)
    code, output = run_cli(monkeypatch, capsys, "tune-sampler", "--checkpoint", checkpoint, "--data", dataset,
                           "--out", tmp_path / "grid", "--write-to", target, *(["--overwrite"] if overwrite else []))
    assert code == 2 and message in output and "--write-to" in output and not grid_calls, output
    assert len(output.strip().splitlines()) == 1, output


def test_the_grid_is_listed_once_counted_aloud_and_bounded(dataset, checkpoint, tmp_path, monkeypatch, capsys,
                                                          grid_calls):
    with pytest.raises(GridReached):
        run_cli(monkeypatch, capsys, "tune-sampler", "--checkpoint", checkpoint, "--data", dataset,
                "--start-steps", "60,70", "--steps", "1,3", "--temperature", "0.5,1", "--out", tmp_path / "grid")
    assert "sampling 6 settings and the mean sampler" in capsys.readouterr().out
    assert isinstance(grid_calls[0], list) and len(grid_calls[0]) == 6  # the CLI's own list: not listed again
    many = ",".join(str(step) for step in range(60, 99))
    code, output = run_cli(monkeypatch, capsys, "tune-sampler", "--checkpoint", checkpoint, "--data", dataset,
                           "--start-steps", many, "--steps", "1,2,3", "--temperature", "0.5,1", "--out",
                           tmp_path / "grid")
    assert code == 2 and len(grid_calls) == 1 and len(output.strip().splitlines()) == 1, output
    assert f"the grid has 195 settings (from 39 x 3 x 2 values), more than the {MAX_GRID_SETTINGS}" in output
    assert "'--start-steps' / '--steps' / '--temperature'" in output


@pytest.mark.parametrize("grid", [
    SamplerGrid((70,)), SamplerGrid((50, 70, 70), (1, 2, 1), (1.0, 0.5), (1.0, 0.5, 1), (1.0, 0.7)),
    SamplerGrid((60,), (1,), temperatures=(0.5, 1.5), rotation_noises=(0.5, 1.0)), SamplerGrid((60,), (2, 4)),
])
def test_the_grid_size_is_the_number_of_candidates_without_listing_them(checkpoint, grid):
    assert grid.size() == len(grid.candidates(load_checkpoint(checkpoint).config))


def test_listing_a_large_grid_takes_no_time(checkpoint):
    import time

    config = load_checkpoint(checkpoint).config
    grid = SamplerGrid(tuple(range(70, 99)), (1, 2, 3, 4, 5), tuple(i / 10 for i in range(11)),
                       tuple(i / 10 for i in range(12)))
    started = time.perf_counter()
    assert len(grid.candidates(config)) == grid.size() == 29 * 11 * (1 + 4 * 12)
    assert time.perf_counter() - started < 2.0  # listing it with a list's membership test took 20 s


def test_the_grid_tables_are_stacked_where_the_terminal_is_too_narrow_for_their_numbers():
    import io

    from rich.console import Console

    from fad_edge.bench.tables import print_table
    from fad_edge.cli.sampler_commands import _tables
    from fad_edge.sampler_tuning import FRDIV_RATIO, GridReport, GridRow

    scores = {group: {"L2": 0.123456, "FD": 0.00123456, FRDIV_RATIO: 1.23} for group in ("expression", "rotation")}
    rows = [GridRow(name, SamplerSettings(3, 99, 6.0, 1.0, 1.35, 0.55), scores) for name in ("mean", "#1")]
    report = GridReport("ckpt", "val", 14, 8400, 2, 1.1, rows, chosen=1, rule="frdiv", react_samples=4)
    for width, stacked in ((40, True), (80, False)):
        out = io.StringIO()
        console = Console(file=out, width=width)
        for table in _tables(report):
            print_table(console, table)
        text = out.getvalue()
        assert "…" not in text and all(len(line) <= width for line in text.splitlines())
        assert ("  exp FD: 0.00123" in text) == stacked and "0.00123" in text
