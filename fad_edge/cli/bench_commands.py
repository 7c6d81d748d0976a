"""`fad-edge bench`: FLOPs, parameters and latency of FAD against the replica pipelines; `fad-edge profile`: where
ONNX Runtime's time goes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fad_edge.bench.labels import GPU_BACKENDS, bench_labels
from fad_edge.bench.timing import MIN_TIMED_RUNS
from fad_edge.cli.validate import (
    SAMPLER_HELP,
    check_finite,
    check_frames_fit,
    check_output_dir,
    check_output_file,
    check_output_stem,
    check_outside,
    check_preset,
    check_sampler_name,
    check_threads,
)
from fad_edge.constants import CLIP_LEN
from fad_edge.models.config import ModelConfig
from fad_edge.sampling import DEFAULT_SAMPLER

console = Console()
MAX_RUNS = 10_000  # timed runs per measurement; more add nothing to a median
# Where bench writes by default: the CPU bench, the GPU bench, and the GPU bench's plumbing check on the CPU (whose
# figures must never replace a GPU's).
DEFAULT_OUT = {"cpu": Path("bench/results/bench"), "gpu": Path("bench/results/gpu_bench"),
               "cpu check": Path("bench/results/gpu_bench_cpu_check")}


def _ints(text: str, name: str) -> list[int]:
    """The positive integers of a comma-separated list, each once, in the order given."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of integers", param_hint=name) from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter("values must be positive", param_hint=name)
    return list(dict.fromkeys(values))


def _names(text: str, allowed: tuple[str, ...], name: str) -> list[str]:
    """The names of a comma-separated list, each once, in the order given."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise typer.BadParameter(f"choose from {', '.join(allowed)}", param_hint=name)
    return list(dict.fromkeys(values))


def default_out(device: str | None) -> Path:
    """The default --out: the GPU bench's own, or with --device cpu (a plumbing check) one beside it."""
    if device is None:
        return DEFAULT_OUT["cpu"]
    return DEFAULT_OUT["cpu check" if device.strip().lower().startswith("cpu") else "gpu"]


def _check_report_place(out: Path, model: Path | None) -> None:
    """STEM.json and STEM.png can be written, outside any export being timed; before any work."""
    for path in check_output_stem(out, (".json", ".png")):
        if model is not None:
            check_outside(path, model, "--out")


def bench(
    frames: str = typer.Option("64", help=f"Frames per run, whole {CLIP_LEN}-frame clips for FAD; a list "
                               "(8,64,256,1024) draws latency against frames."),
    backends: Optional[str] = typer.Option(None, help=f"FAD backends: {', '.join(bench_labels())} (default: "
                                           f"torch,ort,ort-int8; with --device: {','.join(GPU_BACKENDS)}, "
                                           "those installed)."),
    pipelines: str = typer.Option("fad,deca,reactface", help="Pipelines: fad, deca, reactface."),
    runs: int = typer.Option(30, min=1, max=MAX_RUNS, help="Timed runs per measurement (after warm-up)."),
    threads: int = typer.Option(2, min=1, help="CPU threads for torch and ONNX Runtime."),
    preset: Optional[str] = typer.Option(None, help="FAD model preset to measure (random weights: cost only; "
                                         "default: paper, or with --model the export's)."),
    model: Optional[Path] = typer.Option(None, help="An export folder to time instead of a random-weight export."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help=f"The sampler FAD is timed with. {SAMPLER_HELP}"),
    replica_budget: float = typer.Option(60.0, min=1.0, help="Seconds of timed runs per replica and length, after "
                                         "which its timing stops; a warm-up call and "
                                         f"{MIN_TIMED_RUNS} timed calls are made whatever it is (a slow replica "
                                         "can take longer)."),
    replica_max_frames: int = typer.Option(64, min=1, help="Longest input ReactFace is timed on (its online mode is "
                                           "quadratic in length); FLOPs are counted at every length."),
    strict_reactface: bool = typer.Option(False, help="Also time ReactFace frame by frame (minutes)."),
    stream: bool = typer.Option(True, help="Also measure ListenerStream's per-clip latency (ORT INT8; with "
                                "--device, cuda)."),
    device: Optional[str] = typer.Option(None, help="cuda or cuda:N: time FAD's GPU backends and the replicas on "
                                         "that GPU, plus batch throughput (cpu: the same bench on the CPU, a plumbing "
                                         "check)."),
    throughput_frames: str = typer.Option("1024,2048,4096", help="With --device: frames per call for batch "
                                          f"throughput (whole {CLIP_LEN}-frame clips)."),
    deca_batch: int = typer.Option(32, min=1, help="With --device: frames per call in the batched DECA variant."),
    out: Optional[Path] = typer.Option(None, help=f"Writes OUT.json and OUT.png (default: {DEFAULT_OUT['cpu']}, "
                                       f"{DEFAULT_OUT['gpu']} with --device, {DEFAULT_OUT['cpu check']} with "
                                       "--device cpu)."),
) -> None:
    """FAD vs DECA-based and ReactFace-like pipelines: FLOPs, parameters, latency and ratios, in one run."""
    from fad_edge.bench.report import (
        legend,
        notes,
        ratio_table,
        rich_table,
        summary_lines,
        throughput_table,
        write_reports,
    )
    from fad_edge.bench.run import BenchConfig, nothing_to_measure, run_bench
    from fad_edge.bench.tables import print_table
    from fad_edge.cli.progress import make_progress, status_reporter
    from fad_edge.errors import FadEdgeError

    frame_counts = _ints(frames, "--frames")
    timed = _model_config(model, preset)
    preset = timed.preset
    chosen_pipelines = _names(pipelines, ("fad", "deca", "reactface"), "--pipelines")
    rates_at = _ints(throughput_frames, "--throughput-frames")
    # Memory first: a count no machine holds is refused as such, not with a whole-clip count near it.
    check_frames_fit(max(frame_counts), timed, "--frames", "time fewer frames")
    if device is not None:
        check_frames_fit(max(rates_at), timed, "--throughput-frames", "give fewer frames per call")
    if "fad" in chosen_pipelines:
        _check_whole_clips(frame_counts, timed, "--frames")
    if "fad" in chosen_pipelines and device is not None:
        _check_whole_clips(rates_at, timed, "--throughput-frames")
    check_finite(replica_budget, "--replica-budget", 1.0)
    check_threads(threads)
    check_sampler_name(sampler)
    on_device = device is not None
    out = out or default_out(device)
    _check_report_place(out, model)
    chosen = backends or (",".join(GPU_BACKENDS) if on_device else "torch,ort,ort-int8")
    config = BenchConfig(
        frames=frame_counts, backends=_names(chosen, bench_labels(), "--backends"),
        pipelines=chosen_pipelines, runs=runs, threads=threads,
        preset=preset, model=model, replica_budget=replica_budget, replica_max_frames=replica_max_frames,
        strict_reactface=strict_reactface, stream=stream, device=device,
        throughput_frames=rates_at, deca_batch=deca_batch,
        skip_unavailable=on_device and backends is None, sampler=sampler,
    )
    empty = nothing_to_measure(config)
    if empty is not None:
        raise typer.BadParameter(empty, param_hint="'--frames'")
    progress = make_progress(console, transient=not console.is_terminal)  # a log gets status_reporter's lines
    with progress:
        task = progress.add_task("bench", total=None, status="")
        result = run_bench(config, say=status_reporter(console, progress, task))
    if not any(row["latency"] or not math.isnan(row["flops"]) for row in result["rows"]):
        raise FadEdgeError(f"the bench measured nothing (every backend was skipped); {out} is left as it was")
    print_table(console, rich_table(result))
    for line in legend(result) + notes(result):
        console.print(f"  {line}", highlight=False, markup=False)
    for table in (ratio_table(result), throughput_table(result)):
        if table is not None:
            print_table(console, table)
    for line in summary_lines(result):
        console.print(line, highlight=False, markup=False)  # install hints hold [extras]
    if result["stream"]:
        s = result["stream"]
        for line in stream_lines(s):
            console.print(line, highlight=False, markup=False)
    json_path, png = write_reports(result, out)
    console.print(f"wrote {json_path} and {png}", markup=False)


def stream_lines(stream: dict) -> list[str]:
    """The stream's figures in lines that fit 80 columns."""
    lines = [f"stream ({stream['backend']}), per-clip latency: p50 {stream['latency_p50_ms']:.1f} ms, "
             f"p99 {stream['latency_p99_ms']:.1f} ms",
             f"  real-time factor {stream['real_time_factor']:.3f} (the model's time / the input's)"]
    at_once = stream.get("clip_at_once")  # absent from results saved before frames were encoded ahead
    if at_once:
        lines.append(f"  each clip encoded at once: p50 {at_once['latency_p50_ms']:.1f} ms, "
                     f"p99 {at_once['latency_p99_ms']:.1f} ms, RTF {at_once['real_time_factor']:.3f}")
    return lines


def _check_whole_clips(frame_counts: list[int], config: ModelConfig, option: str) -> None:
    """FAD runs whole clips: a count that is not one would be cut or padded, and the timing would not be
    of the frames asked for."""
    clip = config.clip_len
    for count in frame_counts:
        if count % clip:
            near = sorted({max(clip, count // clip * clip), -(-count // clip) * clip})
            raise typer.BadParameter(f"FAD runs whole clips of {clip} frames, and {count} is not a multiple of "
                                     f"{clip}: use {' or '.join(map(str, near))}", param_hint=option)


def _model_config(model: Path | None, preset_name: str | None) -> ModelConfig:
    """The config of the model the bench will time: the export's, or the preset's (paper by default).

    A --preset that names another preset than the export's is refused: the bench would time inputs of
    one size through a model of another.
    """
    from fad_edge.bench.run import bench_model_config

    check_preset(preset_name or "paper")
    timed = bench_model_config(model, preset_name or "paper")
    if model is not None and preset_name is not None and preset_name != timed.preset:
        raise typer.BadParameter(f"the export in {model} is of the {timed.preset} preset, not {preset_name}; "
                                 "leave --preset out to time it", param_hint="--preset")
    return timed


def profile(
    folder: Path = typer.Argument(..., help="An export folder (fad-edge export)."),
    precision: str = typer.Option("fp32", help="The graphs to profile: fp32 or int8 (fp16: TensorRT's graph, run "
                                  "on the CPU)."),
    frames: int = typer.Option(64, min=1, help="Frames per run: 64 is one encoder call and 8 clips; 8 is one clip, "
                               "as a stream runs it."),
    runs: int = typer.Option(10, min=1, max=MAX_RUNS, help="Profiled runs, after the warm-up."),
    warmup: int = typer.Option(2, min=0, max=100, help="Runs first, left out of the figures."),
    threads: int = typer.Option(2, min=1, help="ONNX Runtime's intra-op threads per session."),
    steps: Optional[int] = typer.Option(None, min=1, max=100, help="Denoising steps (default: the model's)."),
    out: Optional[Path] = typer.Option(None, help="Also write the summary (every op type of every graph) as JSON."),
    trace: Optional[Path] = typer.Option(None, help="Keep ONNX Runtime's raw traces in this folder, one GRAPH.json "
                                         "per graph (for Perfetto or chrome://tracing); by default they are deleted."),
) -> None:
    """Where the ONNX Runtime runner's time goes: per graph and per op type, from ONNX Runtime's profiler."""
    from fad_edge.artifact import ExportManifest
    from fad_edge.backends import get_backend
    from fad_edge.bench.profile import ProfileConfig, run_profile
    from fad_edge.bench.profile_report import footer, graph_table, headline, op_table, write_summary
    from fad_edge.bench.tables import print_table
    from fad_edge.cli.progress import make_progress, status_reporter

    manifest = ExportManifest.load(folder)
    get_backend("ort").check_precision(precision)
    check_frames_fit(frames, manifest.model_config, "--frames", "profile fewer frames")
    check_threads(threads)
    if out is not None:
        check_output_file(out)
        check_outside(out, folder, "--out")
    if trace is not None:
        check_output_dir(trace, "--trace")
        check_outside(trace, folder, "--trace")
    config = ProfileConfig(folder=folder, precision=precision, frames=frames, runs=runs, warmup=warmup,
                           threads=threads, steps=steps, trace_dir=trace)
    progress = make_progress(console, transient=not console.is_terminal)  # a log gets status_reporter's lines
    with progress:
        task = progress.add_task("profile", total=None, status="")
        summary = run_profile(config, say=status_reporter(console, progress, task))
    for line in headline(summary):
        console.print(line, highlight=False, markup=False)
    console.print("\ntime per run, by graph", highlight=False, markup=False)
    print_table(console, graph_table(summary))
    console.print("\ntime per run, by op type within each graph", highlight=False, markup=False)
    print_table(console, op_table(summary))
    for line in footer(summary):
        console.print(line, highlight=False, markup=False)
    if out is not None:
        console.print(f"wrote {write_summary(summary, out)}", highlight=False, markup=False)
    if trace is not None:
        console.print(f"kept ONNX Runtime's traces in {trace}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command(short_help="FLOPs and latency: FAD against DECA and ReactFace replicas")(bench)
    app.command(short_help="where ONNX Runtime's time goes in an export")(profile)
