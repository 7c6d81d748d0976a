"""Where the GPU time of FAD's calls goes: against one ReactFace-like online call, and at a stream's sizes.

    PYTHONPATH=. python bench/gpu_profile.py --out gpu_profile.json [--frames 256] [--small 8,64]
        [--no-reactface] [--compiled [--throughput 4096] [--runs 20]] [--device cuda]

The bench's ReactFace/FAD ratio says how much longer the replica takes, and its small-call
latencies how far FAD is from its floor; this says why. Each call (random weights, paper sizes) is
profiled once after a warm-up with `torch.profiler`, which records:
- the call's wall time and the time the GPU spent in kernels (the sum of kernels' self device
  time): a GPU busy fraction well below 1 means the call waits on the host (launches, copies),
  not on arithmetic;
- the GPU operations run (kernels and copies; a CUDA graph's kernels count one by one), the kernel
  launches from the host, and the ten operators with the most device time.
The calls: the ReactFace-like replica online (windows of 8) and FAD through the CUDA runner (CUDA
graphs, FP32) at `--frames`, unless `--no-reactface`; and FAD's FP16 graphs at each `--small` size.
With `--compiled`, the same FP16 graphs with torch.compile's kernels inside (NCHW, and with
channels-last encoders) are timed beside them (medians of interleaved calls, at each `--small` size
and at `--throughput` frames), with each compiled motion's largest error relative to plain FP16,
and the fastest is profiled.
On the CPU (`--device cpu`, the plumbing only) the device times are zero.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from fad_edge.atomic import atomic_write_bytes
from fad_edge.bench.pipelines.reactface import ReactFacePipeline
from fad_edge.bench.run import speaker_inputs
from fad_edge.constants import FPS, SAMPLE_RATE
from fad_edge.devices import resolve_device
from fad_edge.errors import FadEdgeError
from fad_edge.listener_model import ListenerModel
from fad_edge.models.presets import preset
from fad_edge.runtime.cuda_graphs import EagerCapture
from fad_edge.runtime.cuda_runner import CudaRunner

TOP_OPS = 10


def profiled(call: Callable[[], object], device: torch.device, warmup: int = 2) -> dict:
    """One profiled call after `warmup` calls: wall and kernel seconds, launches, the top operators."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        call()
    synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        call()
        synchronize()
        wall = time.perf_counter() - started
    averages = prof.key_averages()
    kernel_us = sum(event.self_device_time_total for event in averages)
    launches = sum(event.count for event in averages if "LaunchKernel" in event.key or "GraphLaunch" in event.key)
    gpu_ops = sum(event.count for event in averages if event.device_type == DeviceType.CUDA)  # kernels and copies
    top = sorted(averages, key=lambda event: event.device_time_total, reverse=True)[:TOP_OPS]
    return {"wall_s": wall, "kernel_s": kernel_us / 1e6, "gpu_busy": kernel_us / 1e6 / wall if wall else None,
            "kernel_launches": launches, "gpu_ops": gpu_ops,
            "top_ops": [{"op": event.key, "device_s": event.device_time_total / 1e6, "calls": event.count}
                        for event in top]}


def profile_reactface(frames: int, device: torch.device) -> dict:
    """The ReactFace-like replica online (windows of 8 frames), as the bench times it."""
    generator = torch.Generator().manual_seed(0)
    react = ReactFacePipeline().eval().to(device)
    video = torch.rand(frames, 3, 224, 224, generator=generator).to(device)
    audio = (torch.randn(int(round(frames * SAMPLE_RATE / FPS)), generator=generator) * 0.1).to(device)
    with torch.no_grad():
        return profiled(lambda: react.online(video, audio, 8), device, warmup=1)


def fad_runner(device: torch.device, precision: str = "fp32", compiled: bool = False,
               channels_last: bool = False) -> CudaRunner:
    """FAD's paper preset (random weights, seed 0) through the CUDA runner: graphs on a GPU, an eager stand-in on
    the CPU (where compiling uses dynamo's 'eager' backend: Inductor's C++ build takes minutes on a small CPU)."""
    torch.manual_seed(0)
    model = ListenerModel(preset("paper")).eval()
    on_gpu = device.type == "cuda"
    return CudaRunner(model, precision, device=device, capture=None if on_gpu else EagerCapture(), compiled=compiled,
                      compile_backend="inductor" if on_gpu else "eager", channels_last=channels_last)


def profile_fad(frames: int, device: torch.device, precision: str = "fp32") -> dict:
    """One profiled FAD call at `frames` (see `fad_runner`)."""
    runner = fad_runner(device, precision)
    inputs = speaker_inputs(runner.config, frames)
    try:
        return profiled(lambda: runner.run_inputs(inputs), device)
    finally:
        runner.close()


COMPILED_VARIANTS = {"compiled": False, "compiled-cl": True}  # name -> channels-last encoders


def compare_compiled(sizes: list[int], throughput: int, device: torch.device, runs: int = 20,
                     save: Callable[[dict], object] = lambda result: None) -> dict:
    """FP16 graphs plain and with torch.compile (NCHW and channels-last) at each size: interleaved medians, each
    compiled variant's output error relative to plain FP16, and a profile of the fastest at the small sizes.

    `save` gets the result so far after each size (compiling may outlast a time limit)."""
    plain = fad_runner(device, "fp16")
    compiled = {name: fad_runner(device, "fp16", compiled=True, channels_last=channels_last)
                for name, channels_last in COMPILED_VARIANTS.items()}
    result: dict = {"profiles": {}, "timings": []}
    try:
        for frames in [*sizes, throughput]:
            inputs = speaker_inputs(plain.config, frames)
            reference = plain.run_inputs(inputs)
            scale = max(float(reference.max() - reference.min()), 1e-12)
            row: dict = {"frames": frames, "variants": {}}
            for name, runner in compiled.items():
                started = time.perf_counter()
                ours = runner.run_inputs(inputs)  # compiles (a bucket size's first call)
                row["variants"][name] = {"first_call_s": time.perf_counter() - started,
                                         "relative_error": float(np.abs(ours - reference).max() / scale)}
            times: dict[str, list[float]] = {"fp16": [], **{name: [] for name in compiled}}
            for _ in range(runs if frames in sizes else max(runs // 4, 1)):
                for name, runner in (("fp16", plain), *compiled.items()):
                    begun = time.perf_counter()
                    runner.run_inputs(inputs)
                    times[name].append(time.perf_counter() - begun)
            row["fp16_s"] = float(np.median(times["fp16"]))
            for name, record in row["variants"].items():
                record["seconds"] = float(np.median(times[name]))
                record["speedup"] = row["fp16_s"] / record["seconds"]
            result["timings"].append(row)
            print(f"FP16 {frames} frames: {row['fp16_s'] * 1000:.2f} ms; " + "; ".join(
                f"{name} {r['seconds'] * 1000:.2f} ms ({r['speedup']:.2f}x, error {r['relative_error']:.1e}, "
                f"first call {r['first_call_s']:.1f} s)" for name, r in row["variants"].items()))
            if frames in sizes:
                fastest = min(row["variants"], key=lambda name: row["variants"][name]["seconds"])
                record = profiled(lambda: compiled[fastest].run_inputs(inputs), device)
                result["profiles"][f"{fastest} {frames}"] = record
                report(f"FAD, CUDA graph FP16 {fastest}, {frames} frames", record)
            save(result)
    finally:
        plain.close()
        for runner in compiled.values():
            runner.close()
    return result


def report(name: str, record: dict) -> None:
    busy = f"{record['gpu_busy']:.2f}" if record["gpu_busy"] is not None else "-"
    print(f"{name}: wall {record['wall_s'] * 1000:.1f} ms, kernels {record['kernel_s'] * 1000:.1f} ms "
          f"(GPU busy {busy}), {record['gpu_ops']} GPU ops, {record['kernel_launches']} launches")
    for op in record["top_ops"][:5]:
        print(f"    {op['device_s'] * 1000:8.2f} ms  {op['calls']:5d}x  {op['op'][:50]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=256, help="ReactFace against FAD (FP32 graph) at this length")
    parser.add_argument("--reactface", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--small", default="8,64", help="FAD FP16 graph calls also profiled (a stream's sizes)")
    parser.add_argument("--compiled", action="store_true",
                        help="also FP16 with torch.compile, profiled and timed beside plain FP16")
    parser.add_argument("--throughput", type=int, default=4096, help="with --compiled: also timed at this length")
    parser.add_argument("--runs", type=int, default=20, help="with --compiled: interleaved timed calls per size")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    result: dict = {"frames": args.frames, "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    if args.reactface:
        result["reactface_online"] = profile_reactface(args.frames, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        result["fad_cuda_graph"] = profile_fad(args.frames, device)
        result["wall_ratio"] = result["reactface_online"]["wall_s"] / result["fad_cuda_graph"]["wall_s"]
        report(f"ReactFace-like online, {args.frames} frames", result["reactface_online"])
        report(f"FAD, CUDA graph FP32, {args.frames} frames", result["fad_cuda_graph"])
        print(f"wall ratio ReactFace / FAD: {result['wall_ratio']:.0f}x")
    sizes = [int(part) for part in args.small.split(",") if part.strip()]
    result["fad_fp16_small"] = {}
    for frames in sizes:
        record = profile_fad(frames, device, "fp16")
        result["fad_fp16_small"][str(frames)] = record
        report(f"FAD, CUDA graph FP16, {frames} frames", record)
    save = lambda record: atomic_write_bytes(args.out, json.dumps(record, indent=2).encode())  # noqa: E731
    if args.compiled:
        save(result)
        result["fp16_compiled"] = compare_compiled(sizes, args.throughput, device, args.runs,
                                                   lambda so_far: save({**result, "fp16_compiled": so_far}))
    save(result)


if __name__ == "__main__":
    try:
        main()
    except FadEdgeError as error:  # no GPU, bad data: one line, as the CLI says it
        raise SystemExit(f"error: {error}") from None
