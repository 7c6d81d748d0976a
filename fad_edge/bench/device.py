"""`fad-edge bench --device cuda`: FAD's GPU backends and the replica pipelines on one GPU, plus batch throughput.

Everything runs in one process on the same device, so the ratios compare like with like:
- FAD: the CUDA runner eager and through CUDA graphs, FP32 and FP16 (FP16 also channels-last),
  and ONNX Runtime's CUDA and TensorRT providers and TensorRT engines where they are installed (the
  others are listed as skipped, with the reason). Each is timed end to end: host arrays in, motion out.
- the DECA-based replica frame by frame, as deployed (per-frame time x T), and batched
  (`deca_batch` frames per call, scaled the same way); the ReactFace-like replica online. Replicas
  are timed to the end of their GPU work (`torch.cuda.synchronize` after each call).
- batch throughput: frames per second when one call carries 1024, 2048 or 4096 frames, i.e. the
  latest clips of 128 to 512 robots served by one GPU.

`--device cpu` runs the same bench on the CPU (the CUDA runner eager, its graph buckets through a
fake capture): a check of the plumbing where no GPU is present, not a figure to quote.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from fad_edge.backends import CHECKPOINT, get_backend
from fad_edge.bench.labels import parse_label
from fad_edge.bench.pipelines.deca import DecaPipeline
from fad_edge.bench.pipelines.layers import count_params
from fad_edge.bench.pipelines.reactface import ReactFacePipeline
from fad_edge.bench.run import (
    DECA_LABELS,
    NOT_TIMED,
    PAPER_CLAIMS,
    REACTFACE_LABELS,
    UNITS,
    BenchConfig,
    Row,
    bench_model_config,
    deca_flops,
    export_for_bench,
    fad_flops,
    fad_label,
    ratios,
    reactface_counted,
    reactface_flops,
    speaker_inputs,
    stream_figures,
    synchronized,
    uncounted_reactface_row,
)
from fad_edge.bench.timing import gemm_gflops, machine, summarize, time_calls
from fad_edge.constants import FPS, SAMPLE_RATE
from fad_edge.devices import resolve_device
from fad_edge.errors import BackendUnavailableError, FadEdgeError
from fad_edge.listener_model import ListenerModel
from fad_edge.reporting import Say, silent
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.cuda_graphs import EagerCapture
from fad_edge.runtime.cuda_runner import CudaRunner


def unavailable_here(label: str, device: torch.device) -> str | None:
    """Why the labelled backend cannot run on `device` here, or None (the CUDA runner also runs on the CPU,
    uncompiled)."""
    variant = parse_label(label)
    backend = get_backend(variant.backend)
    backend.check_precision(variant.precision)
    if variant.backend == "cuda":
        if device.type != "cuda":  # the CPU check of the plumbing: Inductor's C++ code would take minutes to build
            return "torch.compile is timed on a GPU only" if variant.compiled else None
        return backend.unavailable()
    reason = backend.unavailable()
    if reason is None and backend.device != device.type:
        reason = f"backend {backend.name} runs on a {backend.device} device, not {device}"
    return reason


def cuda_variant(label: str, model: ListenerModel, device: torch.device, sampler: str) -> CudaRunner:
    """The CUDA runner a `cuda...` label names; on the CPU its graph buckets run through the eager fake capture, so
    the plumbing is checked there."""
    variant = parse_label(label)
    capture = None if device.type == "cuda" or variant.eager else EagerCapture()
    return CudaRunner(model, get_backend("cuda").check_precision(variant.precision), device=device,
                      graphs=not variant.eager, channels_last=variant.channels_last, capture=capture, sampler=sampler,
                      compiled=variant.compiled)


def stream_variant(rows: list[Row]) -> str | None:
    """The CUDA-graph variant of the CUDA runner that was fastest at the smallest frame count timed (a stream's
    calls are one clip), or None if none was timed."""
    timed = [(row.frames, row.latency.median, row.backend) for row in rows if row.pipeline == "fad" and row.latency
             and parse_label(row.backend).backend == "cuda" and not parse_label(row.backend).eager]
    if not timed:
        return None
    smallest = min(frames for frames, _, _ in timed)
    return min((median, label) for frames, median, label in timed if frames == smallest)[1]


def device_runners(config: BenchConfig, model: ListenerModel, device: torch.device, folder: Path,
                   say: Say) -> tuple[dict[str, ClipRunner], dict[str, str]]:
    """A runner per label that can run here; the others are skipped with the reason (`skip_unavailable`) or refused.

    Export-based backends share one export of the model, made when the first of them is opened; an
    export or a provider that fails (e.g. a library missing on the machine) skips them too.
    """
    from fad_edge.runtime.select import open_runner
    from fad_edge.runtime.torch_runner import TorchRunner

    runners: dict[str, ClipRunner] = {}
    skipped: dict[str, str] = {}

    def skip(label: str, reason: str) -> None:
        if not config.skip_unavailable:
            raise BackendUnavailableError(reason)
        skipped[label] = reason

    wanted = []
    for label in config.backends:
        reason = unavailable_here(label, device)
        if reason:
            skip(label, reason)
        else:
            wanted.append(label)
    exported: Path | None = config.model
    for label in wanted:
        variant = parse_label(label)
        backend = get_backend(variant.backend)
        if variant.backend == "cuda":
            runners[label] = cuda_variant(label, model, device, config.sampler)
        elif backend.reads == CHECKPOINT:
            runners[label] = TorchRunner(model, sampler=config.sampler)
        else:
            try:
                if exported is None:
                    engines = any(parse_label(other).backend == "trt" for other in wanted)
                    exported = export_for_bench(model, folder, say, int8=False, trt=engines)
                runners[label] = open_runner(exported, variant.backend, variant.precision, threads=config.threads,
                                             sampler=config.sampler)
            except (FadEdgeError, ModuleNotFoundError) as error:
                skip(label, f"backend {backend.name}: {str(error).splitlines()[0] if str(error) else error!r}")
    return runners, skipped


def device_replica_rows(name: str, frames: int, config: BenchConfig, say: Say, per_frame: dict[str, list[float]],
                        device: torch.device) -> list[Row]:
    """The replicas on `device`: DECA frame by frame and batched (per-frame times kept in `per_frame`), ReactFace
    online."""
    rng = torch.Generator().manual_seed(0)
    backend, ran_on = f"torch-{device.type}", str(device)
    rows: list[Row] = []
    if name == "deca":
        batch = config.deca_batch
        for full in (True, False):
            key = "deca" if full else "deca-encoder-only"
            pipeline = DecaPipeline(full).eval().to(device)
            with torch.no_grad():
                if key not in per_frame:
                    say(f"timing {key} on {device}, frame by frame and {batch} at a time")
                    frame = torch.rand(1, 3, 480, 640, generator=rng).to(device)
                    per_frame[key] = time_calls(synchronized(lambda: pipeline.encode_frame(frame), device),
                                                config.runs, warmup=2, budget=config.replica_budget / 4)
                    frames_in = torch.rand(batch, 3, 480, 640, generator=rng).to(device)
                    per_batch = time_calls(synchronized(lambda: pipeline.encode_frame(frames_in), device),
                                           config.runs, warmup=2, budget=config.replica_budget / 4)
                    per_frame[key + "-batched"] = [seconds / batch for seconds in per_batch]
                coeffs = torch.zeros(1, frames, 56, device=device)
                listener = synchronized(lambda: pipeline.listener(coeffs), device)
                lstm = float(np.median(time_calls(listener, 5, warmup=1)))
            flops, params = deca_flops(full, frames), count_params(pipeline)
            rows.append(Row(key, DECA_LABELS[key], backend, frames, flops, params,
                            summarize(per_frame[key], scale=frames, extra=lstm),
                            f"per-frame x {frames} + LSTM over {frames}", ran_on))
            rows.append(Row(key + "-batched", f"{DECA_LABELS[key]}, {batch} frames per call", backend, frames, flops,
                            params, summarize(per_frame[key + "-batched"], scale=frames, extra=lstm),
                            f"per {batch}-frame batch / {batch} x {frames} + LSTM over {frames}", ran_on))
            del pipeline
    elif name == "reactface":
        audio_len = int(round(frames * SAMPLE_RATE / FPS))
        react = ReactFacePipeline().eval().to(device)
        for key, window in (("reactface", 8), ("reactface-frame", 1)):
            if not reactface_counted(frames, window):
                rows.append(uncounted_reactface_row(key, window, backend, frames, ran_on))
                continue
            latency = None
            if frames <= config.replica_max_frames and (window == 8 or config.strict_reactface):
                say(f"timing {key} on {device}, {frames} frames")
                video = torch.rand(frames, 3, 224, 224, generator=rng).to(device)
                audio = (torch.randn(audio_len, generator=rng) * 0.1).to(device)
                with torch.no_grad():
                    call = synchronized(lambda: react.online(video, audio, window), device)
                    latency = summarize(time_calls(call, config.runs, warmup=1, budget=config.replica_budget))
            note = "" if latency else NOT_TIMED[window]
            rows.append(Row(key, REACTFACE_LABELS[window], backend, frames, reactface_flops(frames, window),
                            count_params(react), latency, note, ran_on))
        del react
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def throughput(runner: ClipRunner, label: str, config: BenchConfig, say: Say, device: torch.device) -> list[dict]:
    """Frames per second when one call carries many frames (e.g. the latest clips of many robots)."""
    out = []
    for frames in config.throughput_frames:
        say(f"throughput of FAD ({label}), {frames} frames per call")
        inputs = speaker_inputs(runner.config, frames)
        seconds = float(np.median(time_calls(lambda: runner.run_inputs(inputs), min(config.runs, 5), warmup=1,
                                             budget=config.replica_budget)))
        rate = frames / seconds
        out.append({"backend": label, "device": str(device), "frames": frames, "seconds": seconds,
                    "frames_per_second": rate, "clips_per_second": rate / runner.config.clip_len})
    return out


def fp16_speedups(rows: list[Row]) -> list[dict]:
    """FP16 against FP32, both through CUDA graphs, at each frame count (use FP16 only where this is above 1)."""
    medians = {(r.backend, r.frames): r.latency.median for r in rows if r.pipeline == "fad" and r.latency}
    pairs = [(frames, fp32, medians.get(("cuda-fp16", frames))) for (backend, frames), fp32 in sorted(medians.items())
             if backend == "cuda"]
    return [{"frames": frames, "fp32_s": fp32, "fp16_s": fp16, "speedup": fp32 / fp16}
            for frames, fp32, fp16 in pairs if fp16 is not None]


def run_device_bench(config: BenchConfig, say: Say = silent) -> dict:
    """The bench on `config.device` (see the module docstring); the result has the CPU bench's keys and more."""
    device = resolve_device(config.device or "cuda")
    torch.set_num_threads(config.threads)
    say(f"measuring the fp32 GEMM throughput of {device}")
    reference = gemm_gflops(4096 if device.type == "cuda" else 512, device=device)
    torch.manual_seed(0)
    model = ListenerModel(bench_model_config(config.model, config.preset)).eval()
    rows: list[Row] = []
    rates: list[dict] = []
    stream: dict | None = None
    per_frame: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fad-bench-") as scratch:
        say(f"preparing FAD's runners on {device}")
        runners, skipped = ({}, {}) if "fad" not in config.pipelines else device_runners(
            config, model, device, Path(scratch), say)
        say("counting FAD's FLOPs (on the CPU)")
        flops = {frames: fad_flops(model, frames, config.sampler) for frames in config.frames} if runners else {}
        for label, runner in runners.items():  # one runner at a time on the GPU, then its memory is returned
            for frames in config.frames:
                say(f"timing FAD ({label}), {frames} frames")
                inputs = speaker_inputs(model.config, frames)
                latency = summarize(time_calls(lambda: runner.run_inputs(inputs), config.runs, warmup=3))
                rows.append(Row("fad", fad_label(config, runner), label, frames, flops[frames],
                                count_params(model), latency, runner.name, str(device)))
            rates.extend(throughput(runner, label, config, say, device))
            runner.close()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        streamed = stream_variant(rows) if config.stream else None
        if streamed is not None:
            say(f"streaming latency (ListenerStream, {streamed}, the fastest at one clip)")
            runner = cuda_variant(streamed, model, device, config.sampler)
            try:
                stream = stream_figures(runner)
            finally:
                runner.close()
    for frames in config.frames:
        for name in ("deca", "reactface"):
            if name in config.pipelines:
                rows.extend(device_replica_rows(name, frames, config, say, per_frame, device))
    record = machine(device)
    record["onnxruntime_providers"] = _providers()
    return {"machine": record, "device": str(device), "units": UNITS, "gemm_gflops": reference,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()},
            "rows": [row.to_dict() for row in rows], "ratios": ratios(rows, model.config.preset), "throughput": rates,
            "fp16": fp16_speedups(rows), "skipped": skipped, "stream": stream, "paper_claims": PAPER_CLAIMS}


def _providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())
