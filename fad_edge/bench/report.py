"""The benchmark as rich tables, JSON and a PNG chart.

The tables follow `fad_edge.bench.tables` (80 columns, no number cut short); the pipeline and
backend are stacked in one text column, the one that folds when a terminal is narrower still.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from fad_edge.atomic import atomic_write_bytes
from fad_edge.bench.tables import figure_table, number, number_column, text_column
from fad_edge.json_report import json_report_bytes
from fad_edge.plots import plt, save_figure


def where(result: dict) -> str:
    """What the figures were measured on: the GPU for a device bench, else the CPU."""
    record = result["machine"]
    if record.get("gpu"):
        return f"{record['gpu']} (driver {record.get('driver') or '?'}, CUDA {record.get('cuda') or '?'})"
    features = record.get("cpu_features")  # absent in results written before it was recorded
    extensions = f"; {', '.join(features)}" if features else ""
    return f"{record['cpu']} ({record['cores']} cores{extensions})"


def _ms(value: float | None) -> str:
    return "-" if value is None else number(value * 1000)


def rich_table(result: dict) -> Table:
    table = figure_table(f"fad-edge bench on {where(result)}; fp32 GEMM {result['gemm_gflops']:,.0f} GFLOP/s")
    text_column(table, "pipeline\nbackend")
    for column in ("frames", "GFLOPs", "params\n(M)", "median\nms", "p99\nms", "GFLOP/s", "% of\nGEMM"):
        number_column(table, column)
    for row in result["rows"]:
        latency = row["latency"]
        achieved = row["flops"] / latency["median"] / 1e9 if latency and not math.isnan(row["flops"]) else None
        table.add_row(f"{row['pipeline']}\n[dim]{row['backend']}[/dim]", str(row["frames"]),
                      number(row["flops"] / 1e9, 2), number(row["params"] / 1e6 if row["params"] else None, 2),
                      _ms(latency and latency["median"]), _ms(latency and latency["p99"]),
                      "-" if achieved is None else number(achieved),
                      "-" if achieved is None else f"{100 * achieved / result['gemm_gflops']:.0f}")
    return table


def legend(result: dict) -> list[str]:
    """What each pipeline key stands for, and how it was timed."""
    seen: dict[str, str] = {}
    for row in result["rows"]:
        note = f" ({row['note']})" if row["note"] and row["pipeline"] != "fad" else ""
        seen.setdefault(row["pipeline"] + note, row["label"])
    return [f"{key}: {label}" for key, label in seen.items()]


def ratio_table(result: dict) -> Table:
    """Each replica's FLOPs and time over FAD's; the FAD backend named once in the title when every row shares it."""
    against = {ratio["against"] for ratio in result["ratios"]}
    shared = against.pop() if len(against) == 1 else None
    table = figure_table(f"ratios to FAD ({shared or 'its fastest backend'}); the paper's claims beside them")
    columns = ("pipeline", "frames", *(() if shared else ("vs",)), "FLOPs x", "time x", "paper\nFLOPs x",
               "paper\ntime x")
    for column in columns:
        if column in ("pipeline", "vs"):
            text_column(table, column)
        else:
            number_column(table, column)
    for ratio in result["ratios"]:
        paper = ratio["paper"] or {}
        claims = [f"{paper[key]:g}" if key in paper else "-" for key in ("flops", "time")]
        table.add_row(ratio["pipeline"], str(ratio["frames"]), *(() if shared else (ratio["against"],)),
                      number(ratio["flops_ratio"]),
                      "-" if ratio["time_ratio"] is None else f"{ratio['time_ratio']:,.0f}", *claims)
    return table


def throughput_table(result: dict) -> Table | None:
    """Frames per second at large batches (device bench only)."""
    if not result.get("throughput"):
        return None
    table = figure_table(f"batch throughput on {where(result)}: one call carries all frames")
    text_column(table, "backend")
    for column in ("frames", "seconds", "frames/s", "clips/s"):
        number_column(table, column)
    for entry in result["throughput"]:
        table.add_row(entry["backend"], str(entry["frames"]), f"{entry['seconds']:.3f}",
                      number(entry["frames_per_second"], 0), number(entry["clips_per_second"], 0))
    return table


def summary_lines(result: dict) -> list[str]:
    """FP16's speed-up over FP32 and the backends left out (device bench only)."""
    lines = []
    for entry in result.get("fp16", []):
        verdict = "use fp16" if entry["speedup"] > 1 else "keep fp32"
        lines.append(f"fp16 vs fp32 (CUDA graphs), {entry['frames']} frames: {entry['speedup']:.2f}x ({verdict})")
    for label, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {label}: {reason}")
    return lines


def write_json(result: dict, path: Path) -> Path:
    return atomic_write_bytes(Path(path), json_report_bytes(result))


def plot(result: dict, path: Path) -> Path:
    """Log-scale FLOPs and time per pipeline at the largest common frame count, time against frames, throughput."""
    rows = [r for r in result["rows"]]
    frames_list = sorted({r["frames"] for r in rows})
    rates = result.get("throughput") or []
    figure, axes = plt.subplots(1, 4 if rates else 3, figsize=(20 if rates else 15, 4.6))
    at = 64 if 64 in frames_list else frames_list[-1]
    chosen = [r for r in rows if r["frames"] == at]
    labels = [f"{r['pipeline']}\n{r['backend']}" for r in chosen]
    axes[0].barh(labels, [r["flops"] / 1e9 for r in chosen], color="tab:blue")
    axes[0].set_xscale("log")
    axes[0].set_xlabel(f"GFLOPs for {at} frames")
    timed = [r for r in chosen if r["latency"]]
    axes[1].barh([f"{r['pipeline']}\n{r['backend']}" for r in timed], [r["latency"]["median"] * 1000 for r in timed],
                 color="tab:orange")
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"median latency (ms) for {at} frames, batch 1")
    for key in sorted({(r["pipeline"], r["backend"]) for r in rows}):
        points = [(r["frames"], r["latency"]["median"] * 1000) for r in rows
                  if (r["pipeline"], r["backend"]) == key and r["latency"]]
        if points:
            axes[2].plot(*zip(*points), "o-", label=f"{key[0]} ({key[1]})")
    stream = result.get("stream")
    if stream:
        # One clip (8 frames) at a time in a stream: its latency is the reaction delay a user sees.
        for value, style, name in ((stream["latency_p50_ms"], ":", "p50"), (stream["latency_p99_ms"], "--", "p99")):
            label = f"stream per clip {name} ({stream['backend']}), RTF {stream['real_time_factor']:.2f}"
            axes[2].axhline(value, color="gray", linestyle=style, label=label)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("frames")
    axes[2].set_ylabel("median latency (ms)")
    axes[2].legend(fontsize=7)
    if rates:
        for backend in dict.fromkeys(entry["backend"] for entry in rates):
            points = [(e["frames"], e["frames_per_second"]) for e in rates if e["backend"] == backend]
            axes[3].plot(*zip(*points), "o-", label=backend)
        axes[3].set_xscale("log", base=2)
        axes[3].set_xlabel("frames per call (8 per robot's clip)")
        axes[3].set_ylabel("frames per second")
        axes[3].legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(f"FAD vs 3DMM-based and ReactFace-like pipelines ({where(result)})", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)
