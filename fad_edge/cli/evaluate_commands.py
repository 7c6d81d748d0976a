"""`fad-edge evaluate`: the paper's table, the denoising-steps curve and the modality ablation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from fad_edge.cli.validate import SAMPLER_HELP, check_not_inputs, check_output_stem, check_sampler_name
from fad_edge.json_report import json_report_bytes
from fad_edge.models.config import ModelConfig
from fad_edge.report_paths import report_path
from fad_edge.sampling import DEFAULT_SAMPLER

console = Console()


def _steps_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of integers, e.g. 1,2,5,10",
                                 param_hint="--steps-curve") from None
    if not values or any(not 1 <= v <= 100 for v in values):
        raise typer.BadParameter("steps must be in 1..100", param_hint="--steps-curve")
    return values


def evaluate(
    checkpoint: list[Path] = typer.Option(..., help="Checkpoint folder; repeat it to compare models "
                                          "(e.g. the modality ablation)."),
    data: Path = typer.Option(..., help="Dataset folder (our layout)."),
    split: str = typer.Option("test", help="Split to evaluate."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help=SAMPLER_HELP),
    steps: Optional[int] = typer.Option(None, min=1, max=100, help="Denoising steps (default: the sampler's)."),
    samples: int = typer.Option(1, min=1, max=20, help="Diffusion samples per clip (seeds 0..N-1); >1 adds a "
                                "diversity column."),
    start_noise: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                                help="Start-noise scale (default: the sampler's)."),
    steps_curve: Optional[str] = typer.Option(None, help="Also draw L2/FD against these step counts, "
                                              "e.g. 1,2,5,10,20,50,100 (the sampler's other settings kept)."),
    out: Path = typer.Option(Path("evaluation"), help="Report path stem: writes OUT.json, OUT.md "
                             "(and OUT_steps.png/.json)."),
    device: str = typer.Option("auto", help="Where the models run: cpu, cuda, cuda:N, or auto "
                               "(CUDA when there is a GPU)."),
    react: bool = typer.Option(True, help="Also the REACT table (FRCorr, FRDist, FRDiv, FRDvs, FRVar, FRSyn); "
                               "--no-react skips it."),
    react_samples: Optional[int] = typer.Option(None, min=1, max=50, help="m, reactions per speaker window for the "
                                                "REACT table (default 10)."),
    react_window: Optional[int] = typer.Option(None, min=64, max=3000, help="Frames per speaker window for the REACT "
                                               "table (default 256)."),
) -> None:
    """Baselines, FAD and ground truth on a split: L2, FD, P-FD, SI and TLCC for expression and rotation.

    With the REACT table (the default), FAD is also sampled m times per speaker window with the sampler,
    at start noise 1 for the mean sampler (or --start-noise), and scored against each window's
    appropriate real reactions.
    """
    from fad_edge.atomic import atomic_write_bytes
    from fad_edge.bench.tables import print_table
    from fad_edge.checkpoint import load_checkpoint
    from fad_edge.devices import resolve_device
    from fad_edge.evaluation import evaluate as run_evaluation
    from fad_edge.evaluation import steps_curve as run_steps_curve
    from fad_edge.evaluation_report import (
        plot_steps_curve,
        react_lines,
        react_rich_tables,
        rich_tables,
        sampler_lines,
        write_reports,
    )
    from fad_edge.react_evaluation import ReactOptions

    check_sampler_name(sampler)
    react_options = None
    if react:
        defaults = ReactOptions()
        # The mean sampler is given start noise so that its m samples differ; "diverse" draws as calibrated.
        react_noise = defaults.start_noise if sampler == "mean" else None
        react_options = ReactOptions(
            samples=defaults.samples if react_samples is None else react_samples,
            window=defaults.window if react_window is None else react_window,
            start_noise=react_noise if start_noise is None else start_noise,
        )
    curve_steps = _steps_list(steps_curve) if steps_curve else None
    check_not_inputs(check_output_stem(out, (".json", ".md")), [*checkpoint, data])
    run_on = str(resolve_device(device))
    if curve_steps:
        check_not_inputs(check_output_stem(report_path(out, "_steps"), (".png", ".json")), [*checkpoint, data])
    loaded = [load_checkpoint(path) for path in checkpoint]
    labels = model_labels([model.config for model in loaded], checkpoint)
    with console.status(f"evaluating on the {escape(split)} split"):
        table = run_evaluation(list(zip(labels, loaded)), data, split, steps, samples, start_noise, device=run_on,
                               react=react_options, sampler=sampler)
    title = f"Listener motion on {data.name}/{split}"
    for line in sampler_lines(table):
        console.print(line, markup=False, highlight=False)
    for rendered in rich_tables(table, escape(title)):
        print_table(console, rendered)
    for note in table.notes:
        console.print(f"[yellow]{escape(note)}[/]")
    if table.react is not None:
        for rendered in react_rich_tables(table.react, escape(title)):
            print_table(console, rendered)
        for line in react_lines(table.react) + table.react.notes[:2]:  # what was sampled and scored against
            console.print(escape(line))
    json_path, md_path = write_reports(table, out, title)
    console.print(f"wrote {json_path} and {md_path}", markup=False)
    if curve_steps:
        with console.status("denoising-steps curve"):
            curve = run_steps_curve(loaded[0], data, split, curve_steps, run_on, sampler, start_noise)
        curve_stem = report_path(out, "_steps")
        png = plot_steps_curve(curve, report_path(curve_stem, ".png"))
        curve_json = atomic_write_bytes(report_path(curve_stem, ".json"),
                                        json_report_bytes({str(k): v for k, v in curve.items()}))
        for count in curve_steps:
            l2 = {group: curve[count][group]["L2"] for group in ("expression", "rotation")}
            console.print(f"steps {count:3d}: L2 exp {l2['expression']:.4f} rot {l2['rotation']:.4f}")
        console.print(f"wrote {png} and {curve_json}", markup=False)


def model_labels(configs: list[ModelConfig], paths: list[Path]) -> list[str]:
    """One distinct row name per checkpoint: what sets it apart (modalities, context), and where two
    alike (e.g. one preset trained with two seeds) the end of its path, else the rows would merge."""
    if len(configs) == 1:
        return ["FAD"]
    labels = [f"FAD ({config.modalities}, context {config.context_clips})" for config in configs]
    for label in set(labels):
        alike = [index for index, other in enumerate(labels) if other == label]
        if len(alike) > 1:
            for index, where in zip(alike, _distinct_tails([paths[i] for i in alike])):
                labels[index] = f"{label[:-1]}, {where})"
    return labels


def _distinct_tails(paths: list[Path]) -> list[str]:
    """The shortest path endings that tell different folders apart; a folder given twice gets #2, #3..."""
    parts = [Path(path).absolute().parts for path in paths]
    folders = list(dict.fromkeys(parts))
    depth = 1
    while len({p[-depth:] for p in folders}) < len(folders):
        depth += 1
    tails = [str(Path(*p[-depth:])) if p else "." for p in parts]
    return [tail if tails.index(tail) == index else f"{tail} #{tails[:index + 1].count(tail)}"
            for index, tail in enumerate(tails)]


def register(app: typer.Typer) -> None:
    app.command(short_help="the paper's and REACT's tables; steps curve; ablations")(evaluate)
