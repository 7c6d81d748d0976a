"""The benchmark as rich tables, JSON and a PNG chart.

The tables follow `fad_edge.bench.tables` (80 columns, no number cut short); the pipeline and
backend are stacked in one text column, the one that folds when a terminal is narrower still.
The JSON and the chart are written together (`write_reports`): both new, or both as they were.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from rich.table import Table

from fad_edge.atomic import atomic_write_together
from fad_edge.bench.labels import shown_label
from fad_edge.bench.tables import figure_table, number, number_column, text_column
from fad_edge.json_report import json_report_bytes
from fad_edge.plots import plt
from fad_edge.report_paths import report_path

NOISY_SPREAD = 0.5  # a row whose (p90 - p10) / median is above this is named as noisy


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


def achieved_gflops(row: dict) -> float | None:
    """The row's FLOPs over its median time, in GFLOP/s (None where it was not both counted and timed)."""
    latency = row["latency"]
    return row["flops"] / latency["median"] / 1e9 if latency and not math.isnan(row["flops"]) else None


def _row_name(row: dict) -> str:
    """pipeline/backend at N frames, as the notes name a row."""
    return f"{row['pipeline']}/{shown_label(row['backend'], row.get('device'))} at {row['frames']} frames"


def rich_table(result: dict) -> Table:
    table = figure_table(f"fad-edge bench on {where(result)}; fp32 GEMM {result['gemm_gflops']:,.0f} GFLOP/s")
    text_column(table, "pipeline\nbackend")
    for column in ("frames", "GFLOPs", "params\n(M)", "median\nms", "p99\nms", "GFLOP/s", "% of\nGEMM"):
        number_column(table, column)
    for row in result["rows"]:
        latency = row["latency"]
        achieved = achieved_gflops(row)
        table.add_row(f"{row['pipeline']}\n[dim]{shown_label(row['backend'], row.get('device'))}[/dim]",
                      str(row["frames"]), number(row["flops"] / 1e9, 2),
                      number(row["params"] / 1e6 if row["params"] else None, 2),
                      _ms(latency and latency["median"]), _ms(latency and latency["p99"]),
                      "-" if achieved is None else number(achieved),
                      "-" if achieved is None else f"{100 * achieved / result['gemm_gflops']:.0f}")
    return table


def notes(result: dict) -> list[str]:
    """What the table does not show: how many runs each median is of, which rows are per-frame times scaled
    (no p99), which are noisy, and which beat the GEMM reference (their % of GEMM is then no efficiency)."""
    timed = [row for row in result["rows"] if row["latency"]]
    if not timed:
        return []
    counts = sorted({row["latency"]["runs"] for row in timed})
    runs = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    lines = [f"each median is of {runs} timed runs after warm-up (runs, p90 and spread per row: the JSON)"]
    scaled = list(dict.fromkeys(row["pipeline"] for row in timed if row["latency"].get("scale", 1) != 1))
    if scaled:
        lines.append(f"{', '.join(scaled)}: per-frame time x frames (as deployed, frame by frame), so no p99 is "
                     "measured ('-')")
    noisy = [f"{_row_name(row)} ({row['latency']['spread']:.2f})" for row in timed
             if row["latency"]["spread"] > NOISY_SPREAD]
    if noisy:
        lines.append(f"noisy, spread (p90 - p10) / median above {NOISY_SPREAD:g}: {'; '.join(noisy)}; time again "
                     "on an idle machine or with more --runs")
    above = [f"{_row_name(row)} ({100 * gflops / result['gemm_gflops']:.0f}%)" for row in timed
             if (gflops := achieved_gflops(row)) is not None and gflops > result["gemm_gflops"]]
    if above:
        lines.append(f"above the fp32 GEMM reference: {'; '.join(above)}; int8 or fp16 kernels can beat fp32 GEMM, "
                     "otherwise the reference was measured on a busy machine")
    return lines


def legend(result: dict) -> list[str]:
    """What each pipeline key stands for, and how it was timed."""
    seen: dict[str, str] = {}
    for row in result["rows"]:
        note = f" ({row['note']})" if row["note"] and row["pipeline"] != "fad" else ""
        seen.setdefault(row["pipeline"] + note, row["label"])
    return [f"{key}: {label}" for key, label in seen.items()]


def ratio_table(result: dict) -> Table | None:
    """Each replica's FLOPs and time over FAD's, with the paper's claims where one applies (None: nothing to
    compare); the FAD backend named once in the title when every row shares it."""
    if not result["ratios"]:
        return None
    against = {ratio["against"] for ratio in result["ratios"]}
    shared = against.pop() if len(against) == 1 else None
    claimed = any(ratio["paper"] for ratio in result["ratios"])
    title = f"ratios to FAD ({shared or 'its fastest backend'})" + ("; the paper's claims beside them" * claimed)
    table = figure_table(title)
    columns = ("pipeline", "frames", *(() if shared else ("vs",)), "FLOPs x", "time x",
               *(("paper\nFLOPs x", "paper\ntime x") if claimed else ()))
    for column in columns:
        if column in ("pipeline", "vs"):
            text_column(table, column)
        else:
            number_column(table, column)
    for ratio in result["ratios"]:
        paper = ratio["paper"] or {}
        claims = [f"{paper[key]:g}" if key in paper else "-" for key in ("flops", "time")] if claimed else []
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
        table.add_row(shown_label(entry["backend"], entry.get("device")), str(entry["frames"]),
                      f"{entry['seconds']:.3f}",
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


def write_reports(result: dict, stem: Path) -> tuple[Path, Path]:
    """STEM.json and STEM.png, written together: a failure leaves both as they were."""
    json_path, png_path = report_path(stem, ".json"), report_path(stem, ".png")
    atomic_write_together({json_path: json_report_bytes(result), png_path: chart_png(result)})
    return json_path, png_path


def _label(row: dict) -> str:
    return f"{row['pipeline']}\n{shown_label(row['backend'], row.get('device'))}"


def chart_png(result: dict) -> bytes:
    """Log-scale FLOPs and time per pipeline at the largest common frame count, time against frames, throughput;
    as PNG bytes."""
    rows = [r for r in result["rows"]]
    frames_list = sorted({r["frames"] for r in rows})
    rates = result.get("throughput") or []
    figure, axes = plt.subplots(1, 4 if rates else 3, figsize=(20 if rates else 15, 4.6))
    at = 64 if 64 in frames_list else frames_list[-1]
    chosen = [r for r in rows if r["frames"] == at]
    labels = [_label(r) for r in chosen]
    axes[0].barh(labels, [r["flops"] / 1e9 for r in chosen], color="tab:blue")
    axes[0].set_xscale("log")
    axes[0].set_xlabel(f"GFLOPs for {at} frames")
    timed = [r for r in chosen if r["latency"]]
    axes[1].barh([_label(r) for r in timed], [r["latency"]["median"] * 1000 for r in timed],
                 color="tab:orange")
    axes[1].set_xscale("log")
    axes[1].set_xlabel(f"median latency (ms) for {at} frames, batch 1")
    for key in sorted({(r["pipeline"], r["backend"], r.get("device")) for r in rows}, key=str):
        points = [(r["frames"], r["latency"]["median"] * 1000) for r in rows
                  if (r["pipeline"], r["backend"], r.get("device")) == key and r["latency"]]
        if points:
            axes[2].plot(*zip(*points), "o-", label=f"{key[0]} ({shown_label(key[1], key[2])})")
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
    if axes[2].get_legend_handles_labels()[0]:  # nothing timed: no legend (matplotlib would warn of it)
        axes[2].legend(fontsize=7)
    if rates:
        for backend in dict.fromkeys(entry["backend"] for entry in rates):
            points = [(e["frames"], e["frames_per_second"]) for e in rates if e["backend"] == backend]
            axes[3].plot(*zip(*points), "o-", label=shown_label(backend, result.get("device")))
        axes[3].set_xscale("log", base=2)
        axes[3].set_xlabel("frames per call (8 per robot's clip)")
        axes[3].set_ylabel("frames per second")
        axes[3].legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(f"FAD vs 3DMM-based and ReactFace-like pipelines ({where(result)})", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()
