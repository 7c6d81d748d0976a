"""The evaluation table as rich, markdown and JSON, and the denoising-steps figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.table import Table

from fad_edge.atomic import atomic_write_bytes
from fad_edge.evaluation import EvaluationTable
from fad_edge.plots import plt, save_figure

COLUMNS = [("L2", "L2"), ("FD", "FD"), ("SI", "SI"), ("TLCC lag", "TLCC lag"), ("TLCC r", "TLCC r")]
DEFINITIONS = [
    "L2: mean per-frame Euclidean norm of the difference (Learning to Listen); MSE is in the JSON.",
    "FD: Frechet distance per sequence against its ground truth, averaged; pooled FD is in the JSON.",
    "SI: entropy (bits) of k-means cluster use, k-means fitted on the split's ground truth (k=40 expression, 20 rotation).",
    "TLCC: speaker vs listener, lags -59..+59 frames; TLCC lag = mean absolute peak lag (frames), TLCC r = mean peak Pearson r.",
]


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


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
        if name == "GT" and key in ("L2", "FD", "diversity"):
            value = None  # GT against itself: zero by definition, shown as a dash
        cells.append(_format(value))
    return cells


GROUP_TITLES = {"expression": "expression (50)", "rotation": "rotation (jaw + head, 6)"}


def rich_tables(table: EvaluationTable, title: str) -> list[Table]:
    """One table per group, narrow enough for a terminal."""
    tables = []
    for group, group_title in GROUP_TITLES.items():
        out = Table(title=f"{title}: {group_title}")
        out.add_column("method")
        for label in _labels(table):
            out.add_column(label, justify="right")
        for name in table.rows:
            out.add_row(name, *_cells(table, name, group))
        tables.append(out)
    overall = Table(title=f"{title}: all 56 dims")
    overall.add_column("method")
    overall.add_column("L2", justify="right")
    for name in table.rows:
        if name != "GT":
            overall.add_row(name, _format(table.rows[name]["all"]["L2"]))
    tables.append(overall)
    return tables


def markdown(table: EvaluationTable, title: str) -> str:
    labels = _labels(table)
    header = ["method", *[f"exp {label}" for label in labels], *[f"rot {label}" for label in labels], "all-56 L2"]
    lines = [f"## {title}", "", f"Split `{table.split}`: {len(table.sessions)} sessions, {table.frames} frames.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([name, *_cells(table, name, "expression"), *_cells(table, name, "rotation"),
                                 "-" if name == "GT" else _format(table.rows[name]["all"]["L2"])]) + " |"
              for name in table.rows]
    lines += ["", *[f"- {d}" for d in DEFINITIONS], *[f"- {note}" for note in table.notes], ""]
    return "\n".join(lines)


def write_reports(table: EvaluationTable, out: Path, title: str) -> tuple[Path, Path]:
    out = Path(out)
    json_path = atomic_write_bytes(out.with_suffix(".json"), json.dumps(
        {**table.to_dict(), "title": title, "definitions": DEFINITIONS}, indent=2, allow_nan=True).encode())
    md_path = atomic_write_bytes(out.with_suffix(".md"), markdown(table, title).encode())
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
