"""`fad-edge profile`: where a runner's time goes, per graph and per op type, from ONNX Runtime's own profiler.

ONNX Runtime writes one Chrome trace per session: a list of events, among them one "model_run"
("cat": "Session") per `session.run` and one "<node>_kernel_time" ("cat": "Node") per node run, each
with its duration "dur" in microseconds and its op type in "args"/"op_name". We run the ORT runner
(`warmup` runs, then `runs` timed ones) with every session profiled, and sum the timed runs' events
per graph and per op type. A graph's time not spent in any kernel is shown as "between ops" (the
executor, memory planning, copies of inputs and outputs).

The profiler starts with the session and cannot be paused, so the warm-up runs are in the trace
too: they are the first `warmup` runner calls, and each runner call makes the same number of
session calls per graph, so the first ones are skipped by count. This module imports no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fad_edge.artifact import AUDIO_ENCODER, ELNET_EPS, ELNET_X0, VIDEO_ENCODER
from fad_edge.atomic import atomic_write_together
from fad_edge.constants import CLIP_LEN
from fad_edge.data.inputs import SpeakerInputs
from fad_edge.models.config import ModelConfig
from fad_edge.reporting import Say, silent

KERNEL_SUFFIX = "_kernel_time"  # ORT names a node's kernel event "<node name>_kernel_time"
GRAPH_ORDER = (VIDEO_ENCODER, AUDIO_ENCODER, ELNET_X0, ELNET_EPS)


@dataclass(frozen=True)
class OpTime:
    """One op type's kernels in one graph, per runner call."""

    op_type: str
    nodes: float  # kernel runs per runner call
    ms: float


@dataclass(frozen=True)
class GraphTime:
    """One graph's session runs, per runner call; `ops` by time, the largest first."""

    graph: str
    calls: float  # session runs per runner call
    ms: float  # the runs' whole time (ORT's "model_run")
    ops: list[OpTime] = field(default_factory=list)

    @property
    def between_ops_ms(self) -> float:
        """Run time outside every kernel: the executor's own work, allocation, copies."""
        return max(0.0, self.ms - sum(op.ms for op in self.ops))


def summarize_trace(events: list[dict], graph: str, runs: int, warmup: int = 0) -> GraphTime:
    """One session's trace events -> its time per runner call, the first `warmup` calls' events left out.

    Each runner call makes the same number of session runs, so the runs in the trace must be a
    multiple of `warmup + runs`; anything else means the trace is not of those calls (a bug).
    """
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    calls, remainder = divmod(len(model_runs), warmup + runs)
    if remainder or not calls:
        raise ValueError(f"{graph}: {len(model_runs)} session runs in the trace, not a multiple of "
                         f"{warmup} warm-up + {runs} timed runner calls")
    timed = model_runs[warmup * calls :]
    start = timed[0]["ts"]
    kernels: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith(KERNEL_SUFFIX) and event["ts"] >= start:
            kernels[event.get("args", {}).get("op_name", "unknown")].append(event["dur"])
    ops = [OpTime(op, len(durations) / runs, sum(durations) / 1000 / runs) for op, durations in kernels.items()]
    ops.sort(key=lambda op: (-op.ms, op.op_type))
    return GraphTime(graph, float(calls), sum(e["dur"] for e in timed) / 1000 / runs, ops)


def read_trace(path: Path) -> list[dict]:
    """ORT's trace file: a JSON list of events (some versions wrap it in {"traceEvents": [...]})."""
    data = json.loads(Path(path).read_text())
    return data["traceEvents"] if isinstance(data, dict) else data


@dataclass
class ProfileConfig:
    folder: Path
    precision: str = "fp32"
    frames: int = 64  # per runner call: the runner encodes 64 frames per encoder call, so 64 is one call
    runs: int = 10
    warmup: int = 2
    threads: int = 2
    steps: int | None = None  # denoising steps (None: the model's default)
    trace_dir: Path | None = None  # keep ORT's raw traces here (GRAPH.json); by default they are deleted


def random_inputs(config: ModelConfig, frames: int, seed: int = 0) -> SpeakerInputs:
    """Model-ready inputs of `frames` frames, padded to whole clips: op costs do not depend on the values."""
    rng = np.random.default_rng(seed)
    padded = -(-frames // CLIP_LEN) * CLIP_LEN
    images = rng.random((padded, 3, config.image_size, config.image_size), dtype=np.float32)
    mel = rng.standard_normal((padded, 1, config.audio_window, config.n_mels), dtype=np.float32) * 0.3
    return SpeakerInputs(images, mel, frames, pixels_in_range=True)  # rng.random draws in [0, 1)


def run_profile(config: ProfileConfig, say: Say = silent) -> dict:
    """Profile the ORT runner on random inputs; the summary (`fad_edge.bench.profile_report` prints it) as a dict."""
    import onnxruntime

    from fad_edge.bench.timing import cpu_name
    from fad_edge.runtime.ort_runner import OrtRunner

    with tempfile.TemporaryDirectory(prefix="fad-profile-") as scratch:
        say("opening the sessions with ONNX Runtime's profiler on")
        runner = OrtRunner(config.folder, config.precision, threads=config.threads, steps=config.steps,
                           profile_dir=Path(scratch))
        try:
            inputs = random_inputs(runner.config, config.frames)
            wall = []
            for k in range(config.warmup + config.runs):
                say(f"run {k + 1} of {config.warmup + config.runs}" + (" (warm-up)" if k < config.warmup else ""))
                started = time.perf_counter()
                runner.run_inputs(inputs)
                wall.append(time.perf_counter() - started)
            traces = runner.end_profiling()
        finally:
            runner.close()
        graphs = [summarize_trace(read_trace(path), graph, config.runs, config.warmup)
                  for graph, path in traces.items()]
        if config.trace_dir is not None:
            atomic_write_together({config.trace_dir / f"{graph}.json": path.read_bytes()
                                   for graph, path in traces.items()})
    graphs.sort(key=lambda g: GRAPH_ORDER.index(g.graph))
    return {
        "export": str(config.folder), "precision": config.precision, "frames": config.frames,
        "clips": inputs.n_clips, "runs": config.runs, "warmup": config.warmup, "threads": config.threads,
        "steps": runner.settings.steps, "preset": runner.config.preset,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__},
        "wall_ms_median": float(np.median(wall[config.warmup :])) * 1000,
        "total_ms": sum(g.ms for g in graphs),
        "graphs": [{**asdict(g), "between_ops_ms": g.between_ops_ms} for g in graphs],
        "traces": None if config.trace_dir is None else {g: str(config.trace_dir / f"{g}.json") for g in traces},
        "note": "ms are per runner call (all its session runs), from ONNX Runtime's profiler; profiling adds "
                "a little time per node, so wall_ms_median is a little above an unprofiled run",
    }

