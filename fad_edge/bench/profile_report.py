"""`fad-edge profile`'s tables and JSON: time per graph, then per op type within each graph.

Within each graph, op types that take under `MINOR_SHARE` of the graph's time are summed into one
"other" row (the JSON keeps every one): of the graph, so that a small graph keeps its breakdown.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from fad_edge.atomic import atomic_write_together
from fad_edge.bench.tables import figure_table, number, number_column, text_column
from fad_edge.json_report import json_report_bytes

MINOR_SHARE = 0.02  # op types under 2% of their graph's time are summed into one row per graph
BETWEEN_OPS = "(between ops)"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "-"


def _ms(value: float) -> str:
    return number(value, 2)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def headline(summary: dict) -> list[str]:
    """What was profiled, in lines that fit 80 columns."""
    return [f"ONNX Runtime profile of {summary['export']}",
            f"{summary['preset']} preset, {summary['precision']}: {_count(summary['frames'], 'frame')} "
            f"({_count(summary['clips'], 'clip')}) per run, {_count(summary['steps'], 'denoising step')}",
            f"{_count(summary['threads'], 'thread')}; {_count(summary['runs'], 'run')} after "
            f"{_count(summary['warmup'], 'warm-up run')}"]


def graph_table(summary: dict) -> Table:
    """Each graph's session runs per runner call: how many, how long, which share of the whole."""
    total = summary["total_ms"]
    table = figure_table()
    text_column(table, "graph", min_width=13)
    for column in ("session\nruns", "ms/run", "share"):
        number_column(table, column)
    for graph in summary["graphs"]:
        table.add_row(graph["graph"], f"{graph['calls']:g}", _ms(graph["ms"]), _percent(graph["ms"], total))
    table.add_row("all graphs", "", _ms(total), _percent(total, total), style="bold")
    return table


def op_table(summary: dict) -> Table:
    """Per graph, each op type's kernel time per runner call, largest first, and the time between ops."""
    total = summary["total_ms"]
    table = figure_table()
    text_column(table, "graph\n  op type", min_width=23)
    for column in ("nodes\n/run", "ms/run", "% of\ngraph", "% of\nall"):
        number_column(table, column)
    for graph in summary["graphs"]:
        table.add_row(graph["graph"], "", _ms(graph["ms"]), "100.0%", _percent(graph["ms"], total), style="bold")
        minor = [op for op in graph["ops"] if op["ms"] < MINOR_SHARE * graph["ms"]]
        for op in graph["ops"]:
            if op not in minor:
                table.add_row(f"  {op['op_type']}", f"{op['nodes']:g}", _ms(op["ms"]), _percent(op["ms"], graph["ms"]),
                              _percent(op["ms"], total))
        if minor:
            ms = sum(op["ms"] for op in minor)
            table.add_row(f"  {_count(len(minor), 'other op type')}", f"{sum(op['nodes'] for op in minor):g}", _ms(ms),
                          _percent(ms, graph["ms"]), _percent(ms, total))
        between = graph["between_ops_ms"]
        table.add_row(f"  {BETWEEN_OPS}", "", _ms(between), _percent(between, graph["ms"]), _percent(between, total))
    return table


def footer(summary: dict) -> list[str]:
    machine = summary["machine"]
    wall = number(summary["wall_ms_median"], 2)
    return [f"wall time per run: {wall} ms (median; the profiler adds a little per node)",
            f"on {machine['cpu']} ({_count(machine['cores'], 'core')}), onnxruntime {machine['onnxruntime']}"]


def write_summary(summary: dict, path: Path) -> Path:
    """The summary as JSON, atomically; an error names `path`, not its temporary."""
    atomic_write_together({Path(path): json_report_bytes(summary)})
    return Path(path)
