"""Calibrating the "diverse" sampler: L2 and FD of a small grid of sampler settings on a validation split.

The "mean" sampler (the model's own setting) is scored first, as the reference. Each candidate draws
`samples` motions per session (seeds 0..samples-1) from inputs encoded once, scored as the steps
curve is (`evaluation.score_settings`). The choice is the candidate closest to real motion in
distribution (the least FD, each group's relative to the mean sampler's, summed over expression and
rotation) among those whose L2 stays within `max_l2_ratio` of the mean sampler's in both groups: a
diverse sample should still be a reaction to this speaker. Its values go into a copy of the
checkpoint with the config's `diverse_*` fields set, so the calibrated sampler travels with the model
into its exports (the manifest carries the config) and every runner reads it from there.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from fad_edge import metrics
from fad_edge.atomic import atomic_write_bytes, staging_folder, swap_in_folder
from fad_edge.checkpoint import MODEL_JSON, LoadedCheckpoint, read_checkpoint_info, resolve_checkpoint
from fad_edge.errors import CheckpointError, FadEdgeError
from fad_edge.evaluation import encoded_split, score_settings
from fad_edge.models.config import DIVERSE_NOISE_LIMITS, ModelConfig
from fad_edge.report_paths import report_path
from fad_edge.reporting import Say, silent
from fad_edge.sampling import SamplerSettings

MAX_L2_RATIO = 1.25  # a candidate's L2 may exceed the mean sampler's by this factor, in each group


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
        found: list[SamplerSettings] = []
        for start, steps, noise, temperature, rotation in itertools.product(
                self.start_steps, self.steps, self.start_noises, self.temperatures, self.rotation_noises):
            # One step adds no posterior noise, so its temperature and rotation noise change nothing.
            several = steps > 1
            settings = SamplerSettings(steps, start, config.clip_sample, noise, temperature if several else 1.0,
                                       rotation if several else 1.0)
            if settings not in found:
                found.append(settings)
        return found


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def choose(rows: list[GridRow], max_l2_ratio: float = MAX_L2_RATIO) -> int | None:
    """The candidate (index into rows, after the reference) with the least relative FD within the L2 bound."""
    reference = rows[0].scores
    best, best_score = None, math.inf
    for index, row in enumerate(rows[1:], start=1):
        if any(row.scores[g]["L2"] > max_l2_ratio * reference[g]["L2"] for g in metrics.GROUPS):
            continue
        score = sum(row.scores[g]["FD"] / max(reference[g]["FD"], 1e-12) for g in metrics.GROUPS)
        if score < best_score:
            best, best_score = index, score
    return best


def run_grid(loaded: LoadedCheckpoint, data: Path, split: str, grid: SamplerGrid, samples: int = 2,
             device: str = "cpu", max_l2_ratio: float = MAX_L2_RATIO, say: Say = silent) -> GridReport:
    """The mean sampler and every candidate of `grid`, scored on `split`, and the rule's choice."""
    candidates = grid.candidates(loaded.config)
    say(f"encoding the {split} split")
    runner, encoded, truths = encoded_split(loaded, data, split, device)
    report = GridReport(str(loaded.path), split, len(encoded), sum(e.frames for e in encoded), samples, max_l2_ratio)
    every = [SamplerSettings.named("mean", loaded.config), *candidates]
    for index, settings in enumerate(every):
        say(f"setting {index + 1} of {len(every)}: {settings.describe()}")
        name = "mean" if index == 0 else f"#{index}"
        report.rows.append(GridRow(name, settings, score_settings(runner, encoded, truths, settings, samples)))
    report.chosen = choose(report.rows, max_l2_ratio)
    return report


def diverse_fields(settings: SamplerSettings) -> dict[str, int | float]:
    """The model config's `diverse_*` values for these settings."""
    return {"diverse_start_step": settings.start_step, "diverse_start_noise": settings.start_noise,
            "diverse_steps": settings.steps, "diverse_temperature": settings.temperature,
            "diverse_rotation_noise": settings.rotation_noise}


def write_calibrated_copy(checkpoint: Path, out: Path, settings: SamplerSettings, overwrite: bool = False) -> Path:
    """A copy of `checkpoint` at `out` whose config holds `settings` as its diverse sampler; atomically.

    The weights are copied byte for byte (their hash, which exports record, is unchanged). `out` must
    not exist, or be the checkpoint itself, unless `overwrite`.
    """
    source = resolve_checkpoint(checkpoint)
    out = Path(out)
    if source.resolve() in out.resolve().parents:
        raise FadEdgeError(f"{out} is inside the checkpoint {source}; give a folder beside it")
    if out.exists() and not overwrite:
        what = "is the input checkpoint" if out.resolve() == source.resolve() else "exists"
        raise FadEdgeError(f"{out} {what}; give another folder, or --overwrite to replace it")
    info = read_checkpoint_info(source)
    config = {**info["config"], **diverse_fields(settings)}
    try:
        ModelConfig.from_dict(config)
    except ValueError as error:
        raise CheckpointError(f"{source / MODEL_JSON}: the calibrated config is invalid ({error})") from None
    staging = staging_folder(out)
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / MODEL_JSON).write_text(json.dumps({**info, "config": config}, indent=2))
        return swap_in_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
    rule = (f"The choice: the least FD relative to the mean sampler's (expression + rotation) among settings "
            f"whose L2 is within {report.max_l2_ratio:g}x the mean sampler's in both groups")
    lines += ["", f"- {rule}; " + ("none qualified." if report.chosen is None else
                                   f"{report.rows[report.chosen].name}."),
              "- L2: mean per-frame Euclidean norm of the difference; FD: Frechet distance per sequence, averaged.",
              ""]
    return "\n".join(lines)


def write_report(report: GridReport, stem: Path) -> tuple[Path, Path]:
    """STEM.json and STEM.md, atomically."""
    stem = Path(stem)
    json_path = atomic_write_bytes(report_path(stem, ".json"), json.dumps(report.to_dict(), indent=2).encode())
    md_path = atomic_write_bytes(report_path(stem, ".md"), markdown(report).encode())
    return json_path, md_path
