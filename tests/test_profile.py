"""`fad-edge profile`: reading ONNX Runtime's traces (fake ones, no model), the table, and the command end to end."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import run_cli
from rich.console import Console

from fad_edge.bench.profile import read_trace, summarize_trace
from fad_edge.bench.profile_report import graph_table, op_table


def fake_trace(calls: list[list[tuple[str, int]]], run_overhead: int = 100) -> list[dict]:
    """ORT-like events: per session run, its kernels as (op type, microseconds), back to back."""
    events: list[dict] = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 5000, "args": {}}]
    ts = 10_000
    for k, kernels in enumerate(calls):
        start = ts
        for node, (op, dur) in enumerate(kernels):
            events.append({"cat": "Node", "name": f"n{node}_{op}_kernel_time", "ts": ts, "dur": dur,
                           "args": {"op_name": op, "provider": "CPUExecutionProvider"}})
            ts += dur
        ts += run_overhead
        events.append({"cat": "Session", "name": "SequentialExecutor::Execute", "ts": start, "dur": ts - start})
        events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": ts - start, "args": {}})
        ts += 1000 * (k + 1)  # time between runs is nobody's
    return events


def test_the_warm_up_runs_are_left_out_and_kernels_are_summed_per_op_type():
    warm = [("Conv", 90_000), ("Relu", 9_000)]  # a slow first run must not count
    timed = [("Conv", 3000), ("Relu", 500), ("Conv", 1000)]
    summary = summarize_trace(fake_trace([warm, timed, timed]), "video_encoder", runs=2, warmup=1)
    assert summary.calls == 1
    assert [op.op_type for op in summary.ops] == ["Conv", "Relu"]  # largest first
    conv, relu = summary.ops
    assert conv.ms == pytest.approx(4.0) and conv.nodes == 2
    assert relu.ms == pytest.approx(0.5) and relu.nodes == 1
    assert summary.ms == pytest.approx(4.6)  # kernels + 100 us of the run outside them
    assert summary.between_ops_ms == pytest.approx(0.1)


def test_several_session_runs_per_runner_call_are_one_call():
    """128 frames are two encoder calls per runner call: per-call figures add both."""
    run = [("QLinearConv", 2000)]
    summary = summarize_trace(fake_trace([run] * 6), "audio_encoder", runs=2, warmup=1)
    assert summary.calls == 2
    assert summary.ops[0].ms == pytest.approx(4.0) and summary.ops[0].nodes == 2


def test_a_trace_that_is_not_of_those_calls_is_refused():
    with pytest.raises(ValueError, match="not a multiple"):
        summarize_trace(fake_trace([[("Conv", 10)]] * 5), "elnet_x0", runs=1, warmup=1)


def test_a_trace_is_a_list_or_wrapped_in_trace_events(tmp_path):
    events = fake_trace([[("Conv", 10)]])
    (tmp_path / "list.json").write_text(json.dumps(events))
    (tmp_path / "wrapped.json").write_text(json.dumps({"traceEvents": events}))
    assert read_trace(tmp_path / "list.json") == read_trace(tmp_path / "wrapped.json") == events


def summary_of(graphs: dict[str, list[tuple[str, int]]]) -> dict:
    """A profile summary as run_profile builds it, from one run's kernels per graph."""
    parts = [summarize_trace(fake_trace([kernels]), graph, runs=1) for graph, kernels in graphs.items()]
    records = [{"graph": g.graph, "calls": g.calls, "ms": g.ms, "between_ops_ms": g.between_ops_ms,
                "ops": [op.__dict__ for op in g.ops]} for g in parts]
    return {"graphs": records, "total_ms": sum(g.ms for g in parts)}


def render(table) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_the_tables_fit_80_columns_keep_every_digit_and_fold_minor_op_types():
    summary = summary_of({
        "video_encoder": [("QLinearConv", 1_234_567), ("InstanceNormalization", 45_678), ("Add", 10)],
        "audio_encoder": [("DequantizeLinear", 3_456)],
        "elnet_x0": [("Transpose", 21_000), ("QGemm", 2_000), ("Softplus", 300), ("Mul", 200)],
    })
    graphs, ops = render(graph_table(summary)), render(op_table(summary))
    for text in (graphs, ops):
        assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "1,280" in graphs and "1,308" in graphs  # the video encoder (kernels and 0.1 ms between them); all
    assert "1,235" in ops and "InstanceNormalization" in ops and "45.68" in ops and "21.00" in ops
    # Under 2% of their own graph, summed in one row: video's Add, elnet's Softplus and Mul (but not QGemm, 8.6%)
    assert "QGemm" in ops and "Softplus" not in ops and "Add" not in ops
    assert "2 other op types" in ops and "1 other op type " in ops
    assert "(between ops)" in ops


@pytest.mark.slow
def test_profile_prints_the_tables_writes_json_and_deletes_the_raw_traces(tiny_export, tmp_path, monkeypatch, capsys):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where ORT's raw traces go while they are read
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reports" / "profile.json"
    code, output = run_cli(monkeypatch, capsys, "profile", tiny_export, "--precision", "int8", "--frames", "16",
                           "--runs", "2", "--warmup", "1", "--threads", "1", "--out", out)
    assert code == 0, output
    summary = json.loads(out.read_text())
    assert [g["graph"] for g in summary["graphs"]] == ["video_encoder", "audio_encoder", "elnet_x0"]
    assert summary["clips"] == 2 and summary["precision"] == "int8" and summary["traces"] is None
    ops = {op["op_type"] for graph in summary["graphs"] for op in graph["ops"]}
    assert "QLinearConv" in ops  # the INT8 graphs ran
    assert all(g["calls"] == 1 and g["ms"] > 0 for g in summary["graphs"])
    assert "QLinearConv" in output and "time per run, by op type" in output
    assert list(scratch.iterdir()) == [] and list(tmp_path.glob("*.json")) == []


@pytest.mark.slow
def test_profile_keeps_the_traces_where_asked(tiny_export, tmp_path, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "profile", tiny_export, "--frames", "8", "--runs", "1",
                           "--warmup", "0", "--threads", "1", "--trace", tmp_path / "traces")
    assert code == 0, output
    kept = sorted(path.name for path in (tmp_path / "traces").iterdir())
    assert kept == ["audio_encoder.json", "elnet_x0.json", "video_encoder.json"]
    assert summarize_trace(read_trace(tmp_path / "traces" / "elnet_x0.json"), "elnet_x0", runs=1).ms > 0


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["{missing}"], "no manifest.json"),
    (["{export}", "--precision", "int4"], "not 'int4'"),
    (["{export}", "--out", "{tmp}"], "is a folder"),
    (["{export}", "--trace", "{tmp}/afile"], "is not a folder"),
    (["{export}", "--frames", "0"], "--frames"),
    (["{export}", "--frames", "1000000000"], "memory"),
    (["{export}", "--out", "{export}/manifest.json"], "inside the export folder"),
    (["{export}", "--out", "{export}/reports/profile.json"], "inside the export folder"),
    (["{export}", "--trace", "{export}"], "inside the export folder"),
    (["{export}", "--out", "/dev/null"], "where devices are"),
    (["{export}", "--trace", "/dev/fad-edge-traces"], "where devices are"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment, tiny_export, tmp_path, monkeypatch, capsys):
    export = tmp_path / "export"  # a copy: a profile that wrote into it would spoil the shared one
    shutil.copytree(tiny_export, export)
    before = {path.name: path.read_bytes() for path in export.iterdir()}
    values = {"missing": tmp_path / "nowhere", "export": export, "tmp": tmp_path}
    (tmp_path / "afile").write_text("not a folder")
    code, output = run_cli(monkeypatch, capsys, "profile", *[arg.format(**values) for arg in args])
    assert code == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in output, output
    assert {path.name: path.read_bytes() for path in export.iterdir()} == before
    assert not Path("/dev/null").is_file() and not Path("/dev/fad-edge-traces").exists()
