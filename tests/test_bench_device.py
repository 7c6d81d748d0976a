"""The device bench (`fad-edge bench --device`), its labels and tables: checked on the CPU, tiny and fast."""

from __future__ import annotations

import io
import json

import pytest
from helpers import run_cli
from rich.console import Console

import fad_edge.bench.device as bench_device
from fad_edge.bench.device import device_replica_rows, run_device_bench
from fad_edge.bench.labels import GPU_BACKENDS, Variant, bench_labels, parse_label
from fad_edge.bench.report import ratio_table, rich_table, summary_lines, throughput_table
from fad_edge.bench.run import BenchConfig
from fad_edge.errors import FadEdgeError

pytestmark = pytest.mark.slow


def test_labels_carry_backend_precision_and_the_cuda_runners_modes():
    assert parse_label("cuda-fp16-cl") == Variant("cuda", "fp16", eager=False, channels_last=True)
    assert parse_label("cuda-eager") == Variant("cuda", None, eager=True)
    assert parse_label("cuda-fp16-cl-compiled") == Variant("cuda", "fp16", channels_last=True, compiled=True)
    assert "cuda-fp16-compiled" in bench_labels()
    assert parse_label("ort-int8") == Variant("ort", "int8")
    assert parse_label("ort-trt-fp32") == Variant("ort-trt", "fp32")
    assert parse_label("ort-cuda") == Variant("ort-cuda", None)
    assert set(GPU_BACKENDS) <= set(bench_labels())
    for bad in ("ort-eager", "nosuch", "trt-cl", "ort-compiled"):
        with pytest.raises(FadEdgeError, match="unknown bench backend"):
            parse_label(bad)


def test_compiled_variants_are_skipped_on_the_cpu_and_the_others_run_there():
    """The CPU check of the GPU bench's plumbing runs the CUDA runner uncompiled (Inductor's C++: minutes)."""
    import torch

    cpu = torch.device("cpu")
    assert "cuda-fp16-cl-compiled" in bench_labels()
    assert "GPU only" in (bench_device.unavailable_here("cuda-fp16-cl-compiled", cpu) or "")
    assert bench_device.unavailable_here("cuda-fp16-cl", cpu) is None


def _render(table, width: int = 80) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width).print(table)
    return buffer.getvalue()


def test_tables_never_cut_a_number_short_at_80_columns():
    latency = {"runs": 3, "median": 1757.761, "p90": 1760.0, "p99": 1776.616, "spread": 0.01, "scale": 1024}
    rows = [{"pipeline": "deca-encoder-only-batched", "label": "x", "backend": "torch-cuda", "frames": 4096,
             "flops": 1_030_040e9, "params": 72_330_000, "latency": latency, "note": ""},
            {"pipeline": "fad", "label": "FAD", "backend": "cuda-fp16-cl", "frames": 4096, "flops": 5_609e9,
             "params": 28_740_000, "latency": {**latency, "median": 0.0123, "p99": 0.0150}, "note": ""}]
    result = {"machine": {"cpu": "EPYC", "cores": 16, "gpu": "NVIDIA H100 80GB HBM3", "driver": "580.65",
                          "cuda": "13.0"}, "gemm_gflops": 51_235.2, "rows": rows,
              "ratios": [{"pipeline": "deca-encoder-only-batched", "frames": 4096, "against": "fad/cuda-fp16-cl",
                          "flops_ratio": 183.7, "time_ratio": 142_907.0, "paper": {"flops": 40.0, "time": 600.0}}],
              "throughput": [{"backend": "cuda-fp16-cl", "frames": 4096, "seconds": 0.0123,
                              "frames_per_second": 333_008.1, "clips_per_second": 41_626.0}]}
    text = _render(rich_table(result)) + _render(ratio_table(result)) + _render(throughput_table(result))
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for number in ("1,030,040", "1,757,761", "1,776,616", "12.3", "51,235", "142,907", "333,008", "41,626"):
        assert number in text, number
    assert "H100" in text and "deca-encoder-only-batched" in text.replace("\n", "")


def test_rows_without_figures_print_a_dash_and_a_shared_fad_backend_is_named_once():
    """An uncounted ReactFace row has no FLOPs (NaN), no params and no timing; every ratio here is against
    one FAD backend, whose long label then goes in the title rather than a column that folds it."""
    uncounted = {"pipeline": "reactface-frame", "label": "x", "backend": "torch-cuda", "frames": 256,
                 "flops": float("nan"), "params": 0, "latency": None, "note": "not counted beyond 64 frames"}
    against = "fad/cuda-fp16-cl-compiled"
    ratios = [{"pipeline": "reactface-frame", "frames": 256, "against": against, "flops_ratio": float("nan"),
               "time_ratio": None, "paper": {"flops": 1.185, "time": 101.0}},
              {"pipeline": "deca-encoder-only", "frames": 256, "against": against, "flops_ratio": 10.7,
               "time_ratio": 272.2, "paper": None}]
    result = {"machine": {"cpu": "Xeon", "cores": 16, "gpu": "NVIDIA H200"}, "gemm_gflops": 51_091.0,
              "rows": [uncounted], "ratios": ratios}
    rows_text, ratio_text = _render(rich_table(result)), _render(ratio_table(result))
    assert "nan" not in (rows_text + ratio_text).lower()
    assert "0.00" not in rows_text  # no params counted is not zero params
    assert against in ratio_text.splitlines()[0] and ratio_text.count(against) == 1
    assert " vs " not in ratio_text and "272" in ratio_text and "101" in ratio_text
    mixed = {**result, "ratios": [ratios[0], {**ratios[1], "against": "fad/cuda-fp16"}]}
    assert " vs " in _render(ratio_table(mixed))


@pytest.fixture(scope="module")
def device_result():
    config = BenchConfig(frames=[8], backends=["cuda-eager", "cuda", "cuda-fp16", "ort-cuda", "trt"],
                         pipelines=["fad"], runs=1, threads=1, preset="tiny", stream=False, device="cpu",
                         throughput_frames=[16], skip_unavailable=True)
    return run_device_bench(config)


def test_the_device_bench_times_every_runner_and_lists_what_it_skipped(device_result):
    assert {row["backend"] for row in device_result["rows"]} == {"cuda-eager", "cuda", "cuda-fp16"}
    assert all(row["latency"]["median"] > 0 for row in device_result["rows"])
    assert [(e["backend"], e["frames"]) for e in device_result["throughput"]] == [
        ("cuda-eager", 16), ("cuda", 16), ("cuda-fp16", 16)]
    assert device_result["fp16"][0]["frames"] == 8 and device_result["fp16"][0]["speedup"] > 0
    assert "CUDAExecutionProvider" in device_result["skipped"]["ort-cuda"]
    assert set(device_result["skipped"]) == {"ort-cuda", "trt"}
    assert device_result["device"] == "cpu" and "gpu" not in device_result["machine"]
    lines = summary_lines(device_result)
    assert any(line.startswith("fp16 vs fp32") for line in lines)
    assert any(line.startswith("skipped ort-cuda") for line in lines)
    json.dumps(device_result)  # the JSON the CLI writes


def test_deca_on_a_device_is_timed_frame_by_frame_and_batched(monkeypatch):
    def fake_time_calls(fn, runs, warmup=2, budget=None, on_run=None):
        return [0.4] * runs if runs > 5 else [0.001] * runs  # an encoder call (1 or 4 frames); the LSTM

    import torch

    monkeypatch.setattr(bench_device, "time_calls", fake_time_calls)
    cache: dict = {}
    config = BenchConfig(runs=6, deca_batch=4)
    rows = {row.pipeline: row for row in device_replica_rows("deca", 16, config, lambda _: None, cache,
                                                             torch.device("cpu"))}
    assert set(rows) == {"deca", "deca-batched", "deca-encoder-only", "deca-encoder-only-batched"}
    assert rows["deca"].latency.median == pytest.approx(16 * 0.4 + 0.001)
    assert rows["deca-batched"].latency.median == pytest.approx(16 * 0.4 / 4 + 0.001)
    assert rows["deca"].flops == rows["deca-batched"].flops and rows["deca"].backend == "torch-cpu"


def test_the_cli_runs_the_device_bench_and_refuses_what_it_cannot_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu"
    code, output = run_cli(monkeypatch, capsys, "bench", "--device", "cpu", "--preset", "tiny", "--pipelines", "fad",
                           "--frames", "8", "--runs", "1", "--throughput-frames", "16", "--no-stream",
                           "--backends", "cuda-eager,cuda", "--threads", "1", "--out", out)
    assert code == 0, output
    result = json.loads(out.with_suffix(".json").read_text())
    assert {row["backend"] for row in result["rows"]} == {"cuda-eager", "cuda"}
    assert out.with_suffix(".png").stat().st_size > 10_000 and "batch throughput" in output
    code, output = run_cli(monkeypatch, capsys, "bench", "--device", "cpu", "--backends", "ort-cuda", "--preset",
                           "tiny", "--out", tmp_path / "x")
    assert code == 2 and "Traceback" not in output and "CUDAExecutionProvider" in output
    import torch

    if not torch.cuda.is_available():
        code, output = run_cli(monkeypatch, capsys, "bench", "--device", "cuda", "--out", tmp_path / "y")
        assert code == 2 and "use --device cpu" in output and "Traceback" not in output


def test_the_cpu_check_writes_beside_the_gpu_figures_and_says_where_its_rows_ran(tmp_path, monkeypatch, capsys):
    """`--device cpu` without --out must not replace the committed GPU figures (bench/results/gpu_bench)."""
    monkeypatch.chdir(tmp_path)
    code, output = run_cli(monkeypatch, capsys, "bench", "--device", "cpu", "--preset", "tiny", "--pipelines", "fad",
                           "--frames", "8", "--runs", "1", "--throughput-frames", "8", "--no-stream",
                           "--backends", "cuda", "--threads", "1")
    assert code == 0, output
    results = tmp_path / "bench" / "results"
    assert sorted(path.name for path in results.iterdir()) == ["gpu_bench_cpu_check.json", "gpu_bench_cpu_check.png"]
    result = json.loads((results / "gpu_bench_cpu_check.json").read_text())
    assert [row["device"] for row in result["rows"]] == ["cpu"] and result["throughput"][0]["device"] == "cpu"
    assert output.count("cuda on cpu") == 2  # the timing table and the throughput table


def test_the_stream_runs_on_the_cuda_graph_variant_fastest_at_one_clip():
    from fad_edge.bench.device import stream_variant
    from fad_edge.bench.run import Row
    from fad_edge.bench.timing import Latency

    def row(backend: str, frames: int, ms: float, pipeline: str = "fad") -> Row:
        return Row(pipeline, "FAD", backend, frames, 1.0, 1, Latency(10, ms / 1000, ms / 1000, ms / 1000, 0.0))

    rows = [row("cuda-eager", 8, 1.0),  # fastest, but eager: no graphs
            row("cuda", 8, 5.3), row("cuda-fp16", 8, 3.0), row("cuda-fp16-cl", 8, 2.9),
            row("cuda", 64, 7.4), row("cuda-fp16", 64, 4.2), row("cuda-fp16-cl", 64, 4.3),
            row("deca", 8, 0.1, pipeline="deca")]
    assert stream_variant(rows) == "cuda-fp16-cl"  # judged at 8 frames, where the stream's calls are
    assert stream_variant([r for r in rows if r.backend in ("cuda-eager", "deca")]) is None


def test_the_title_names_the_cpu_extensions_the_figures_depend_on():
    from fad_edge.bench.report import where

    record = {"cpu": "AMD EPYC", "cores": 2, "cpu_features": ["avx2", "avx512_vnni", "avx512_bf16"]}
    assert where({"machine": record}) == "AMD EPYC (2 cores; avx2, avx512_vnni, avx512_bf16)"
    older = {"cpu": "AMD EPYC", "cores": 2}  # a result written before the extensions were recorded
    assert where({"machine": older}) == "AMD EPYC (2 cores)"


def test_cpu_features_lists_only_known_extensions_in_their_order(tmp_path):
    from fad_edge.bench.timing import cpu_features

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: X\nflags\t\t: fpu avx512_bf16 sse2 avx2 amx_int8\n")
    assert cpu_features(str(cpuinfo)) == ["avx2", "avx512_bf16", "amx_int8"]
    assert cpu_features(str(tmp_path / "missing")) == []
