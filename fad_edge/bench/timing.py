"""Latency statistics and the machine's reference throughput, measured the same way for every pipeline.

torch is imported where a function needs it, so that the torch-free edge install can time and
describe its machine (`fad-edge profile`).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


MIN_TIMED_RUNS = 3  # timed calls made whatever the budget: fewer give no median worth printing
GEMM_SAMPLES = 5  # the GEMM reference is the best of this many samples: a busy machine only ever slows one down


@dataclass
class Latency:
    """Seconds per run: median, p90, p99, and the spread (p90 - p10) / median.

    Runs timed one unit (a frame) each and scaled to many (`scale` > 1) have their median scaled
    and no p90 or p99 (None): the slowest of many frames in a row is not `scale` times the slowest
    one, so scaled tails would overstate them. Their spread is that of the per-unit times.
    """

    runs: int
    median: float
    p90: float | None
    p99: float | None
    spread: float
    scale: int = 1  # runs timed one unit (e.g. one frame) each; the median is already multiplied by it

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(seconds: list[float], scale: int = 1, extra: float = 0.0) -> Latency:
    """Latency of `scale` units run one after another (+ `extra` seconds), from per-unit samples."""
    values = np.asarray(seconds, dtype=float)
    p10, median, p90, p99 = np.percentile(values, [10, 50, 90, 99])
    spread = float((p90 - p10) / median)
    if scale != 1:
        return Latency(len(values), float(median * scale + extra), None, None, spread, scale)
    return Latency(len(values), float(median + extra), float(p90 + extra), float(p99 + extra), spread, scale)


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 2, budget: float | None = None,
               on_run: Callable[[], None] | None = None) -> list[float]:
    """Wall time of `runs` calls after `warmup` calls; once `budget` seconds of timed calls are spent, stops after
    the call that passed it (but never before MIN_TIMED_RUNS calls: the warm-up and those are made whatever it is)."""
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
        if budget is not None and spent > budget and len(times) >= MIN_TIMED_RUNS:
            break
    return times


def gemm_gflops(size: int = 1024, seconds: float = 0.4, device: torch.device | None = None,
                samples: int = GEMM_SAMPLES) -> float:
    """Achieved fp32 GEMM GFLOP/s through torch, the best of `samples` samples of `seconds` each: the machine's
    (or the GPU's) practical peak for these models.

    On a GPU the products are queued in groups and the clock stops after the GPU has finished them;
    torch's default matmul precision keeps them IEEE fp32 (no TF32).
    """
    return max(gemm_sample(size, seconds, device) for _ in range(samples))


def gemm_sample(size: int, seconds: float, device: torch.device | None = None) -> float:
    """One sample of the GEMM throughput: products of two size x size matrices for `seconds`, in GFLOP/s."""
    import torch

    device = device or torch.device("cpu")
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    wait = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    group = 10 if device.type == "cuda" else 1
    with torch.no_grad():
        a @ b
        wait()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(group):
                a @ b
            wait()
            count += group
    elapsed = time.perf_counter() - start
    return 2 * size**3 * count / elapsed / 1e9


def gpu_record(device: torch.device) -> dict:
    """The GPU the figures were measured on: name, compute capability, memory, driver, CUDA and cuDNN versions."""
    import subprocess

    import torch

    properties = torch.cuda.get_device_properties(device)
    driver = None
    try:  # torch does not report the driver's version; nvidia-smi does
        query = ["nvidia-smi", f"--id={device.index or 0}", "--query-gpu=driver_version", "--format=csv,noheader"]
        driver = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "gpu": torch.cuda.get_device_name(device),
        "compute_capability": f"{properties.major}.{properties.minor}",
        "gpu_memory_gb": round(properties.total_memory / 2**30, 1),
        "driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def _cpuinfo_value(key: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The value of the first `key : value` line of `cpuinfo` (None where there is none or no file)."""
    try:
        with open(cpuinfo) as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith(key)), None)
    except OSError:
        return None


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    return _cpuinfo_value("model name") or platform.processor() or platform.machine()


# The instruction-set extensions that decide this project's CPU figures: AVX-512 and VNNI run ONNX Runtime's
# int8 convolutions faster, AVX512-BF16 and AMX let `--autocast auto` train in bf16. As /proc/cpuinfo names them.
SPEED_FLAGS = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """Which of SPEED_FLAGS this CPU has (empty where `cpuinfo` cannot be read)."""
    flags = set((_cpuinfo_value("flags", cpuinfo) or "").split())
    return [flag for flag in SPEED_FLAGS if flag in flags]


def machine(device: torch.device | None = None) -> dict:
    """What the figures were measured on (with the GPU's record when `device` is one)."""
    import onnxruntime
    import torch

    return {
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
        **(gpu_record(device) if device is not None and device.type == "cuda" else {}),
    }
