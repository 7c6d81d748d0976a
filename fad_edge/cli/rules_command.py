"""`fad-edge rules`: per-rule scores of a model on a synthetic dataset's split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fad_edge.backends import all_precisions, backend_names
from fad_edge.cli.validate import MAX_SEED, check_not_inputs, check_output_file, check_threads
from fad_edge.json_report import json_report_bytes

console = Console()

LEGEND = ("r: Pearson r of the predicted rule signal and the rule's true component, all frames pooled. "
          "amplitude: std of the predicted signal / std of the true component (nod, brow: on the frames where "
          "the rule is active). data r: the r of the dataset's own listener, whose idle drift and noise no model "
          "can predict; '-' where a side is constant (e.g. no such event in the split).")


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def rules(
    model: Path = typer.Argument(..., metavar="CHECKPOINT_OR_EXPORT",
                                 help="Checkpoint folder (RUN/best) or export folder (engines/NAME)."),
    data: Path = typer.Option(..., help="Synthetic dataset folder (written by fad-edge synth)."),
    split: str = typer.Option("test", help="Split to score."),
    out: Optional[Path] = typer.Option(None, help="Also write the scores (and per-session r) to this JSON file."),
    backend: str = typer.Option("auto", help=f"{', '.join(backend_names())} "
                                "(auto: torch for a checkpoint, ort for an export)."),
    precision: Optional[str] = typer.Option(None, help="Graph precision, one the backend runs: "
                                            f"{', '.join(all_precisions())} (default: the backend's first)."),
    steps: Optional[int] = typer.Option(None, min=1, max=100, help="Denoising steps (default: the model's, 1)."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED),
    threads: int = typer.Option(2, min=1, help="ONNX Runtime threads."),
    device: str = typer.Option("auto", help="Where the torch backend runs a checkpoint: cpu, cuda, cuda:N, or "
                               "auto. Export backends keep theirs (ort: CPU, trt: GPU)."),
) -> None:
    """How well a model reproduces each rule of the synthetic listener (nod, brow, smile, head) on a split."""
    from fad_edge.atomic import atomic_write_bytes
    from fad_edge.bench.tables import print_table
    from fad_edge.cli.model_commands import _open_runner_on  # the same runner `generate` opens
    from fad_edge.rule_diagnostic import diagnose

    check_threads(threads)
    if out is not None:
        check_output_file(out)
        check_not_inputs([out], [model, data])
    with _open_runner_on(model, backend, precision, steps, seed, threads, device) as runner:
        with console.status(f"running the model on the {escape(split)} split"):
            report = diagnose(runner, data, split)
        settings = {"model": str(model), "data": str(data), "backend": runner.name,
                    "steps": runner.settings.steps, "seed": seed}
    count, frames = len(report.sessions), report.rules["head"].frames
    table = Table(title=f"Listener rules, {escape(data.name)}/{escape(split)}: "
                        f"{count} session{'s' if count != 1 else ''}, {frames} frames")
    table.add_column("rule")
    for name in ("r", "amplitude", "data r", "frames", "active"):
        table.add_column(name, justify="right", no_wrap=True)  # numbers: stacked, never cut, when narrow
    for score in report.rules.values():
        table.add_row(score.rule, _cell(score.r), _cell(score.amplitude), _cell(score.data_r), str(score.frames),
                      str(score.active_frames))
    print_table(console, table)  # stacked below the width its numbers need
    console.print(LEGEND, markup=False, highlight=False)  # wrapped to the terminal's width (80 when piped)
    if out is not None:
        record = {"settings": settings, **report.to_dict()}
        atomic_write_bytes(out, json_report_bytes(record))
        console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(short_help="how well a model learned each rule of the synthetic listener")(rules)
