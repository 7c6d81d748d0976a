"""Calibrating the "diverse" sampler: L2 and FD of a small grid of sampler settings on a validation split.

The "mean" sampler (the model's own setting) is scored first, as the reference. Each candidate draws
`samples` motions per session (seeds 0..samples-1) from inputs encoded once, scored as the steps
curve is (`evaluation.score_settings`). Two rules choose among the candidates:

- "fd": the candidate closest to real motion in distribution (the least FD, each group's relative to
  the mean sampler's, summed over expression and rotation) among those whose L2 stays within
  `max_l2_ratio` of the mean sampler's in both groups: a diverse sample should still be a reaction to
  this speaker.
- "frdiv": the candidate whose samples for one speaker differ as much as real listeners do, as
  accurately as possible: the least L2 (each group's relative to the mean sampler's, summed) among
  those whose REACT FRDiv (m = `react_samples` draws per speaker window) is within `FRDIV_RANGE` of
  the alternative listeners' in both groups. It needs a dataset that holds several appropriate
  listeners per speaker, as the synthetic generator's does; a candidate's L2 only grows with its
  spread, so among equally diverse candidates the least L2 is the one whose samples centre best.

The choice's values go into a copy of the checkpoint with the config's `diverse_*` fields set, so the
calibrated sampler travels with the model into its exports (the manifest carries the config) and
every runner reads it from there.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fad_edge import metrics
from fad_edge.appropriate import ReactWindows, build_windows
from fad_edge.atomic import atomic_write_bytes, staged_folder
from fad_edge.checkpoint import (
    CHECKPOINT_FILES,
    MODEL_JSON,
    LoadedCheckpoint,
    read_checkpoint_info,
    resolve_checkpoint,
)
from fad_edge.errors import CheckpointError, DataError, FadEdgeError
from fad_edge.evaluation import draw_settings, encoded_split, score_draws
from fad_edge.json_report import json_report_bytes
from fad_edge.models.config import DIVERSE_NOISE_LIMITS, ModelConfig
from fad_edge.react_evaluation import ReactOptions, react_sessions
from fad_edge.react_metrics import fr_div
from fad_edge.report_paths import report_path
from fad_edge.reporting import Say, silent
from fad_edge.samples import LabelledInputs, split_samples
from fad_edge.sampling import SamplerSettings

MAX_L2_RATIO = 1.25  # a candidate's L2 may exceed the mean sampler's by this factor, in each group
# The most settings one grid scores. Each samples the whole split: on the demo's validation split (14 sessions
# of 20 s, the small preset, 2 CPU cores) about 2 minutes a setting of 1 step and 6 of 4 steps, so a grid this
# large already takes hours, and prints a table row each. Beyond it, search coarsely, then around the choice.
MAX_GRID_SETTINGS = 64
RULES = ("fd", "frdiv")
# The "frdiv" rule's band: a candidate's FRDiv over the alternative listeners', in each group (REACT's
# diversity as real listeners show it, neither much less nor much more).
FRDIV_RANGE = (0.8, 1.25)
FRDIV_RATIO = "FRDiv / alternatives"  # the score key of that ratio


@dataclass(frozen=True)
class SamplerGrid:
    """The candidates: every combination of these values (the per-step noise only where there are several steps)."""

    start_steps: tuple[int, ...]
    steps: tuple[int, ...] = (1, 2, 4)
    start_noises: tuple[float, ...] = (1.0,)
    temperatures: tuple[float, ...] = (1.0,)
    rotation_noises: tuple[float, ...] = (1.0,)

    @classmethod
    def around(cls, config: ModelConfig) -> SamplerGrid:
        """The default grid: the model's start step and 10 and 20 steps below it."""
        start = config.sample_start_step
        return cls(tuple(sorted({max(0, start - 20), max(0, start - 10), start})))

    def size(self) -> int:
        """How many distinct settings `candidates` lists, counted without listing them: one step adds no
        posterior noise, so with one step the temperatures and rotation noises collapse into one setting."""
        steps = set(self.steps)
        noisy = len(steps - {1}) * len(set(self.temperatures)) * len(set(self.rotation_noises))
        return len(set(self.start_steps)) * len(set(self.start_noises)) * (noisy + (1 in steps))

    def candidates(self, config: ModelConfig) -> list[SamplerSettings]:
        """Each distinct setting once, in grid order; values no sampler of this model takes are one error line."""
        for start in self.start_steps:
            if not 0 <= start < config.train_steps:
                raise FadEdgeError(f"start step {start} is outside 0..{config.train_steps - 1}")
        for steps in self.steps:
            if not 1 <= steps <= config.train_steps:
                raise FadEdgeError(f"{steps} denoising steps is outside 1..{config.train_steps}")
        for name, values, config_field in (("start noise", self.start_noises, "diverse_start_noise"),
                                           ("temperature", self.temperatures, "diverse_temperature"),
                                           ("rotation noise", self.rotation_noises, "diverse_rotation_noise")):
            high = DIVERSE_NOISE_LIMITS[config_field]
            for value in values:
                if not (math.isfinite(value) and 0 <= value <= high):
                    raise FadEdgeError(f"{name} {value:g} is outside [0, {high:g}]")
        found: dict[SamplerSettings, None] = {}  # ordered, and a lookup that costs nothing however large the grid
        for start, steps, noise, temperature, rotation in itertools.product(
                self.start_steps, self.steps, self.start_noises, self.temperatures, self.rotation_noises):
            # One step adds no posterior noise, so its temperature and rotation noise change nothing.
            several = steps > 1
            settings = SamplerSettings(steps, start, config.clip_sample, noise, temperature if several else 1.0,
                                       rotation if several else 1.0)
            found.setdefault(settings)
        return list(found)


@dataclass(frozen=True)
class DiversityReference:
    """What the "frdiv" rule measures a candidate's diversity against: the split's speaker windows and
    the alternative listeners' own FRDiv per group."""

    windows: ReactWindows
    frdiv: dict[str, float]
    samples: int  # m, draws per speaker window

    def ratios(self, draws: list[list[np.ndarray]]) -> dict[str, float]:
        """FRDiv of draws[seed][session] over the alternative listeners', per group."""
        cut = self.windows.cut_draws([list(per_session) for per_session in zip(*draws)])
        return {group: fr_div(cut[..., columns]) / self.frdiv[group] for group, columns in metrics.GROUPS.items()}


def diversity_reference(sessions: list[LabelledInputs], data: Path, split: str,
                        options: ReactOptions) -> DiversityReference:
    """The split's windows of `options.window` frames and their alternative listeners' FRDiv.

    Refused in one line where the split holds no alternative listeners (only the synthetic generator
    writes them: a dataset's neighbour lists say which listeners are appropriate, not how much real
    listeners differ for one speaker) or no session is a window long.
    """
    windows = build_windows(react_sessions(sessions, data), options.window, options.neighbours)
    if windows is None:
        raise DataError(f"no {split} session is {options.window} frames long; give a shorter --react-window")
    if windows.source != "alternatives":
        raise DataError(f"the {split} split has no alternative listeners (listener_alternatives.npy, written by "
                        "fad-edge synth), which the frdiv rule measures diversity against; use --rule fd")
    alternatives = np.stack([appropriate[1:] for appropriate in windows.appropriate])  # less each window's own
    frdiv = {group: fr_div(alternatives[..., columns]) for group, columns in metrics.GROUPS.items()}
    return DiversityReference(windows, frdiv, options.samples)


@dataclass
class GridRow:
    name: str  # "mean" (the reference) or "#1", "#2", ...
    settings: SamplerSettings
    scores: dict[str, dict[str, float]]  # group -> L2, FD (and diversity with several samples)


@dataclass
class GridReport:
    checkpoint: str
    split: str
    sessions: int
    frames: int
    samples: int
    max_l2_ratio: float
    rows: list[GridRow] = field(default_factory=list)
    chosen: int | None = None  # index into rows (never 0, the reference); None when no candidate qualifies
    rule: str = "fd"
    frdiv_range: tuple[float, float] = FRDIV_RANGE
    react_samples: int = 0  # m of the FRDiv ratios (0: not measured)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _least_relative(rows: list[GridRow], metric: str, qualifies: Callable[[dict], bool]) -> int | None:
    """The candidate (index into rows, after the reference) whose `metric`, each group's relative to the
    reference's and summed over the groups, is least among those whose scores qualify."""
    reference = rows[0].scores
    best, best_score = None, math.inf
    for index, row in enumerate(rows[1:], start=1):
        if not qualifies(row.scores):
            continue
        score = sum(row.scores[g][metric] / max(reference[g][metric], 1e-12) for g in metrics.GROUPS)
        if score < best_score:
            best, best_score = index, score
    return best


def choose(rows: list[GridRow], max_l2_ratio: float = MAX_L2_RATIO) -> int | None:
    """The candidate (index into rows, after the reference) with the least relative FD within the L2 bound."""
    reference = rows[0].scores
    return _least_relative(rows, "FD", lambda scores: not any(
        scores[g]["L2"] > max_l2_ratio * reference[g]["L2"] for g in metrics.GROUPS))


def choose_by_diversity(rows: list[GridRow], frdiv_range: tuple[float, float] = FRDIV_RANGE) -> int | None:
    """The candidate (index into rows, after the reference) with the least relative L2 among those whose
    FRDiv ratio is within `frdiv_range` in both groups."""
    low, high = frdiv_range
    return _least_relative(rows, "L2", lambda scores: all(  # NaN never qualifies
        low <= scores[g][FRDIV_RATIO] <= high for g in metrics.GROUPS))


def check_frdiv_range(low: float, high: float) -> tuple[float, float]:
    """(low, high) if it is a band of positive, finite ratios, low below high; else a one-line error."""
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise FadEdgeError(f"the FRDiv band must be two ratios 0 < low < high, got {low:g},{high:g}")
    return low, high


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise FadEdgeError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    return rule


def run_grid(loaded: LoadedCheckpoint, data: Path, split: str, grid: SamplerGrid | list[SamplerSettings],
             samples: int = 2, device: str = "cpu", max_l2_ratio: float = MAX_L2_RATIO, say: Say = silent,
             rule: str = "fd", react: ReactOptions | None = None,
             frdiv_range: tuple[float, float] = FRDIV_RANGE) -> GridReport:
    """The mean sampler and every candidate of `grid` (or the candidates a caller listed already), scored on
    `split`, and the rule's choice.

    `frdiv_range` is the "frdiv" rule's band; a narrower one than `FRDIV_RANGE` keeps a margin from its
    edges, where the least-L2 choice otherwise lands and another split's FRDiv can fall out of it.

    With the "frdiv" rule every setting draws `react.samples` motions per session (at least `samples`;
    `react` None: ReactOptions' defaults); L2 and FD are scored on the first `samples` of them, as
    without it.
    """
    check_rule(rule)
    candidates = grid.candidates(loaded.config) if isinstance(grid, SamplerGrid) else grid
    sessions = split_samples(loaded.config, data, split)
    diversity = diversity_reference(sessions, data, split, react or ReactOptions()) if rule == "frdiv" else None
    say(f"encoding the {split} split")
    runner, encoded, truths = encoded_split(loaded, data, split, device, sessions)
    report = GridReport(str(loaded.path), split, len(encoded), sum(e.frames for e in encoded), samples, max_l2_ratio,
                        rule=rule, frdiv_range=frdiv_range,
                        react_samples=0 if diversity is None else diversity.samples)
    every = [SamplerSettings.named("mean", loaded.config), *candidates]
    for index, settings in enumerate(every):
        say(f"setting {index + 1} of {len(every)}: {settings.describe()}")
        name = "mean" if index == 0 else f"#{index}"
        draws = draw_settings(runner, encoded, settings, samples if diversity is None
                              else max(samples, diversity.samples))
        scores = score_draws(draws[:samples], truths)
        if diversity is not None:
            for group, ratio in diversity.ratios(draws[: diversity.samples]).items():
                scores[group][FRDIV_RATIO] = ratio
        report.rows.append(GridRow(name, settings, scores))
    report.chosen = (choose(report.rows, max_l2_ratio) if rule == "fd"
                     else choose_by_diversity(report.rows, frdiv_range))
    return report


def rule_text(report: GridReport) -> str:
    """The rule that chose, in words."""
    if report.rule == "frdiv":
        low, high = report.frdiv_range
        return (f"the least L2 relative to the mean sampler's (expression + rotation) among settings whose FRDiv "
                f"({report.react_samples} samples per speaker window) is within {low:g}-{high:g}x the alternative "
                "listeners' in both groups")
    return (f"the least FD relative to the mean sampler's (expression + rotation) among settings whose L2 is "
            f"within {report.max_l2_ratio:g}x the mean sampler's in both groups")


def diverse_fields(settings: SamplerSettings) -> dict[str, int | float]:
    """The model config's `diverse_*` values for these settings."""
    return {"diverse_start_step": settings.start_step, "diverse_start_noise": settings.start_noise,
            "diverse_steps": settings.steps, "diverse_temperature": settings.temperature,
            "diverse_rotation_noise": settings.rotation_noise}


def check_copy_target(checkpoint: Path, out: Path, overwrite: bool = False) -> Path:
    """Refuse an `out` that a calibrated copy of `checkpoint` may not go to; returns the checkpoint folder read.

    `out` must not lie inside the checkpoint, nor exist unless `overwrite`, and then be a checkpoint
    folder (the input's own included), never a run, a dataset or a folder holding the input. A caller
    checks this before its work, so that a refusal costs nothing.
    """
    source = resolve_checkpoint(checkpoint)
    out = Path(out)
    if source.resolve() in out.resolve().parents:
        raise FadEdgeError(f"{out} is inside the checkpoint {source}; give a folder beside it")
    if out.exists() and not overwrite:
        what = "is the input checkpoint" if out.resolve() == source.resolve() else "exists"
        raise FadEdgeError(f"{out} {what}; give another folder, or --overwrite to replace it")
    if out.exists():  # replaced whole: only ever a checkpoint, never a run, a dataset or the folder holding the input
        if out.resolve() in source.resolve().parents:
            raise FadEdgeError(f"{out} holds the checkpoint {source}; give a folder beside it")
        held = sorted(p.name for p in out.iterdir()) if out.is_dir() else [out.name]
        foreign = [name for name in held if name not in CHECKPOINT_FILES]
        if foreign or not (out / MODEL_JSON).is_file():
            what = f"holds {foreign[0]!r}" if foreign else "holds no checkpoint"
            raise FadEdgeError(f"{out} {what}; --overwrite replaces only a checkpoint folder, so give one or a new "
                               "folder")
    return source


def write_calibrated_copy(checkpoint: Path, out: Path, settings: SamplerSettings, overwrite: bool = False) -> Path:
    """A copy of `checkpoint` at `out` whose config holds `settings` as its diverse sampler; atomically.

    The weights are copied byte for byte (their hash, which exports record, is unchanged). `out` must
    be a place `check_copy_target` allows.
    """
    source = check_copy_target(checkpoint, out, overwrite)
    out = Path(out)
    info = read_checkpoint_info(source)
    config = {**info["config"], **diverse_fields(settings)}
    try:
        ModelConfig.from_dict(config)
    except ValueError as error:
        raise CheckpointError(f"{source / MODEL_JSON}: the calibrated config is invalid ({error})") from None
    with staged_folder(out) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / MODEL_JSON).write_text(json.dumps({**info, "config": config}, indent=2))
    return Path(out)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def worse_than_mean(report: GridReport, index: int) -> list[str]:
    """The groups in which row `index` has no lower FD than the mean sampler (a draw should be nearer real motion)."""
    reference, row = report.rows[0].scores, report.rows[index].scores
    return [group for group in metrics.GROUPS if row[group]["FD"] >= reference[group]["FD"]]


def _format(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3g}"


def markdown(report: GridReport) -> str:
    """The grid as a markdown table, the reference first and the choice marked."""
    extra = ["diversity"] if report.samples > 1 else []
    if report.rule == "frdiv":
        extra.append(FRDIV_RATIO)
    keys = ["L2", "FD", *extra]
    header = ["setting", "start step", "steps", "start noise", "temperature", "rotation noise",
              *[f"exp {k}" for k in keys], *[f"rot {k}" for k in keys]]
    lines = [f"## Sampler grid: {report.checkpoint} on {report.split}", "",
             f"{plural(report.sessions, 'session')}, {report.frames} frames; "
             f"{plural(report.samples, 'sample')} per clip (seeds 0..{report.samples - 1}), "
             "metrics averaged over them.",
             "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in enumerate(report.rows):
        name = f"**{row.name}** (chosen)" if index == report.chosen else row.name
        s = row.settings
        cells = [name, str(s.start_step), str(s.steps), f"{s.start_noise:g}", f"{s.temperature:g}",
                 f"{s.rotation_noise:g}",
                 *[_format(row.scores[g].get(k)) for g in metrics.GROUPS for k in keys]]
        lines.append("| " + " | ".join(cells) + " |")
    rule = f"The choice: {rule_text(report)}"
    lines += ["", f"- {rule}; " + ("none qualified." if report.chosen is None else
                                   f"{report.rows[report.chosen].name}."),
              "- L2: mean per-frame Euclidean norm of the difference; FD: Frechet distance per sequence, averaged.",
              ""]
    return "\n".join(lines)


def write_report(report: GridReport, stem: Path) -> tuple[Path, Path]:
    """STEM.json and STEM.md, atomically."""
    stem = Path(stem)
    json_path = atomic_write_bytes(report_path(stem, ".json"), json_report_bytes(report.to_dict()))
    md_path = atomic_write_bytes(report_path(stem, ".md"), markdown(report).encode())
    return json_path, md_path
