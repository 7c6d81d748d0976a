"""`fad-edge bench`: FLOPs, parameters and latency of FAD and the replica pipelines, side by side in one run.

FLOPs come from one counter for everything (`layers.flop_counter`, torch's FlopCounterMode: 2 per
multiply-add, plus the CPU attention kernel it lacks), counted on the meta device for the replicas
so that counting costs no compute. Latency is wall time at batch size 1 for the given frames, after
warm-up. DECA's per-frame stages run one frame at a time in any deployment, so its time for T frames
is measured per frame and multiplied by T (stated as "per-frame x T"); everything else is timed whole.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fad_edge.backends import CHECKPOINT, get_backend
from fad_edge.bench.labels import parse_label
from fad_edge.bench.pipelines.deca import DecaPipeline
from fad_edge.bench.pipelines.layers import count_flops, count_params
from fad_edge.bench.pipelines.reactface import ReactFacePipeline
from fad_edge.bench.timing import Latency, gemm_gflops, machine, summarize, time_calls
from fad_edge.constants import FPS, SAMPLE_RATE
from fad_edge.data.inputs import SpeakerInputs
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ModelConfig
from fad_edge.models.presets import preset
from fad_edge.reporting import Say, silent
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.ort_runner import OrtRunner
from fad_edge.runtime.stream import STREAM_THREADS, ListenerStream
from fad_edge.runtime.stream_stats import StreamStats
from fad_edge.sampling import DEFAULT_SAMPLER, SamplerSettings

# Longest sequence whose ReactFace FLOPs are counted, per window: counting traces every window's ops on the meta
# device, about half a second a window on one core (frame by frame at 256 frames took over 2 minutes).
REACTFACE_FLOPS_MAX = {8: 256, 1: 64}
# The paper's ratios for its own model (the paper preset) against the whole DECA-based pipeline (detector and
# landmarks included: not against the encoder alone) and against ReactFace.
PAPER_CLAIMS = {"deca": {"flops": 40.0, "time": 600.0}, "reactface": {"flops": 1.185, "time": 101.0},
                "reactface-frame": {"flops": 1.185, "time": 101.0}}
PAPER_CLAIMS |= {f"{key}-batched": claim for key, claim in PAPER_CLAIMS.items() if key.startswith("deca")}
PAPER_PRESET = "paper"
# What the result's numbers are in: its latencies are seconds, where the tables print ms.
UNITS = {"latency": "seconds per call", "flops": "FLOPs per call (2 per multiply-add)", "params": "parameters",
         "gemm_gflops": "GFLOP/s (fp32 GEMM, the best of several samples)", "throughput.seconds": "seconds per call",
         "stream": "ms (the keys that end in _ms)"}


@dataclass
class BenchConfig:
    frames: list[int] = field(default_factory=lambda: [64])
    backends: list[str] = field(default_factory=lambda: ["torch", "ort", "ort-int8"])
    pipelines: list[str] = field(default_factory=lambda: ["fad", "deca", "reactface"])
    runs: int = 30
    threads: int = 2
    preset: str = "paper"
    model: Path | None = None  # an export folder; default: a random-weight export of `preset`
    replica_budget: float = 60.0  # seconds of timed runs per replica and frame count, past which timing stops
    replica_max_frames: int = 64  # ReactFace is timed up to this many frames (FLOPs always; DECA at any length)
    strict_reactface: bool = False  # also time ReactFace frame by frame (minutes)
    stream: bool = True
    device: str | None = None  # cuda, cuda:N (or cpu, to check the plumbing): the device bench; None: this CPU bench
    throughput_frames: list[int] = field(default_factory=lambda: [1024, 2048, 4096])  # device bench only
    deca_batch: int = 32  # device bench: frames per batch in the batched DECA variant
    skip_unavailable: bool = False  # device bench: leave out (and list) backends that cannot run here, not fail
    sampler: str = DEFAULT_SAMPLER  # the model's named sampler FAD is timed with (its steps set ELNet's share)


@dataclass
class Row:
    pipeline: str
    label: str
    backend: str
    frames: int
    flops: float
    params: int
    latency: Latency | None
    note: str = ""
    device: str = "cpu"  # where it ran (the device bench's CPU check runs its GPU backends on the CPU)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "latency"},
                "latency": None if self.latency is None else self.latency.to_dict()}


def uncounted_reactface_row(key: str, window: int, backend: str, frames: int, device: str = "cpu") -> Row:
    """The row of a ReactFace variant past its FLOPs-counting limit (REACTFACE_FLOPS_MAX): its parameters (which
    no length changes), no FLOPs or time, a note."""
    return Row(key, REACTFACE_LABELS[window], backend, frames, float("nan"), reactface_params(), None,
               f"not counted beyond {REACTFACE_FLOPS_MAX[window]} frames", device)


@functools.cache
def reactface_params() -> int:
    """ReactFace's parameter count, counted on the meta device (no memory, no weights drawn)."""
    with torch.device("meta"):
        return count_params(ReactFacePipeline())


def reactface_counted(frames: int, window: int) -> bool:
    """Whether ReactFace's FLOPs are counted at this length (see REACTFACE_FLOPS_MAX)."""
    return frames <= REACTFACE_FLOPS_MAX[window]


def nothing_to_measure(config: BenchConfig) -> str | None:
    """Why the bench would count and time nothing, or None: only ReactFace asked for, at lengths past its FLOPs
    limit (its timing stops before it). Said before any work, so an empty run never replaces a result."""
    if any(name in config.pipelines for name in ("fad", "deca")):
        return None
    if "reactface" in config.pipelines and any(reactface_counted(frames, window) for frames in config.frames
                                               for window in REACTFACE_LABELS):
        return None
    limits = ", ".join(f"{limit} frames ({REACTFACE_LABELS[window]})" for window, limit in REACTFACE_FLOPS_MAX.items())
    return (f"nothing to measure at {', '.join(map(str, config.frames))} frames: ReactFace is counted (and timed) "
            f"up to {limits}; give fewer --frames or add fad or deca to --pipelines")


def speaker_inputs(config, frames: int, seed: int = 0) -> SpeakerInputs:
    rng = np.random.default_rng(seed)
    images = rng.random((frames, 3, config.image_size, config.image_size), dtype=np.float32)
    mel = rng.standard_normal((frames, 1, config.audio_window, config.n_mels), dtype=np.float32) * 0.3
    return SpeakerInputs(images, mel, frames, pixels_in_range=True)  # rng.random draws in [0, 1)


def fad_flops(model: ListenerModel, frames: int, sampler: str = DEFAULT_SAMPLER) -> float:
    config = model.config
    images = torch.zeros(frames, 3, config.image_size, config.image_size)
    mel = torch.zeros(frames, 1, config.audio_window, config.n_mels)
    settings = SamplerSettings.named(sampler, config)

    def generate() -> None:
        model.generate(images, mel, settings, np.random.default_rng(0))

    return float(count_flops(generate))


def fad_label(config: BenchConfig, runner: ClipRunner) -> str:
    """The FAD row's name: preset and denoising steps, and the sampler where it is not the default."""
    steps = runner.settings.steps
    sampler = "" if config.sampler == DEFAULT_SAMPLER else f", {config.sampler} sampler"
    return f"FAD ({config.preset} preset, {steps} step{'s' if steps > 1 else ''}{sampler})"


def export_for_bench(model: ListenerModel, folder: Path, say: Say, int8: bool = True, trt: bool = False) -> Path:
    """A random-weight checkpoint of the model, exported with INT8 (cost only: the weights do not matter).

    The device bench asks for no INT8 (a CPU format) and, where TensorRT is installed, for engines.
    """
    from fad_edge.checkpoint import save_checkpoint
    from fad_edge.data.normalization import Normalization
    from fad_edge.export.pipeline import ExportOptions, export_model

    checkpoint = save_checkpoint(folder / "checkpoint", model, Normalization.identity())
    formats = ["FP32"] + ["INT8"] * int8 + ["TensorRT"] * trt
    say(f"exporting a random-weight FAD model to ONNX ({' + '.join(formats)})")
    export_model(ExportOptions(checkpoint=checkpoint, out=folder / "model", int8=int8, trt=trt, check_sessions=1,
                               check_seconds=2.0, calibration_sessions=2, calibration_seconds=2.0))
    return folder / "model"


def bench_model_config(model: Path | None, preset_name: str) -> ModelConfig:
    """The config FAD is timed with: the export's own with `model` (its preset and any override), else the preset's.

    The torch backend and the FLOPs count run a random-weight model of it, so they measure the same network as
    the export's runners do.
    """
    if model is None:
        return preset(preset_name)
    from fad_edge.artifact import ExportManifest

    return ExportManifest.load(model).model_config


def fad_runners(config: BenchConfig, model: ListenerModel, folder: Path, say: Say) -> dict[str, ClipRunner]:
    """One runner per requested label; export-based backends share one export of the model."""
    from fad_edge.runtime.select import open_runner
    from fad_edge.runtime.torch_runner import TorchRunner

    runners: dict[str, ClipRunner] = {}
    exported: Path | None = config.model
    for label in config.backends:
        variant = parse_label(label)
        backend = get_backend(variant.backend)
        backend.check_precision(variant.precision)
        backend.check_installed()
        if backend.reads == CHECKPOINT:
            runners[label] = TorchRunner(model, sampler=config.sampler)
            continue
        if exported is None:
            exported = export_for_bench(model, folder, say)
        runners[label] = open_runner(exported, variant.backend, variant.precision, threads=config.threads,
                                     sampler=config.sampler)
    return runners


def synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """`fn`, then a wait for the GPU's queued work: wall time of a call is then its GPU time too."""
    if device.type != "cuda":
        return fn

    def call() -> object:
        result = fn()
        torch.cuda.synchronize(device)
        return result

    return call


DECA_LABELS = {"deca": "DECA-based (S3FD + 2DFAN-4 + DECA ResNet-50 + ViCo LSTM)",
               "deca-encoder-only": "DECA encoder + LSTM only (no detector, landmarks)"}
REACTFACE_LABELS = {8: "ReactFace-like, online windows of 8", 1: "ReactFace-like, frame by frame"}
NOT_TIMED = {8: "not timed at this length", 1: "FLOPs only (time it with --strict-reactface)"}


def deca_flops(full: bool, frames: int) -> float:
    """DECA's FLOPs for `frames` frames, counted on the meta device: frame by frame, so T frames cost T times one
    (counting all T op by op takes minutes), plus the LSTM over the sequence."""
    with torch.device("meta"):
        meta = DecaPipeline(full)
        flops = frames * count_flops(lambda: meta.encode_frame(torch.empty(1, 3, 480, 640)))
        flops += count_flops(lambda: meta.listener(torch.empty(1, frames, 56)))
    return float(flops)


def reactface_flops(frames: int, window: int) -> float:
    audio_len = int(round(frames * SAMPLE_RATE / FPS))
    with torch.device("meta"):
        meta = ReactFacePipeline()
        video, audio = torch.empty(frames, 3, 224, 224), torch.empty(audio_len)
        return float(count_flops(lambda: meta.online(video, audio, window)))


def replica_rows(name: str, frames: int, config: BenchConfig, say: Say,
                 per_frame: dict[str, list[float]] | None = None) -> list[Row]:
    """FLOPs (meta device), parameters and latency of one replica.

    DECA runs frame by frame, so its per-frame time is measured once (kept in `per_frame` across
    frame counts) and scaled to any length; ReactFace is timed up to replica_max_frames.
    """
    rng = torch.Generator().manual_seed(0)
    per_frame = {} if per_frame is None else per_frame
    rows = []
    if name == "deca":
        for full in (True, False):
            key = "deca" if full else "deca-encoder-only"
            flops = deca_flops(full, frames)
            pipeline = DecaPipeline(full).eval()
            with torch.no_grad():
                if key not in per_frame:
                    say(f"timing {key}, per frame")
                    frame = torch.rand(1, 3, 480, 640, generator=rng)
                    per_frame[key] = time_calls(lambda: pipeline.encode_frame(frame), config.runs, warmup=1,
                                                budget=config.replica_budget / 2)
                coeffs = torch.zeros(1, frames, 56)
                lstm = float(np.median(time_calls(lambda: pipeline.listener(coeffs), 5, warmup=1)))
            latency = summarize(per_frame[key], scale=frames, extra=lstm)
            rows.append(Row(key, DECA_LABELS[key], "torch", frames, flops, count_params(pipeline), latency,
                            f"per-frame x {frames} + LSTM over {frames}"))
    elif name == "reactface":
        variants = [("reactface", 8), ("reactface-frame", 1)]
        audio_len = int(round(frames * SAMPLE_RATE / FPS))
        for key, window in variants:
            label = REACTFACE_LABELS[window]
            if not reactface_counted(frames, window):  # left out rather than stalling the run
                rows.append(uncounted_reactface_row(key, window, "torch", frames))
                continue
            flops = reactface_flops(frames, window)
            react = ReactFacePipeline().eval()
            timed = frames <= config.replica_max_frames and (window == 8 or config.strict_reactface)
            latency = None
            if timed:
                say(f"timing {key}")
                video = torch.rand(frames, 3, 224, 224, generator=rng)
                audio = torch.randn(audio_len, generator=rng) * 0.1
                with torch.no_grad():
                    latency = summarize(time_calls(lambda: react.online(video, audio, window), config.runs,
                                                   warmup=1, budget=config.replica_budget))
            rows.append(Row(key, label, "torch", frames, flops, count_params(react), latency,
                            "" if latency else NOT_TIMED[window]))
    return rows


def stream_figures(runner: ClipRunner, seconds: float = 8.0) -> dict:
    """Per-clip latency of ListenerStream fed a synthetic session at real time, as a camera and microphone would.

    Measured twice in a row on the same session: encoding each frame's video and audio as they arrive
    (the default) and encoding each clip at once when complete. Fed faster, clips would also wait
    behind each other, and the latency would measure the backlog.
    """
    from fad_edge.data.synthetic import SyntheticConfig, generate_session

    session = generate_session(3, SyntheticConfig(seconds=seconds, image_size=2 * runner.config.image_size))

    def figures(encode_ahead: bool) -> dict:
        stats, computes = _streamed_at_real_time(runner, session.frames, session.audio, encode_ahead)
        return {"clips": stats.clips, "latency_p50_ms": stats.latency_p50_ms, "latency_p99_ms": stats.latency_p99_ms,
                "compute_p50_ms": stats.compute_p50_ms, "real_time_factor": sum(computes) / seconds}

    return {"backend": runner.name, **figures(encode_ahead=True), "clip_at_once": figures(encode_ahead=False),
            "note": "a synthetic session fed at real time; latency from a clip's last input to its motion, "
                    "with each frame's video and audio encoded as they arrive (clip_at_once: encoded when "
                    "the clip is complete); RTF = the model's time over the input's duration"}


def _streamed_at_real_time(runner: ClipRunner, frames: np.ndarray, audio: np.ndarray,
                           encode_ahead: bool) -> tuple[StreamStats, list[float]]:
    """Each frame with its 33 ms of audio, at 30 fps: the stream's stats and each clip's compute seconds."""
    chunk = SAMPLE_RATE // FPS
    computes: list[float] = []
    with ListenerStream(runner, on_clip=lambda clip: computes.append(clip.compute),
                        encode_ahead=encode_ahead) as stream:
        started = time.perf_counter()
        for k, frame in enumerate(frames):
            time.sleep(max(0.0, started + k / FPS - time.perf_counter()))
            stream.push_audio(audio[k * chunk : (k + 1) * chunk], SAMPLE_RATE)
            stream.push_video(frame, k / FPS)
    return stream.stats(), computes


def run_bench(config: BenchConfig, say: Say = silent) -> dict:
    if config.device is not None:  # FAD's GPU backends and the replicas on one device
        from fad_edge.bench.device import run_device_bench

        return run_device_bench(config, say)
    torch.set_num_threads(config.threads)
    say("measuring the CPU's fp32 GEMM throughput")
    reference = gemm_gflops()
    torch.manual_seed(0)
    model = ListenerModel(bench_model_config(config.model, config.preset)).eval()
    rows: list[Row] = []
    stream: dict | None = None
    per_frame: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fad-bench-") as scratch:
        runners = fad_runners(config, model, Path(scratch), say) if "fad" in config.pipelines else {}
        for frames in config.frames:
            if "fad" in config.pipelines:
                flops = fad_flops(model, frames, config.sampler)
                inputs = speaker_inputs(model.config, frames)
                for backend, runner in runners.items():
                    say(f"timing FAD ({backend}), {frames} frames")
                    latency = summarize(time_calls(lambda: runner.run_inputs(inputs), config.runs, warmup=3))
                    rows.append(Row("fad", fad_label(config, runner), backend, frames, flops,
                                    count_params(model), latency))
            for name in ("deca", "reactface"):
                if name in config.pipelines:
                    rows.extend(replica_rows(name, frames, config, say, per_frame))
        int8 = runners.get("ort-int8")
        if config.stream and isinstance(int8, OrtRunner):
            say("streaming latency (ListenerStream, ORT INT8)")
            with OrtRunner(int8.folder, "int8", threads=STREAM_THREADS, sampler=config.sampler) as streamed:
                stream = stream_figures(streamed)
        for runner in runners.values():
            runner.close()
    return {"machine": machine(), "units": UNITS, "gemm_gflops": reference,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()},
            "rows": [row.to_dict() for row in rows], "ratios": ratios(rows, model.config.preset), "stream": stream,
            "paper_claims": PAPER_CLAIMS}


def ratios(rows: list[Row], preset_name: str = PAPER_PRESET) -> list[dict]:
    """Each replica against FAD's fastest backend at the same frame count, with the paper's claim where there is
    one for that replica and FAD is the paper's model."""
    out = []
    for frames in sorted({row.frames for row in rows}):
        fad = [r for r in rows if r.pipeline == "fad" and r.frames == frames and r.latency]
        if not fad:
            continue
        best = min(fad, key=lambda r: r.latency.median)  # type: ignore[union-attr]
        for row in rows:
            if row.pipeline == "fad" or row.frames != frames:
                continue
            out.append({
                "pipeline": row.pipeline, "frames": frames, "against": f"fad/{best.backend}",
                "flops_ratio": row.flops / best.flops,
                "time_ratio": (row.latency.median / best.latency.median  # type: ignore[union-attr]
                               if row.latency else None),
                "paper": PAPER_CLAIMS.get(row.pipeline) if preset_name == PAPER_PRESET else None,
            })
    return out
