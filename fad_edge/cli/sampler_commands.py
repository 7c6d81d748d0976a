"""`fad-edge tune-sampler`: calibrate the "diverse" sampler on validation data and write it into a checkpoint copy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fad_edge.cli.validate import check_not_inputs, check_output_dir, check_output_stem
from fad_edge.errors import FadEdgeError

if TYPE_CHECKING:
    from fad_edge.sampler_tuning import GridReport, SamplerGrid

console = Console()


def _values(text: str, option: str, kind: type[int] | type[float]) -> tuple:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"a comma-separated list of {kind.__name__}s, e.g. 1,2,4",
                                 param_hint=f"'{option}'") from None
    if not values:
        raise typer.BadParameter("give at least one value", param_hint=f"'{option}'")
    return values


def tune_sampler(
    checkpoint: Path = typer.Option(..., help="Checkpoint folder (RUN/best)."),
    data: Path = typer.Option(..., help="Dataset folder (our layout)."),
    split: str = typer.Option("val", help="Split to calibrate on (keep the test split for the final table)."),
    start_steps: Optional[str] = typer.Option(None, help="Start steps to try, e.g. 70,80,90 (default: the model's "
                                              "start step, and 10 and 20 below it)."),
    steps: str = typer.Option("1,2,4", help="Denoising steps to try."),
    start_noise: str = typer.Option("1", help="Start-noise scales to try, in [0, 1]."),
    temperature: str = typer.Option("1", help="Per-step noise scales to try, in [0, 2] (1: DDPM; only with more "
                                    "than one step)."),
    rotation_noise: str = typer.Option("1", help="The jaw and head dims' per-step noise relative to the "
                                       "temperature, in [0, 2] (only with more than one step)."),
    samples: int = typer.Option(2, min=1, max=20, help="Samples per clip (seeds 0..N-1); metrics are averaged."),
    max_l2_ratio: Optional[float] = typer.Option(None, min=1.0, max=10.0, help="The choice keeps L2 within this "
                                                 "factor of the mean sampler's, in each group (default 1.25)."),
    rule: str = typer.Option("fd", help="How to choose: fd (the least FD with L2 near the mean sampler's) or frdiv "
                             "(the least L2 with REACT's FRDiv over the alternative listeners' within --frdiv-band; "
                             "synthetic data)."),
    react_window: int = typer.Option(256, min=64, max=3000, help="Frames per speaker window for FRDiv (--rule "
                                     "frdiv)."),
    react_samples: int = typer.Option(10, min=2, max=50, help="m, samples per speaker window for FRDiv (--rule "
                                      "frdiv)."),
    frdiv_band: str = typer.Option("0.8,1.25", help="LOW,HIGH: the band of FRDiv over the alternative listeners' "
                                   "within which --rule frdiv chooses (narrower: a margin from its edges)."),
    pick: Optional[int] = typer.Option(None, min=1, help="Write this row (#N) instead of the rule's choice."),
    write_to: Optional[Path] = typer.Option(None, help="Write a copy of the checkpoint whose diverse sampler is "
                                            "the choice."),
    overwrite: bool = typer.Option(False, help="Let --write-to replace an existing folder (the input checkpoint "
                                   "included)."),
    out: Path = typer.Option(Path("sampler_grid"), help="Report path stem: writes OUT.json and OUT.md."),
    device: str = typer.Option("auto", help="Where the model runs: cpu, cuda, cuda:N, or auto."),
) -> None:
    """Calibrate the diverse sampler: L2 and FD of a grid of settings against the mean sampler.

    With --rule frdiv, also how much each setting's samples for one speaker differ, against how much
    the data's alternative listeners do. The choice can be written into a copy of the checkpoint
    (--write-to), so that `--sampler diverse` uses it everywhere the model goes, its exports included.
    """
    from fad_edge.bench.tables import print_table
    from fad_edge.checkpoint import load_checkpoint
    from fad_edge.devices import resolve_device
    from fad_edge.react_evaluation import ReactOptions
    from fad_edge.sampler_tuning import (
        MAX_L2_RATIO,
        SamplerGrid,
        check_copy_target,
        check_frdiv_range,
        check_rule,
        plural,
        rule_text,
        run_grid,
        worse_than_mean,
        write_calibrated_copy,
        write_report,
    )

    check_rule(rule)
    band = _values(frdiv_band, "--frdiv-band", float)
    if len(band) != 2:
        raise typer.BadParameter("give two ratios, LOW,HIGH", param_hint="'--frdiv-band'")
    frdiv_range = check_frdiv_range(band[0], band[1])
    check_not_inputs(check_output_stem(out, (".json", ".md")), [checkpoint, data])
    if write_to is not None:  # all refused now, not after minutes of sampling
        check_output_dir(write_to, "--write-to")
        try:
            check_copy_target(checkpoint, write_to, overwrite)
        except FadEdgeError as error:
            raise typer.BadParameter(str(error), param_hint="'--write-to'") from None
        check_not_inputs([write_to], [data], "--write-to")
    run_on = str(resolve_device(device))
    loaded = load_checkpoint(checkpoint)
    default = SamplerGrid.around(loaded.config)
    grid = SamplerGrid(_values(start_steps, "--start-steps", int) if start_steps else default.start_steps,
                       _values(steps, "--steps", int), _values(start_noise, "--start-noise", float),
                       _values(temperature, "--temperature", float),
                       _values(rotation_noise, "--rotation-noise", float))
    _check_grid_size(grid)
    candidates = grid.candidates(loaded.config)  # bad values are one line before any work
    if pick is not None and pick > len(candidates):
        raise typer.BadParameter(f"the grid has rows #1..#{len(candidates)}", param_hint="'--pick'")
    ratio = MAX_L2_RATIO if max_l2_ratio is None else max_l2_ratio
    console.print(f"sampling {plural(len(candidates), 'setting')} and the mean sampler on the {split} split",
                  markup=False, highlight=False)
    if split in SPLIT_CAVEATS:
        console.print(f"note: {SPLIT_CAVEATS[split]}", style="yellow", markup=False, highlight=False)
    with console.status("sampler grid") as status:
        report = run_grid(loaded, data, split, candidates, samples, run_on, ratio,
                          say=lambda message: status.update(escape(message)), rule=rule,
                          react=ReactOptions(samples=react_samples, window=react_window), frdiv_range=frdiv_range)
    for table in _tables(report):
        print_table(console, table)  # stacked below the width its numbers need
    chosen = report.chosen if pick is None else pick
    if report.chosen is None:
        remedy = ("try other temperatures" if rule == "frdiv" else "raise --max-l2-ratio")
        console.print(f"no setting qualified ({rule_text(report)}); {remedy} or --pick a row", style="yellow",
                      markup=False, highlight=False)
    else:
        console.print(f"the rule's choice: {report.rows[report.chosen].name} ({rule_text(report)})",
                      markup=False, highlight=False)
    if chosen is not None and (worse := worse_than_mean(report, chosen)):
        console.print(f"note: {report.rows[chosen].name} has no lower FD than the mean sampler in "
                      f"{' and '.join(worse)}", style="yellow", markup=False, highlight=False)
    json_path, md_path = write_report(report, out)
    console.print(f"wrote {json_path} and {md_path}", markup=False, highlight=False, soft_wrap=True)
    if write_to is not None and chosen is not None:
        settings = report.rows[chosen].settings
        copy = write_calibrated_copy(checkpoint, write_to, settings, overwrite)
        console.print(f"wrote {copy}: diverse sampler {report.rows[chosen].name}, {settings.describe()}",
                      markup=False, highlight=False, soft_wrap=True)
    elif write_to is not None:
        raise FadEdgeError(f"nothing written to {write_to}: no setting was chosen; --pick a row")


# The grid's options, with the SamplerGrid field each fills, for the refusal of a grid too large.
GRID_OPTIONS = {"--start-steps": "start_steps", "--steps": "steps", "--start-noise": "start_noises",
                "--temperature": "temperatures", "--rotation-noise": "rotation_noises"}


def _check_grid_size(grid: SamplerGrid) -> None:
    """Refuse, before anything is listed or sampled, a grid of more than MAX_GRID_SETTINGS settings."""
    from fad_edge.sampler_tuning import MAX_GRID_SETTINGS

    if (count := grid.size()) <= MAX_GRID_SETTINGS:
        return
    varied = {option: len(set(getattr(grid, field))) for option, field in GRID_OPTIONS.items()}
    varied = {option: values for option, values in varied.items() if values > 1}
    product = " x ".join(map(str, varied.values()))
    raise typer.BadParameter(f"the grid has {count:,} settings (from {product} values), more than the "
                             f"{MAX_GRID_SETTINGS} one run scores; give fewer values",
                             param_hint=" / ".join(f"'{option}'" for option in varied))


# What a choice made on a split other than val costs: figures later read on that split are not held out.
SPLIT_CAVEATS = {
    "test": "a setting chosen on the test split makes that split's figures optimistic; choose on val",
    "train": "the train split is what the model learned; a setting chosen there may not carry to new speakers",
}


def _tables(report: GridReport) -> list[Table]:
    """The grid as tables, its settings, then its scores (then, with --rule frdiv, each group's FRDiv over
    the alternative listeners'), each narrow enough for an 80-column terminal however many settings
    vary (the pairwise diversity is in the report files). Number columns never wrap, so `print_table` knows
    the width they need and stacks the rows below it."""
    from fad_edge.sampler_tuning import FRDIV_RATIO, plural

    settings = Table(title=escape(f"Sampler grid on {report.split}: the settings"))
    for column in ("row", "start step", "steps", "start noise", "temperature", "rotation noise"):
        settings.add_column(column, justify="left" if column == "row" else "right", no_wrap=column != "row")
    scores = Table(title=escape(f"Their scores: {plural(report.sessions, 'session')}, "
                                f"{plural(report.samples, 'sample')} per clip"))
    for column in ("row", "exp L2", "exp FD", "rot L2", "rot FD"):
        scores.add_column(column, justify="left" if column == "row" else "right", no_wrap=column != "row")
    names = [f"{row.name} *" if index == report.chosen else row.name for index, row in enumerate(report.rows)]
    for name, row in zip(names, report.rows, strict=True):
        s = row.settings
        settings.add_row(name, str(s.start_step), str(s.steps), f"{s.start_noise:g}", f"{s.temperature:g}",
                         f"{s.rotation_noise:g}")
        scores.add_row(name, *[f"{row.scores[g][k]:.3g}" for g in ("expression", "rotation") for k in ("L2", "FD")])
    if report.rule != "frdiv":
        return [settings, scores]
    title = "FRDiv / the alternative listeners'"
    diversity = Table(title=title, caption=escape(f"{report.react_samples} samples per speaker window"),
                      min_width=len(title) + 2)  # the title on one line
    for column in ("row", "expression", "rotation"):
        diversity.add_column(column, justify="left" if column == "row" else "right", no_wrap=column != "row")
    for name, row in zip(names, report.rows, strict=True):
        diversity.add_row(name, *[f"{row.scores[g][FRDIV_RATIO]:.2f}" for g in ("expression", "rotation")])
    return [settings, scores, diversity]


def register(app: typer.Typer) -> None:
    app.command("tune-sampler", short_help="calibrate the diverse sampler into a checkpoint copy")(tune_sampler)
