"""The REACT table of `fad-edge evaluate`: m reactions per speaker window, scored for appropriateness,
diversity and synchrony (react_metrics.py) against each window's appropriate set (appropriate.py).

Rows: the baselines (Random, NN motion and NN audio give m different draws; Mirror and Median one),
each model (m samples with seeds 0..m-1 under its runner's sampler, at start noise `start_noise`
where that is set: the small preset's mean start gives the same motion for every seed, which would
leave nothing to measure diversity by), and two real references, each scored against the
appropriate set without itself: the generator's alternative listeners (where the dataset has them)
and the window's own listener ("GT held out").
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fad_edge import metrics, react_metrics
from fad_edge.appropriate import ReactSession, ReactWindows, build_windows
from fad_edge.data import layout
from fad_edge.model_draws import EncodedInputs, sample_encoded
from fad_edge.runtime.base import ClipRunner
from fad_edge.samples import LabelledInputs
from fad_edge.sampling import SamplerSettings

REACT_METRICS = ("FRCorr", "FRDist", "FRDiv", "FRDvs", "FRVar", "FRSyn")
ALTERNATIVES, HELD_OUT = "Alternatives", "GT held out"


@dataclass(frozen=True)
class ReactOptions:
    """How the REACT table is drawn: m samples per speaker window of `window` frames."""

    samples: int = 10
    window: int = 256  # 8.5 s at 30 fps; REACT's clips are 750 frames at 25 fps (30 s)
    neighbours: int = 5  # appropriate listeners besides the window's own, where a dataset has no alternatives
    start_noise: float | None = 1.0  # None: the runner's sampler as it is (e.g. the calibrated "diverse" one)


@dataclass
class ReactTable:
    """rows[name][group][metric] and, per model, ratios[label][group][ratio] against the real references."""

    window: int
    windows: int
    samples: int
    source: str
    rows: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    ratios: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def react_sessions(test: list[LabelledInputs], data: Path) -> list[ReactSession]:
    return [ReactSession(s.name, s.listener, s.speaker, s.mel,
                         layout.load_listener_alternatives(Path(data) / s.name, len(s.listener))) for s in test]


def score(
    windows: ReactWindows, draws: np.ndarray, allowed: list[np.ndarray] | None = None
) -> dict[str, dict[str, float]]:
    """Every REACT metric per group for draws (N, m, W, 56)."""
    result = {}
    for group, columns in metrics.GROUPS.items():
        speakers = None if windows.speakers is None else windows.speakers[..., columns]
        result[group] = react_metrics.react_scores(draws[..., columns], [a[..., columns] for a in windows.appropriate],
                                                   speakers, allowed)
    return result


def reference_rows(windows: ReactWindows) -> dict[str, dict[str, dict[str, float]]]:
    """The real references, each scored against the appropriate set less itself (leave one out)."""
    rows = {}
    if windows.source == "alternatives":
        alternatives = np.stack([a[1:] for a in windows.appropriate])  # (N, K, W, 56)
        count = alternatives.shape[1]
        not_itself = np.arange(count + 1)[None] != np.arange(1, count + 1)[:, None]  # alternative j is reaction j + 1
        rows[ALTERNATIVES] = score(windows, alternatives, [not_itself] * len(alternatives))
    rows[HELD_OUT] = score(windows, windows.listeners[:, None],
                           [np.arange(len(a))[None] != 0 for a in windows.appropriate])
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def ratios(rows: dict[str, dict[str, dict[str, float]]], label: str) -> dict[str, dict[str, float]]:
    """The figures tracked for a model: its FRDiv over the alternatives', its FRCorr over a held-out real
    listener's."""
    result = {}
    for group in metrics.GROUPS:
        values = {}
        if ALTERNATIVES in rows:
            values["FRDiv / Alternatives"] = _ratio(rows[label][group]["FRDiv"], rows[ALTERNATIVES][group]["FRDiv"])
        values["FRCorr / GT held out"] = _ratio(rows[label][group]["FRCorr"], rows[HELD_OUT][group]["FRCorr"])
        result[group] = values
    return result


def evaluate_react(test: list[LabelledInputs], data: Path, baseline_draws: dict[str, list[list[np.ndarray]]],
                   models: Sequence[tuple[str, ClipRunner, list[EncodedInputs]]],
                   options: ReactOptions) -> ReactTable | None:
    """The REACT table on the evaluated split; None when no session is a window long.

    `baseline_draws`: per baseline, each test session's draws (`Baselines.draws`).
    `models`: (label, runner, each test session's encoded inputs); the runner is sampled with its
    settings (at `options.start_noise` where set) and only as far into each session as its last window
    reaches.
    """
    started = time.perf_counter()
    windows = build_windows(react_sessions(test, data), options.window, options.neighbours)
    if windows is None:
        return None
    table = ReactTable(options.window, len(windows.names), options.samples, windows.source)
    for name, draws in baseline_draws.items():
        table.rows[name] = score(windows, windows.cut_draws(draws))
    reach = [0] * len(test)
    for session, start in windows.starts:
        reach[session] = max(reach[session], start + windows.window)
    for label, runner, encoded in models:
        if options.start_noise is not None:
            runner.settings = dataclasses.replace(runner.settings, start_noise=options.start_noise)
        draws = [[sample_encoded(runner, session, seed, frames) for seed in range(options.samples)] if frames else []
                 for session, frames in zip(encoded, reach)]
        table.rows[label] = score(windows, windows.cut_draws(draws))
    table.rows.update(reference_rows(windows))
    labels = [label for label, _, _ in models]
    for label in labels:
        table.ratios[label] = ratios(table.rows, label)
    table.notes += _notes(windows, options, labels, [runner.settings for _, runner, _ in models])
    table.seconds = time.perf_counter() - started
    return table


def _notes(windows: ReactWindows, options: ReactOptions, labels: list[str],
           settings: list[SamplerSettings]) -> list[str]:
    sizes = sorted({len(a) for a in windows.appropriate})
    size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    if windows.source == "alternatives":  # every window has the same K alternatives
        appropriate = f"its own listener and the dataset's {sizes[0] - 1} alternative listeners"
    else:
        appropriate = f"the listeners of the window and its {options.neighbours} nearest speaker windows"
    described = sorted({s.describe() for s in settings}) or ["their samplers"]
    forced = "" if options.start_noise is None else " (start noise set for this table: a mean start gives one answer)"
    models = ", ".join(labels) if labels else "the models"
    return [
        (f"REACT: {len(windows.names)} windows of {windows.window} frames, {options.samples} samples each; "
         f"appropriate set ({size} reactions): {appropriate}."),
        (f"{models}: {options.samples} samples per window, seeds 0..{options.samples - 1}, "
         f"{'; '.join(described)}{forced}."),
        ("Random, NN motion and NN audio: m draws (NN: the k-th nearest training window); "
         "Mirror and Median: one answer, so no FRDiv."),
        (f"{ALTERNATIVES} and {HELD_OUT}: real reactions, each scored against the appropriate set without itself "
         "(one reaction fewer to match than the generated ones have)."),
    ]
