"""The evaluation table as rich, markdown and JSON, and the denoising-steps figure."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from fad_edge.atomic import atomic_write_bytes
from fad_edge.bench.tables import TEXT_MIN_WIDTH
from fad_edge.evaluation import EvaluationTable
from fad_edge.json_report import json_report_bytes
from fad_edge.plots import plt, save_figure
from fad_edge.react_evaluation import REACT_METRICS, ReactTable
from fad_edge.report_paths import report_path
from fad_edge.sampling import SamplerSettings

COLUMNS = [("L2", "L2"), ("FD", "FD"), ("P-FD", "P-FD"), ("SI", "SI"), ("TLCC lag", "TLCC lag"), ("TLCC r", "TLCC r")]
# The whole split at once: every frame's L2 over all 56 dims, and FD and P-FD with every frame pooled.
POOLED = [("expression", "FD pooled", "exp FD"), ("expression", "P-FD pooled", "exp P-FD"),
          ("rotation", "FD pooled", "rot FD"), ("rotation", "P-FD pooled", "rot P-FD")]
DEFINITIONS = [
    "L2: mean per-frame Euclidean norm of the difference (Learning to Listen), in the coefficients' own units; "
    "MSE is in the JSON.",
    "FD: Frechet distance of each sequence against its own ground truth, averaged over sequences (does each "
    "session move as its listener did?). Pooled FD: all the split's frames at once against all its real ones "
    "(the FID-style reading: is the motion distributed as real motion is?), in the last table.",
    "P-FD: FD of [speaker, listener] concatenated per frame (Learning to Listen's paired FD), per sequence and "
    "pooled as FD.",
    "SI: entropy (bits) of k-means cluster use, k-means fitted on the split's ground truth "
    "(k=40 expression, 20 rotation).",
    "TLCC: speaker vs listener over lags up to +-59 frames (at most a quarter of a shorter sequence); "
    "TLCC lag = mean absolute peak lag (frames), TLCC r = mean peak Pearson r.",
]


def _format(value: float | None) -> str:
    """Three significant digits, never in exponent form: rotation FDs of 0.00036 and 0.00074 must differ."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:.1f}"
    decimals = 3 if value == 0 else max(1, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _keys(table: EvaluationTable) -> list[str]:
    extra = ["diversity"] if any("diversity" in row["expression"] for row in table.rows.values()) else []
    return [key for key, _ in COLUMNS] + extra


def _labels(table: EvaluationTable) -> list[str]:
    names = dict(COLUMNS)
    return [names.get(key, key) for key in _keys(table)]


def _cells(table: EvaluationTable, name: str, group: str) -> list[str]:
    cells = []
    for key in _keys(table):
        value = table.rows[name][group].get(key)
        if name == "GT" and key in ("L2", "FD", "P-FD", "diversity"):
            value = None  # GT against itself: zero by definition, shown as a dash
        cells.append(_format(value))
    return cells


GROUP_TITLES = {"expression": "expression (50)", "rotation": "rotation (jaw + head, 6)"}


def sampler_lines(table: EvaluationTable) -> list[str]:
    """One line per model: which sampler drew its motion, with what settings, how many times."""
    lines = []
    for label, entry in table.samplers.items():
        count = entry["samples"]
        seeds = "seed 0" if count == 1 else f"seeds 0..{count - 1}"
        lines.append(f"{label}: sampler {entry['sampler']} ({SamplerSettings(**entry['settings']).describe()}); "
                     f"{count} sample{'s' if count > 1 else ''} per clip, {seeds}.")
    return lines


def rich_tables(table: EvaluationTable, title: str) -> list[Table]:
    """One table per group, narrow enough for a terminal; its numbers never wrap, so that `print_table` can
    stack the rows where a terminal is narrower than they need."""
    tables = []
    for group, group_title in GROUP_TITLES.items():
        out = Table(title=f"{title}: {group_title}")
        out.add_column("method", overflow="fold", min_width=TEXT_MIN_WIDTH)  # labels may differ only at their end
        for label in _labels(table):
            out.add_column(label, justify="right", no_wrap=True)
        for name in table.rows:
            out.add_row(name, *_cells(table, name, group))
        tables.append(out)
    overall = Table(title=f"{title}: the whole split (L2 of all 56 dims; FD and P-FD pooled)")
    overall.add_column("method", overflow="fold", min_width=TEXT_MIN_WIDTH)
    for label in ["L2 (56)", *[label for _, _, label in POOLED]]:
        overall.add_column(label, justify="right", no_wrap=True)
    for name in table.rows:
        if name != "GT":
            overall.add_row(name, *_whole_split_cells(table, name))
    tables.append(overall)
    return tables


def _whole_split_cells(table: EvaluationTable, name: str) -> list[str]:
    row = table.rows[name]
    return [_format(row["all"]["L2"]), *[_format(row[group].get(key)) for group, key, _ in POOLED]]


def markdown(table: EvaluationTable, title: str) -> str:
    labels = _labels(table)
    header = ["method", *[f"exp {label}" for label in labels], *[f"rot {label}" for label in labels], "all-56 L2"]
    lines = [f"## {title}", "", f"Split `{table.split}`: {len(table.sessions)} sessions, {table.frames} frames.", "",
             *[f"- {line}" for line in sampler_lines(table)], *([""] if table.samplers else []),
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([name, *_cells(table, name, "expression"), *_cells(table, name, "rotation"),
                                 "-" if name == "GT" else _format(table.rows[name]["all"]["L2"])]) + " |"
              for name in table.rows]
    pooled_header = ["method", "all-56 L2", *[label for _, _, label in POOLED]]
    lines += ["", "Pooled over the whole split:", "", "| " + " | ".join(pooled_header) + " |",
              "|" + "---|" * len(pooled_header)]
    lines += ["| " + " | ".join([name, *_whole_split_cells(table, name)]) + " |"
              for name in table.rows if name != "GT"]
    lines += ["", *[f"- {d}" for d in DEFINITIONS], *[f"- {note}" for note in table.notes], ""]
    if table.react is not None:
        lines += react_markdown(table.react)
    return "\n".join(lines)


REACT_DEFINITIONS = [
    ("FRCorr: per generated reaction, the best CCC (per dim, averaged over dims) with any appropriate real "
     "reaction; averaged over the m samples (REACT's code adds them up) and the windows. Higher is better."),
    ("FRDist: per generated reaction, the least DTW distance (all the group's dims at once, divided by their "
     "number) to an appropriate reaction, per group; averaged like FRCorr. Lower is better."),
    ("FRDiv: mean squared difference between the m samples for one speaker window (S-MSE); FRDvs: the same "
     "between samples for different windows; FRVar: variance over frames. Higher is more diverse."),
    "FRSyn: mean |peak lag| (frames) of the speaker-reaction TLCC over lags -59..+59, every sample counted.",
]


def _react_format(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.3g}"


def react_lines(react: ReactTable) -> list[str]:
    """One line per model and ratio to a real reference (the figures the project tracks)."""
    return [f"{label}: {ratio} = {_react_format(groups['expression'][ratio])} expression, "
            f"{_react_format(groups['rotation'][ratio])} rotation"
            for label, groups in react.ratios.items() for ratio in groups["expression"]]


def react_rich_tables(react: ReactTable, title: str) -> list[Table]:
    """One REACT table per group."""
    tables = []
    for group, group_title in GROUP_TITLES.items():
        out = Table(title=f"{title}: REACT, {group_title}")
        out.add_column("method", overflow="fold", min_width=TEXT_MIN_WIDTH)
        for metric in REACT_METRICS:
            out.add_column(metric, justify="right", no_wrap=True)
        for name, row in react.rows.items():
            out.add_row(name, *[_react_format(row[group][metric]) for metric in REACT_METRICS])
        tables.append(out)
    return tables


def react_markdown(react: ReactTable) -> list[str]:
    header = ["method", *[f"exp {m}" for m in REACT_METRICS], *[f"rot {m}" for m in REACT_METRICS]]
    lines = ["### REACT metrics", "",
             (f"{react.windows} speaker windows of {react.window} frames, m = {react.samples}; "
              f"appropriate sets from {react.source}; computed in {react.seconds:.0f} s."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in react.rows.items():
        cells = [_react_format(row[g][m]) for g in GROUP_TITLES for m in REACT_METRICS]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    lines += ["", *[f"- {line}" for line in react_lines(react)], *[f"- {d}" for d in REACT_DEFINITIONS],
              *[f"- {note}" for note in react.notes], ""]
    return lines


def write_reports(table: EvaluationTable, out: Path, title: str) -> tuple[Path, Path]:
    out = Path(out)
    json_path = atomic_write_bytes(report_path(out, ".json"), json_report_bytes(
        {**table.to_dict(), "title": title, "definitions": DEFINITIONS,
         "react_definitions": REACT_DEFINITIONS if table.react is not None else []}))
    md_path = atomic_write_bytes(report_path(out, ".md"), markdown(table, title).encode())
    return json_path, md_path


def plot_steps_curve(curve: dict[int, dict], path: Path) -> Path:
    """L2 and FD against denoising steps, expression and rotation (the paper's Figure 4)."""
    steps = sorted(curve)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, metric in zip(axes, ("L2", "FD")):
        for group, style in (("expression", "o-"), ("rotation", "s--")):
            axis.plot(steps, [curve[s][group][metric] for s in steps], style, label=group)
        axis.set_xscale("log")
        axis.set_xlabel("denoising steps")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("FAD: accuracy against denoising steps")
    figure.tight_layout()
    return save_figure(figure, path)
