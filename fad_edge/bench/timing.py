"""Latency statistics and the machine's reference throughput, measured the same way for every pipeline."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class Latency:
    """Seconds per run: median, p90, p99, and the spread (p90 - p10) / median."""

    runs: int
    median: float
    p90: float
    p99: float
    spread: float
    scale: int = 1  # runs timed one unit (e.g. one frame) each; figures are already multiplied by it

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(seconds: list[float], scale: int = 1, extra: float = 0.0) -> Latency:
    """Latency of `scale` units run one after another (+ `extra` seconds), from per-unit samples."""
    values = np.asarray(seconds) * scale + extra
    p10, median, p90, p99 = np.percentile(values, [10, 50, 90, 99])
    return Latency(len(values), float(median), float(p90), float(p99), float((p90 - p10) / median), scale)


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 2, budget: float | None = None,
               on_run: Callable[[], None] | None = None) -> list[float]:
    """Wall time of `runs` calls after `warmup` calls; stops early once `budget` seconds are spent."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if on_run is not None:
            on_run()
        if budget is not None and spent > budget and len(times) >= 3:
            break
    return times


def gemm_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """Achieved fp32 GEMM GFLOP/s through torch: the machine's practical peak for these models."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch.no_grad():
        a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
    elapsed = time.perf_counter() - start
    return 2 * size**3 * count / elapsed / 1e9


def machine() -> dict:
    """What the figures were measured on."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }
