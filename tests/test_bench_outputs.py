"""The bench's report logic without a model: tables at any width, notes, per-frame rows, outputs written together,
and the checks made before any work (fakes only: fast)."""

from __future__ import annotations

import errno
import io
import json
import re
import warnings
from pathlib import Path

import pytest
import typer
from helpers import run_cli
from rich.console import Console

import fad_edge.bench.run as bench_run
import fad_edge.bench.timing as timing
import fad_edge.cli.validate as validate
from fad_edge.atomic import atomic_write_together
from fad_edge.bench.labels import shown_label
from fad_edge.bench.profile_report import graph_table, op_table
from fad_edge.bench.report import chart_png, notes, ratio_table, rich_table, throughput_table, write_reports
from fad_edge.bench.run import BenchConfig, Row, nothing_to_measure, ratios, uncounted_reactface_row
from fad_edge.bench.tables import figure_table, min_width, number_column, print_table, text_column
from fad_edge.bench.timing import Latency, summarize
from fad_edge.cli.bench_commands import DEFAULT_OUT, _ints, default_out
from fad_edge.cli.validate import check_output_file, check_outside


def latency(median: float, p99: float | None = None, spread: float = 0.05, runs: int = 30, scale: int = 1) -> dict:
    return {"runs": runs, "median": median, "p90": p99, "p99": p99, "spread": spread, "scale": scale}


def row(pipeline: str, backend: str, frames: int, flops: float, params: int, timing_: dict | None,
        device: str = "cpu") -> dict:
    return {"pipeline": pipeline, "label": pipeline, "backend": backend, "frames": frames, "flops": flops,
            "params": params, "latency": timing_, "note": "", "device": device}


def a_result() -> dict:
    """A CPU bench's result with wide numbers, a per-frame DECA row, a noisy row and one above the GEMM reference."""
    rows = [row("fad", "ort-int8", 1024, 5_609e9, 28_740_000, latency(0.0152, 0.0171)),
            row("fad", "torch", 1024, 5_609e9, 28_740_000, latency(123.4, 300.0, spread=0.87)),
            row("deca", "torch", 1024, 1_030_040e9, 72_330_000, latency(1757.761, scale=1024)),
            row("deca-encoder-only-batched", "torch", 1024, 93_000e9, 26_050_000, latency(42.0, scale=1024)),
            row("reactface-frame", "torch", 1024, float("nan"), 99_320_474, None)]
    rows_ = [Row(**{k: v for k, v in r.items() if k != "latency"},
                 latency=None if r["latency"] is None else Latency(**r["latency"])) for r in rows]
    return {"machine": {"cpu": "AMD EPYC", "cores": 2}, "gemm_gflops": 101.5, "rows": rows,
            "ratios": ratios(rows_, "paper"), "stream": None}


def record(width: int, *tables) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    for table in tables:
        print_table(console, table)
    return console.export_text()


def numbers_in(text: str) -> set[str]:
    return set(re.findall(r"\d[\d,]*(?:\.\d+)?(?:e[-+]\d+)?%?", text))


@pytest.mark.parametrize("width", [40, 57, 66, 80])
def test_bench_tables_never_cut_a_number_at_any_width(width):
    """Below the table's minimum width rich crops number columns silently: then the rows are stacked lines. Above
    it, only the labels fold."""
    result = a_result()
    tables = [rich_table(result), ratio_table(result)]
    wide = record(400, *tables)
    text = record(width, *tables)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    assert "…" not in text
    for number in ("1,030,040", "1,757,761", "15.2", "17.1", "5,609", "28.74", "72.33", "99.32"):
        assert number in wide and number in text.replace("\n", " "), (number, text)
    assert numbers_in(wide) <= numbers_in(text), numbers_in(wide) - numbers_in(text)
    if width in (40, 80):  # stacked, or wide enough for the labels
        assert "deca-encoder-only-batched" in text


def test_the_stack_replaces_the_table_exactly_below_its_minimum_width():
    table = figure_table("t")
    text_column(table, "label")
    number_column(table, "value")
    table.add_row("a row", "123,456,789.0")
    needed = min_width(table)
    assert needed == 9 + 1 + len("123,456,789.0")
    assert "value: 123,456,789.0" in record(needed - 1, table)
    assert "value: " not in record(needed, table) and "123,456,789.0" in record(needed, table)


@pytest.mark.parametrize("width", [40, 80])
def test_profile_tables_never_cut_a_number_at_any_width(width):
    graphs = [{"graph": "video_encoder", "calls": 1.0, "ms": 1234.567, "between_ops_ms": 0.1,
               "ops": [{"op_type": "QLinearConv", "nodes": 13.0, "ms": 1234.0},
                       {"op_type": "InstanceNormalization", "nodes": 12.0, "ms": 0.467}]},
              {"graph": "elnet_x0", "calls": 1.0, "ms": 21.3, "between_ops_ms": 0.3,
               "ops": [{"op_type": "Transpose", "nodes": 119.0, "ms": 21.0}]}]
    summary = {"graphs": graphs, "total_ms": 1255.867}
    tables = [graph_table(summary), op_table(summary)]
    wide, text = record(400, *tables), record(width, *tables)
    assert numbers_in(wide) <= numbers_in(text)
    for number in ("1,235", "1,256", "21.30", "98.3%", "100.0%", "QLinearConv"):
        assert number in text.replace("\n", " "), number


def test_a_per_frame_row_scales_its_median_only_and_has_no_p99():
    """T frames run one after another are not T times the slowest frame: the tail is not measured."""
    scaled = summarize([0.01] * 98 + [0.5, 0.5], scale=64, extra=0.002)
    assert scaled.median == pytest.approx(64 * 0.01 + 0.002)
    assert scaled.p99 is None and scaled.p90 is None and scaled.scale == 64
    whole = summarize([0.01, 0.02, 0.03])
    assert whole.p99 == pytest.approx(0.0298) and whole.median == pytest.approx(0.02)
    result = a_result()
    table = record(80, rich_table(result))
    deca = next(line for line in table.splitlines() if line.startswith("deca "))
    assert "1,757,761" in deca and re.search(r"1,757,761\s+-\s", deca), deca
    assert any("deca, deca-encoder-only-batched: per-frame time x frames" in line and "no p99" in line
               for line in notes(result))


def test_notes_say_the_runs_and_name_noisy_rows_and_rows_above_the_gemm_reference():
    lines = notes(a_result())
    assert lines[0].startswith("each median is of 30 timed runs")
    noisy = next(line for line in lines if line.startswith("noisy"))
    assert "fad/torch at 1024 frames (0.87)" in noisy and "ort-int8" not in noisy
    above = next(line for line in lines if line.startswith("above the fp32 GEMM"))
    # 5,609 GFLOPs in 15.2 ms is 369,000 GFLOP/s, far above 101.5; DECA's 1,030,040 in 1,758 s is 586 (577%)
    assert "fad/ort-int8 at 1024 frames" in above and "deca/torch at 1024 frames (577%)" in above
    assert "fad/torch" not in above
    assert notes({**a_result(), "rows": [row("reactface", "torch", 512, float("nan"), 1, None)]}) == []


def test_the_gemm_reference_is_the_best_of_several_samples(monkeypatch):
    samples = iter([40.0, 101.0, 55.0, 99.0, 70.0])
    monkeypatch.setattr(timing, "gemm_sample", lambda size, seconds, device=None: next(samples))
    assert timing.gemm_gflops(64) == 101.0
    assert next(samples, None) is None  # every sample taken


def test_paper_claims_only_beside_the_full_deca_pipeline_and_the_paper_preset():
    def timed(pipeline: str, median: float) -> Row:
        return Row(pipeline, pipeline, "torch", 64, 1e12, 1, Latency(5, median, median, median, 0.0))

    rows = [timed("fad", 0.01), timed("deca", 10.0), timed("deca-encoder-only", 5.0), timed("reactface", 2.0)]
    claims = {r["pipeline"]: r["paper"] for r in ratios(rows, "paper")}
    assert claims["deca"] == {"flops": 40.0, "time": 600.0} and claims["reactface"]["time"] == 101.0
    assert claims["deca-encoder-only"] is None
    assert all(r["paper"] is None for r in ratios(rows, "small"))
    result = {"ratios": ratios(rows, "small")}
    assert "paper" not in record(80, ratio_table(result))
    assert "paper" in record(80, ratio_table({"ratios": ratios(rows, "paper")}))


def test_a_bench_of_nothing_is_refused_and_untimed_rows_keep_their_parameters():
    config = BenchConfig(frames=[512], pipelines=["reactface"], replica_max_frames=1)
    reason = nothing_to_measure(config)
    assert reason is not None and "nothing to measure" in reason and "256 frames" in reason
    assert nothing_to_measure(BenchConfig(frames=[128], pipelines=["reactface"], replica_max_frames=1)) is None
    assert nothing_to_measure(BenchConfig(frames=[4096], pipelines=["deca"])) is None
    uncounted = uncounted_reactface_row("reactface", 8, "torch", 512)
    assert uncounted.params > 90_000_000  # the same network at any length
    assert ratio_table({"ratios": []}) is None


def test_a_chart_of_untimed_rows_warns_of_nothing():
    result = {"machine": {"cpu": "x", "cores": 2}, "gemm_gflops": 50.0, "ratios": [], "stream": None,
              "rows": [row("reactface", "torch", 128, 2.5e11, 99_000_000, None)]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert chart_png(result).startswith(b"\x89PNG")


def test_the_cli_refuses_a_bench_of_nothing_before_any_work(tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("the bench ran")

    monkeypatch.setattr(bench_run, "run_bench", no_work)
    out = tmp_path / "kept"
    out.with_suffix(".json").write_text("{}")
    code, output = run_cli(monkeypatch, capsys, "bench", "--pipelines", "reactface", "--frames", "512",
                           "--replica-max-frames", "1", "--out", out)
    assert code == 2 and "nothing to measure" in output and "Traceback" not in output
    assert out.with_suffix(".json").read_text() == "{}"


def test_a_run_that_measured_nothing_replaces_nothing(tmp_path, monkeypatch, capsys):
    """E.g. a device bench whose every backend was skipped: the previous figures stay."""
    empty = {"machine": {"cpu": "x", "cores": 2}, "gemm_gflops": 1.0, "ratios": [], "stream": None, "rows": [],
             "skipped": {"trt": "no TensorRT"}}
    monkeypatch.setattr(bench_run, "run_bench", lambda config, say: empty)
    out = tmp_path / "kept"
    out.with_suffix(".json").write_text("{}")
    code, output = run_cli(monkeypatch, capsys, "bench", "--preset", "tiny", "--pipelines", "fad", "--frames", "8",
                           "--out", out)
    assert code == 2 and "measured nothing" in output and "Traceback" not in output
    assert out.with_suffix(".json").read_text() == "{}" and not out.with_suffix(".png").exists()


def test_memory_is_checked_before_whole_clips_and_lists_lose_their_repeats(monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "bench", "--preset", "tiny", "--frames", "99999999999999999999")
    assert code == 2 and "memory" in output and "whole clips" not in output
    assert _ints("64,8,64,8", "--frames") == [64, 8]


def test_the_cpu_check_of_the_device_bench_has_an_output_of_its_own():
    assert default_out(None) == DEFAULT_OUT["cpu"]
    assert default_out("cuda") == default_out("cuda:1") == DEFAULT_OUT["gpu"]
    assert default_out("cpu") == DEFAULT_OUT["cpu check"] != DEFAULT_OUT["gpu"]


def test_a_gpu_backend_run_on_the_cpu_says_so():
    assert shown_label("cuda-fp16", "cpu") == "cuda-fp16 on cpu"
    assert shown_label("cuda-fp16", "cuda:0") == "cuda-fp16"
    assert shown_label("ort-int8", "cpu") == "ort-int8" and shown_label("torch-cpu", "cpu") == "torch-cpu"
    result = {"machine": {"cpu": "x", "cores": 2}, "device": "cpu", "gemm_gflops": 10.0,
              "rows": [row("fad", "cuda", 8, 1e9, 1, latency(0.01, 0.01))],
              "throughput": [{"backend": "cuda", "device": "cpu", "frames": 16, "seconds": 0.1,
                              "frames_per_second": 160.0, "clips_per_second": 20.0}]}
    text = record(80, rich_table(result), throughput_table(result))
    assert text.count("cuda on cpu") == 2


def test_the_replica_budget_says_what_it_does(monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "bench", "--help")
    help_text = " ".join(output.split())
    assert code == 0 and "per replica, at most" not in help_text
    assert "3 timed calls are made whatever it is" in help_text


def test_outputs_are_written_together_or_not_at_all(tmp_path):
    old_json, old_png = tmp_path / "r.json", tmp_path / "r.png"
    old_json.write_text("old")
    old_png.mkdir()  # the rename onto it fails: after the JSON's bytes were written beside it
    with pytest.raises(OSError) as failure:
        atomic_write_together({old_json: b"new", old_png: b"png"})
    assert failure.value.filename == str(old_png)  # the target, not a hidden temporary
    assert old_json.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]
    result = {"machine": {"cpu": "x", "cores": 2}, "gemm_gflops": 10.0, "ratios": [], "stream": None,
              "rows": [row("fad", "ort", 8, 1e9, 1, latency(0.01, 0.01))]}
    json_path, png_path = write_reports(result, tmp_path / "fresh")
    assert json.loads(json_path.read_text())["rows"][0]["backend"] == "ort"
    assert png_path.read_bytes().startswith(b"\x89PNG")


def test_an_output_place_is_probed_with_a_real_file_and_named_in_the_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    check_output_file(tmp_path / "deeper" / "r.json", "--out")  # the nearest folder that exists is probed
    assert list(tmp_path.iterdir()) == []  # and nothing is left behind
    monkeypatch.setattr(validate.tempfile, "mkstemp", refuse)
    with pytest.raises(typer.BadParameter, match=r"r\.json cannot be written: .*Read-only file system"):
        check_output_file(tmp_path / "r.json", "--out")


def test_device_files_and_the_measured_export_are_refused(tmp_path):
    for target in (Path("/dev/null"), Path("/dev/null.json"), Path("/dev")):
        with pytest.raises(typer.BadParameter, match="where devices are"):
            check_output_file(target, "--out")
    export = tmp_path / "model"
    export.mkdir()
    for inside in (export, export / "manifest.json", export / "sub" / "x.json"):
        with pytest.raises(typer.BadParameter, match="inside the export folder"):
            check_outside(inside, export, "--out")
    check_outside(tmp_path / "model-report.json", export, "--out")


@pytest.mark.parametrize("out", ["/dev/null", "{tmp}/model/report", "/proc/fad-edge-test"])
def test_the_cli_refuses_an_output_it_cannot_or_must_not_write_before_any_work(out, tmp_path, monkeypatch,
                                                                                 capsys):
    if out.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc here")

    def no_work(*args, **kwargs):
        raise AssertionError("the bench ran")

    monkeypatch.setattr(bench_run, "run_bench", no_work)
    (tmp_path / "model").mkdir()
    monkeypatch.setattr(bench_run, "bench_model_config", lambda model, name: bench_run.preset("tiny"))
    target = out.format(tmp=tmp_path)
    code, output = run_cli(monkeypatch, capsys, "bench", "--model", tmp_path / "model", "--pipelines", "fad",
                           "--frames", "8", "--out", target)
    assert code == 2 and "Traceback" not in output and ".tmp" not in output, output
    assert len([line for line in output.splitlines() if line.strip()]) == 1, output
    assert not Path("/dev/null.json").exists()
