"""`fad-edge bench`: the table, JSON and chart, and the ratio arithmetic."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

import fad_edge.bench.run as bench_run
from fad_edge.bench.run import BenchConfig, Row, ratios, replica_rows
from fad_edge.bench.timing import Latency, summarize

pytestmark = pytest.mark.slow


def test_summarize_scales_per_unit_samples():
    latency = summarize([0.01, 0.02, 0.03], scale=10, extra=0.5)
    assert latency.median == pytest.approx(0.7) and latency.runs == 3 and latency.scale == 10
    assert latency.p99 is None  # ten frames in a row are not ten times the slowest frame


def test_ratios_compare_with_the_fastest_fad_backend():
    def row(pipeline, backend, flops, median):
        return Row(pipeline, pipeline, backend, 64, flops, 1, Latency(5, median, median, median, 0.0))

    rows = [row("fad", "torch", 1e9, 0.02), row("fad", "ort-int8", 1e9, 0.005), row("deca", "torch", 5e10, 5.0)]
    (deca,) = ratios(rows)
    assert deca["against"] == "fad/ort-int8"
    assert deca["flops_ratio"] == pytest.approx(50.0) and deca["time_ratio"] == pytest.approx(1000.0)


def test_bench_cli_writes_table_json_and_chart(tmp_path, monkeypatch, capsys):
    out = tmp_path / "result"
    code, output = run_cli(monkeypatch, capsys, "bench", "--frames", "8,16,8", "--pipelines", "fad", "--preset",
                           "tiny", "--runs", "2", "--backends", "torch,ort", "--no-stream", "--threads", "1",
                           "--out", out)
    assert code == 0, output
    result = json.loads(out.with_suffix(".json").read_text())
    expected = {("torch", 8), ("ort", 8), ("torch", 16), ("ort", 16)}
    assert {(r["backend"], r["frames"]) for r in result["rows"]} == expected and len(result["rows"]) == 4
    assert result["units"]["latency"] == "seconds per call"
    assert all(r["flops"] > 0 and r["latency"]["median"] > 0 for r in result["rows"])
    # FLOPs grow with frames
    flops = {r["frames"]: r["flops"] for r in result["rows"] if r["backend"] == "torch"}
    assert flops[16] > 1.9 * flops[8]
    assert result["machine"]["cores"] and result["gemm_gflops"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "GFLOPs" in output


def test_bench_times_the_sampler_it_is_given(tmp_path, monkeypatch, capsys):
    out = tmp_path / "diverse"
    code, output = run_cli(monkeypatch, capsys, "bench", "--frames", "8", "--pipelines", "fad", "--preset", "tiny",
                           "--runs", "1", "--backends", "torch", "--no-stream", "--threads", "1", "--out", out,
                           "--sampler", "diverse")
    assert code == 0, output
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["config"]["sampler"] == "diverse"
    assert [row["label"] for row in result["rows"]] == ["FAD (tiny preset, 1 step, diverse sampler)"]


def test_bench_times_an_export_as_its_own_model_and_refuses_another_preset(tiny_export, tmp_path, monkeypatch, capsys):
    out = tmp_path / "export"
    code, output = run_cli(monkeypatch, capsys, "bench", "--model", tiny_export, "--frames", "8", "--pipelines", "fad",
                           "--runs", "1", "--backends", "torch,ort", "--no-stream", "--threads", "1", "--out", out)
    assert code == 0, output  # no --preset: the export's (tiny, one context clip), not the paper preset's 96 px inputs
    result = json.loads(out.with_suffix(".json").read_text())
    assert {row["label"] for row in result["rows"]} == {"FAD (tiny preset, 1 step)"}
    code, output = run_cli(monkeypatch, capsys, "bench", "--model", tiny_export, "--preset", "paper", "--frames", "8",
                           "--pipelines", "fad", "--out", tmp_path / "other")
    assert code != 0 and "is of the tiny preset, not paper" in output and "Traceback" not in output


def test_bench_rejects_unknown_backends(monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "bench", "--backends", "nosuch")
    assert code != 0 and "Traceback" not in output


def test_deca_is_timed_per_frame_once_and_scaled_to_every_length(monkeypatch):
    """DECA runs frame by frame: one per-frame measurement serves 8 and 1024 frames alike."""
    timed = []

    def fake_time_calls(fn, runs, warmup=2, budget=None, on_run=None):
        timed.append(runs)
        return [0.5] * runs if runs > 5 else [0.001] * runs  # encoder per frame; the LSTM

    monkeypatch.setattr(bench_run, "time_calls", fake_time_calls)
    cache: dict = {}
    config = BenchConfig(runs=6)
    short = replica_rows("deca", 8, config, lambda _: None, cache)
    long = replica_rows("deca", 1024, config, lambda _: None, cache)
    assert timed.count(6) == 2  # one per-frame measurement per variant, reused for 1024 frames
    assert set(cache) == {"deca", "deca-encoder-only"}
    for a, b in zip(short, long):
        assert b.latency.median == pytest.approx(1024 * 0.5 + 0.001)
        assert a.latency.median == pytest.approx(8 * 0.5 + 0.001)
        assert a.latency.p99 is None and b.latency.p99 is None
        assert b.flops == pytest.approx(128 * a.flops, rel=1e-3)


def test_stream_figures_time_the_stream_both_ways_and_print_in_80_columns():
    from fakes import FakeRunner

    from fad_edge.cli.bench_commands import stream_lines

    figures = bench_run.stream_figures(FakeRunner(), seconds=1.0)
    assert figures["clips"] == 4 and figures["backend"] == "fake"
    for key in ("latency_p50_ms", "latency_p99_ms"):
        assert 0 < figures[key] < 1000 and 0 < figures["clip_at_once"][key] < 1000
    lines = stream_lines(figures)
    assert len(lines) == 3 and "encoded at once" in lines[2]
    assert max(map(len, lines)) <= 80
    assert len(stream_lines({**figures, "clip_at_once": None})) == 2  # results saved before it was measured
