"""The benchmark as a rich table, JSON and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from fad_edge.atomic import atomic_write_bytes
from fad_edge.plots import plt, save_figure


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def rich_table(result: dict) -> Table:
    table = Table(title=f"fad-edge bench on {result['machine']['cpu']} ({result['machine']['cores']} cores); "
                        f"fp32 GEMM {result['gemm_gflops']:.0f} GFLOP/s")
    for column in ("pipeline", "backend", "frames", "GFLOPs", "params (M)", "median ms", "p99 ms", "GFLOP/s", "% of GEMM"):
        table.add_column(column, justify="left" if column in ("pipeline", "backend") else "right")
    for row in result["rows"]:
        latency = row["latency"]
        achieved = row["flops"] / latency["median"] / 1e9 if latency else None
        table.add_row(row["pipeline"], row["backend"], str(row["frames"]),
                      f"{row['flops'] / 1e9:,.2f}", f"{row['params'] / 1e6:.2f}",
                      _ms(latency and latency["median"]), _ms(latency and latency["p99"]),
                      "-" if achieved is None else f"{achieved:.1f}",
                      "-" if achieved is None else f"{100 * achieved / result['gemm_gflops']:.0f}")
    return table


def legend(result: dict) -> list[str]:
    """What each pipeline key stands for, and how it was timed."""
    seen: dict[str, str] = {}
    for row in result["rows"]:
        note = f" ({row['note']})" if row["note"] else ""
        seen.setdefault(row["pipeline"] + note, row["label"])
    return [f"{key}: {label}" for key, label in seen.items()]


def ratio_table(result: dict) -> Table:
    table = Table(title="ratios to FAD (fastest backend); the paper's claims beside them")
    for column in ("pipeline", "frames", "vs", "FLOPs x", "time x", "paper FLOPs x", "paper time x"):
        table.add_column(column, justify="left" if column in ("pipeline", "vs") else "right")
    for ratio in result["ratios"]:
        paper = ratio["paper"] or {}
        table.add_row(ratio["pipeline"], str(ratio["frames"]), ratio["against"], f"{ratio['flops_ratio']:,.1f}",
                      "-" if ratio["time_ratio"] is None else f"{ratio['time_ratio']:,.0f}",
                      f"{paper.get('flops', float('nan')):g}", f"{paper.get('time', float('nan')):g}")
    return table


def write_json(result: dict, path: Path) -> Path:
    return atomic_write_bytes(Path(path), json.dumps(result, indent=2).encode())


def plot(result: dict, path: Path) -> Path:
    """Log-scale FLOPs and time per pipeline at the largest common frame count, and time against frames."""
    rows = [r for r in result["rows"]]
    frames_list = sorted({r["frames"] for r in rows})
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
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
            axes[2].axhline(value, color="gray", linestyle=style,
                            label=f"stream per clip {name} ({stream['backend']}), RTF {stream['real_time_factor']:.2f}")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("frames")
    axes[2].set_ylabel("median latency (ms)")
    axes[2].legend(fontsize=7)
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(f"FAD vs 3DMM-based and ReactFace-like pipelines ({result['machine']['cpu']})", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)
