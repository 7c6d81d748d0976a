"""`fad-edge demo`: the main job end to end on synthetic data, on the CPU.

synthetic data -> train the small preset -> evaluate against the baselines -> export to ONNX
(FP32 + INT8, parity checked) -> generate on a held-out session with ONNX Runtime INT8 (motion,
plot, preview video) -> a quick latency bench of the backends. Re-running it reuses the dataset and
resumes training from the last checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fad_edge.cli.data_commands import session_bytes_per_second
from fad_edge.cli.validate import MAX_SEED, check_choice, check_disk, check_finite, check_output_dir, check_preset
from fad_edge.data.synthetic import DEFAULT_ALTERNATIVES
from fad_edge.errors import FadEdgeError
from fad_edge.json_report import json_report_bytes

console = Console()
DEMO_BATCH_SIZE, DEMO_CLIPS_PER_ITEM = 4, 8
SUMMARY = "demo_summary.json"
# What a demo writes into --out: a folder holding anything else is not an earlier demo's, and is refused.
DEMO_OUTPUTS = ("data", "run", "model", "generate", "evaluation.json", "evaluation.md", SUMMARY)
DATASET_IMAGE_SIZE = 128  # of the synthetic dataset's videos (the model's own input is the preset's size)
# Disk the demo writes besides the dataset, measured on the small preset (with a margin): the training's feature
# cache per second of session (48 px frames and the log-mel), and the run's checkpoints with the export.
CACHE_BYTES_PER_SECOND = 250_000
RUN_AND_EXPORT_BYTES = 250e6


def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for everything the demo writes."),
    # Many short sessions: more speakers for the same frames, which is what held-out accuracy needs.
    sessions: int = typer.Option(96, min=3, help="Synthetic sessions to generate (each a new speaker)."),
    seconds: float = typer.Option(20.0, min=4.0, help="Length of each synthetic session."),
    # 350 FAD steps (70-107 s on 2 cores: the README's first table); 300 scored worse
    # (docs/studies.md: what holds the nod back).
    steps: int = typer.Option(350, min=1, help="Training steps (the learning rate's cosine runs over them)."),
    stride: int = typer.Option(8, min=1, help="Frames between training windows."),
    preset: str = typer.Option("small", help="Model preset."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED),
    autocast: str = typer.Option("auto", help="Mixed-precision training: off (fp32), bf16, fp16 (CUDA only), or "
                                 "auto: bf16 where the CPU or GPU computes it natively, else fp16 on a GPU, fp32 "
                                 "on a CPU."),
) -> None:
    """Synthesize data, train, evaluate, export, run on ONNX Runtime and bench: prints where everything went."""
    from fad_edge.atomic import atomic_write_bytes
    from fad_edge.bench.run import BenchConfig, run_bench
    from fad_edge.bench.tables import print_table
    from fad_edge.checkpoint import load_checkpoint
    from fad_edge.cli.progress import RichTrainReporter
    from fad_edge.data.layout import list_sessions
    from fad_edge.data.synthetic_dataset import write_synthetic_dataset
    from fad_edge.devices import resolve_device
    from fad_edge.evaluation import evaluate
    from fad_edge.evaluation_report import rich_tables, write_reports
    from fad_edge.export.pipeline import ExportOptions, export_model
    from fad_edge.generate import generate_files
    from fad_edge.runtime.ort_runner import OrtRunner
    from fad_edge.train import TrainConfig, train
    from fad_edge.train_precision import AUTOCAST_MODES, arithmetic_name

    check_preset(preset)
    check_finite(seconds, "--seconds", 4.0)
    check_choice(autocast, "--autocast", AUTOCAST_MODES)
    check_output_dir(out)
    _check_demo_folder(out)
    _check_reused_dataset(out / "data", sessions, seconds, seed)
    _check_disk(out, sessions, seconds)
    # An earlier run's summary goes now: until this run has written its own, nothing claims the outputs whole.
    (out / SUMMARY).unlink(missing_ok=True)
    started = time.time()
    stages: dict[str, float] = {}  # seconds per stage, in the summary: where the demo's time goes

    def lap(stage: str) -> float:
        stages[stage] = time.time() - started - sum(stages.values())
        return stages[stage]

    outputs: list[tuple[str, str]] = []
    data = out / "data"
    # As many epochs as the steps need: the step budget, not the epochs, ends the run.
    # Each step 4 windows of 8 clips: as many clips as 8 windows of 4, with fewer context frames encoded
    # (4 context clips a window; docs/studies.md: every seed learns, and what holds the nod back).
    config = TrainConfig(data=str(data), out=str(out / "run"), preset=preset, epochs=steps, max_steps=steps,
                         seed=seed, stride=stride, batch_size=DEMO_BATCH_SIZE, clips_per_item=DEMO_CLIPS_PER_ITEM,
                         autocast=autocast)
    # The training's arithmetic, printed and in the summary: its time depends on it most.
    trained_in = arithmetic_name(autocast, resolve_device(config.device))
    if not (data / "splits.json").exists():
        with console.status(f"[1/6] writing {sessions} synthetic sessions of {seconds:g} s"):
            write_synthetic_dataset(data, sessions=sessions, seconds=seconds, seed=seed, image_size=DATASET_IMAGE_SIZE)
    console.print(f"[1/6] synthetic dataset: {escape(str(data))} ({lap('data'):.0f} s)")
    outputs.append(("synthetic dataset", str(data)))

    console.print(f"[2/6] training the {escape(preset)} preset for {steps} steps ({trained_in})")
    result = train(config, RichTrainReporter(console), resume=True)
    lap("train")
    ran = result.steps_this_call
    if ran < result.steps:  # resumed: the training's seconds below are this run's part of it
        console.print(f"[2/6] resumed the earlier run: {ran} of its {result.steps} steps ran now")
    outputs += [("checkpoint (latest, resumable)", str(result.checkpoint)),
                ("checkpoint (best val)", str(result.best))]

    with console.status("[3/6] evaluating FAD and the baselines on the test split"):
        table = evaluate([("FAD", load_checkpoint(result.best))], data, "test")
    for rendered in rich_tables(table, "held-out test sessions"):
        print_table(console, rendered)
    json_path, md_path = write_reports(table, out / "evaluation", "fad-edge demo: held-out synthetic test sessions")
    outputs += [("evaluation table", str(md_path))]
    console.print(f"[3/6] evaluated ({lap('evaluate'):.0f} s)")

    with console.status("[4/6] exporting to ONNX (FP32 + INT8) and checking parity"):
        manifest = export_model(ExportOptions(checkpoint=result.best, out=out / "model", int8=True, data=data))
    # The reports are the manifest's JSON: a list of rows for parity, a dict of figures for INT8.
    parity = max(row["max_rel"] for row in cast(list[dict[str, float]], manifest.reports["parity"]))
    int8 = cast(dict[str, float], manifest.reports["int8"])
    console.print(f"[4/6] exported: ORT FP32 vs PyTorch max rel error {parity:.1e}; "
                  f"INT8 L2 {int8['l2_int8']:.4f} vs FP32 {int8['l2_fp32']:.4f} ({lap('export'):.0f} s)")
    outputs.append(("ONNX export + manifest", str(out / "model")))

    session = list_sessions(data, "test")[0]
    with OrtRunner(out / "model", "int8") as runner:
        generated = generate_files(runner, session / "speaker.mp4", session / "speaker.wav", out / "generate",
                                   settings={"model": str(out / "model"), "backend": runner.name}, preview=True)
    console.print(f"[5/6] generated listener motion for held-out {session.name} with {runner.name} "
                  f"({lap('generate'):.0f} s)")
    outputs += [("listener motion (.npy)", str(generated.motion_path)),
                ("settings + timestamps", str(generated.json_path)),
                ("plot", str(generated.plot_path)), ("preview video", str(generated.preview_path))]

    with console.status("[6/6] timing the backends on 64 frames"):
        bench = run_bench(BenchConfig(frames=[64], pipelines=["fad"], preset=preset, model=out / "model", runs=20))
    timings = {f"{row['backend']}": row["latency"]["median"] * 1000 for row in bench["rows"]}
    console.print("[6/6] FAD, 64 frames, median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
                  + (f"; stream p99 {bench['stream']['latency_p99_ms']:.1f} ms per clip" if bench["stream"] else "")
                  + f" ({lap('bench'):.0f} s)")

    fad, median = table.rows["FAD"], table.rows["Median"]
    l2 = {g: fad[g]["L2"] for g in fad}
    ratio = {g: fad[g]["L2"] / median[g]["L2"] for g in fad}
    summary = {"l2_fad": l2, "l2_ratio_to_median": ratio, "train_seconds": result.seconds,
               "train_parts_seconds": result.parts_seconds(), "train_steps_run": ran, "train_arithmetic": trained_in,
               "export_max_rel_error": parity, "int8": int8, "latency_ms_64_frames": timings,
               "stream": bench["stream"], "stage_seconds": stages, "total_seconds": time.time() - started}
    atomic_write_bytes(out / SUMMARY, json_report_bytes(summary))
    outputs.append(("summary", str(out / SUMMARY)))

    print_table(console, outputs_table(outputs, time.time() - started))
    console.print("L2 of FAD / L2 of the Median baseline on the test split: "
                  + ", ".join(f"{group} {value:.2f}x" for group, value in ratio.items()))


def outputs_table(outputs: list[tuple[str, str]], seconds: float) -> Table:
    """Where each output went. Paths never wrap (`print_table` stacks the rows where they would not fit), so
    each one copies whole from the terminal."""
    where = Table(title=f"fad-edge demo ({seconds:.0f} s)")
    where.add_column("output")
    where.add_column("where", no_wrap=True)
    for name, path in outputs:
        where.add_row(name, escape(path))
    return where


def _check_demo_folder(out: Path) -> None:
    """Refuse an --out that holds anything a demo does not write, before any work: the demo writes into it."""
    if not out.is_dir():
        return
    ours = {*DEMO_OUTPUTS, *(f"{name}.{twin}" for name in ("data", "model") for twin in ("new", "old"))}
    foreign = sorted(path.name for path in out.iterdir() if path.name not in ours)
    if foreign:
        raise FadEdgeError(f"{out}: holds {foreign[0]!r}, which the demo does not write; give a new folder or an "
                           "earlier demo's as --out")
    from fad_edge.export.pipeline import check_export_target

    check_export_target(out / "model")


def _check_reused_dataset(data: Path, sessions: int, seconds: float, seed: int) -> None:
    """A re-run reuses the earlier demo's dataset: refuse one made with other --sessions, --seconds or --seed."""
    from fad_edge.data.layout import read_splits
    from fad_edge.data.synthetic_dataset import dataset_seed_of, read_session_record, session_index

    if not (data / "splits.json").exists():
        return
    names = sorted(name for split in read_splits(data).values() for name in split)
    if not names:
        raise FadEdgeError(f"{data}: a dataset without sessions, not one an earlier demo wrote; give another --out")
    first_seed, config = read_session_record(data / names[0])
    made_seed = dataset_seed_of(first_seed, session_index(names[0]))
    if (len(names), config.seconds, made_seed) != (sessions, seconds, seed):
        raise FadEdgeError(f"{data}: an earlier demo's dataset of {len(names)} sessions of {config.seconds:g} s "
                           f"(seed {made_seed}), not the {sessions} of {seconds:g} s (seed {seed}) asked for; give "
                           "another --out, or those settings to continue that demo")


def _check_disk(out: Path, sessions: int, seconds: float) -> None:
    """Refuse, as `fad-edge synth` does, a demo the disk cannot hold: the dataset (unless reused), its feature
    cache, and the run and export."""
    fresh = not (out / "data" / "splits.json").exists()
    dataset = session_bytes_per_second(DATASET_IMAGE_SIZE, DEFAULT_ALTERNATIVES) if fresh else 0.0
    per_second = CACHE_BYTES_PER_SECOND + dataset
    check_disk(out, sessions * seconds * per_second + RUN_AND_EXPORT_BYTES,
               f"a demo of {sessions} sessions of {seconds:g} s", "--sessions, --seconds")


def register(app: typer.Typer) -> None:
    app.command(short_help="the main job end to end on synthetic data, on the CPU")(demo)
