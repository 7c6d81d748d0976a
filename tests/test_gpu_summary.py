"""bench/gpu_summary.py: the GPU check's figures against their targets, from fake result files (no GPU, no model)."""

from __future__ import annotations

import json

import pytest
from helpers import bench_script


@pytest.fixture(scope="module")
def summary_module():
    return bench_script("gpu_summary")


def _bench(fad_64: dict[str, float], stream: tuple[str, float], rates: dict[str, float],
           ratios: dict[tuple[str, int], tuple[str, float]]) -> dict:
    latency = lambda seconds: {"median": seconds}  # noqa: E731
    rows = [{"pipeline": "fad", "frames": 64, "backend": name, "latency": latency(ms / 1000)}
            for name, ms in fad_64.items()]
    return {"machine": {"gpu": "NVIDIA H200"}, "rows": rows,
            "throughput": [{"backend": name, "frames": 4096, "frames_per_second": rate}
                           for name, rate in rates.items()],
            "ratios": [{"pipeline": pipeline, "frames": frames, "against": f"fad/{against}", "time_ratio": ratio}
                       for (pipeline, frames), (against, ratio) in ratios.items()],
            "stream": {"backend": stream[0], "latency_p99_ms": stream[1]}}


def test_the_best_figure_of_each_target_is_taken_from_either_bench_run_with_what_measured_it(summary_module, tmp_path):
    plain = _bench({"cuda": 7.2, "cuda-fp16-cl": 3.1}, ("cuda-fp16-cl", 4.2), {"cuda-fp16-cl": 51_200.0},
                   {("deca", 64): ("cuda-fp16-cl", 501.0)})
    compiled = _bench({"cuda-fp16-cl": 3.3, "cuda-fp16-cl-compiled": 1.9}, ("cuda-fp16-cl-compiled", 4.5),
                      {"cuda-fp16-cl-compiled": 70_000.0},
                      {("deca", 64): ("cuda-fp16-cl-compiled", 790.0), ("reactface", 256): ("cuda-fp16-cl", 99.0)})
    (tmp_path / "gpu_bench.json").write_text(json.dumps(plain))
    (tmp_path / "gpu_bench_compiled.json").write_text(json.dumps(compiled))
    figures = summary_module.summarize(tmp_path)["figures"]
    assert figures["fad_64_best_ms"] == pytest.approx(1.9)
    assert figures["fad_64_best_backend"] == "cuda-fp16-cl-compiled"
    assert (figures["stream_p99_ms"], figures["stream_backend"]) == (4.2, "cuda-fp16-cl")  # the plain run's
    assert (figures["throughput_frames_per_s"], figures["throughput_backend"]) == (70_000.0, "cuda-fp16-cl-compiled")
    assert (figures["deca_over_fad_64"], figures["deca_against"]) == (790.0, "fad/cuda-fp16-cl-compiled")
    assert figures["reactface_over_fad_256"] == 99.0 and figures["gpu"] == "NVIDIA H200"
    # one run alone (an older check, or the compiled run killed by its limit) still gives its own figures
    (tmp_path / "gpu_bench_compiled.json").unlink()
    alone = summary_module.summarize(tmp_path)
    assert alone["figures"]["fad_64_best_ms"] == pytest.approx(3.1)
    assert alone["figures"]["reactface_over_fad_256"] is None
    targets = {row["target"]: row for row in alone["targets"]}
    assert targets["DECA-based frame by frame / FAD, 64 frames"]["holds"] is False
    assert targets["ReactFace-like online / FAD, 256 frames"]["measured"] is None


def test_the_training_target_names_the_preset_the_check_trained(summary_module, tmp_path):
    """The check logs its training preset; an older log without that line trained the paper's own recipe."""
    rows = {"FAD": {"all": {"L2": 0.35}}, "Median": {"all": {"L2": 0.5}}}
    (tmp_path / "gpu_eval.json").write_text(json.dumps({"rows": rows}))
    (tmp_path / "gpu_check.txt").write_text("== training preset: paper-quick\n"
                                            "== paper-preset training (limit 55s)\n"
                                            "epoch 1: step 40  loss 0.41  val loss 0.36  val L2 0.4494  5 steps/s\n"
                                            "== paper-preset training: ran for its 55s, as planned\n")
    summary = summary_module.summarize(tmp_path)
    target = summary["targets"][-1]
    assert target["target"].startswith("paper sizes trained on the GPU (paper-quick)")
    assert target["measured"] == pytest.approx(0.7) and target["holds"] is True
    assert summary["figures"]["paper_training"]["last_val_l2"] == pytest.approx(0.4494)
    (tmp_path / "gpu_check.txt").write_text("== paper-preset training (limit 40s)\n")
    assert "(paper)" in summary_module.summarize(tmp_path)["targets"][-1]["target"]
