"""Where the GPU time of one ReactFace-like online call and one FAD call goes, at the same length.

    PYTHONPATH=. python bench/gpu_profile.py --frames 256 --out gpu_profile.json [--device cuda]

The bench's ReactFace/FAD ratio says how much longer the replica takes; this says why. For each
pipeline (random weights, paper sizes) it profiles one call after a warm-up with
`torch.profiler` and records:
- the call's wall time and the time the GPU spent in kernels (the sum of kernels' self device
  time): a GPU busy fraction well below 1 means the call is bound by launching kernels, not by
  arithmetic;
- the kernel launches counted, and the ten operators with the most device time.
FAD runs through the CUDA runner (CUDA graphs, FP32) as in the bench, so its call is one graph replay.
On the CPU (`--device cpu`, the plumbing only) the device times are zero.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from fad_edge.atomic import atomic_write_bytes
from fad_edge.bench.pipelines.reactface import ReactFacePipeline
from fad_edge.bench.run import speaker_inputs
from fad_edge.constants import FPS, SAMPLE_RATE
from fad_edge.devices import resolve_device
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import preset
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
    top = sorted(averages, key=lambda event: event.device_time_total, reverse=True)[:TOP_OPS]
    return {"wall_s": wall, "kernel_s": kernel_us / 1e6, "gpu_busy": kernel_us / 1e6 / wall if wall else None,
            "kernel_launches": launches,
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


def profile_fad(frames: int, device: torch.device) -> dict:
    """FAD's paper preset through the CUDA runner (graphs on a GPU, an eager stand-in on the CPU)."""
    model = ListenerModel(preset("paper")).eval()
    runner = CudaRunner(model, device=device, capture=None if device.type == "cuda" else EagerCapture())
    inputs = speaker_inputs(model.config, frames)
    try:
        return profiled(lambda: runner.run_inputs(inputs), device)
    finally:
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    reactface = profile_reactface(args.frames, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    fad = profile_fad(args.frames, device)
    result = {"frames": args.frames, "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "reactface_online": reactface, "fad_cuda_graph": fad,
              "wall_ratio": reactface["wall_s"] / fad["wall_s"]}
    atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())
    for name, record in (("ReactFace-like online", reactface), ("FAD, CUDA graph", fad)):
        busy = f"{record['gpu_busy']:.2f}" if record["gpu_busy"] is not None else "-"
        print(f"{name}, {args.frames} frames: wall {record['wall_s'] * 1000:.1f} ms, kernels "
              f"{record['kernel_s'] * 1000:.1f} ms (GPU busy {busy}), {record['kernel_launches']} launches")
        for op in record["top_ops"][:5]:
            print(f"    {op['device_s'] * 1000:8.2f} ms  {op['calls']:5d}x  {op['op'][:50]}")
    print(f"wall ratio ReactFace / FAD: {result['wall_ratio']:.0f}x")


if __name__ == "__main__":
    main()
