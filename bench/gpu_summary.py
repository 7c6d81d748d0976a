"""The GPU check's figures against their targets, read off what `bench/gpu_check.sh` wrote.

    PYTHONPATH=. python bench/gpu_summary.py RESULTS_FOLDER

Reads RESULTS_FOLDER/gpu_bench.json (FAD's plain GPU variants), gpu_bench_compiled.json (the compiled
FP16 variant beside plain FP16 channels-last, with the replicas and the stream in the same run),
gpu_eval.json, gpu_train_profile.json (the training pace, where the check ran it), gpu_compiled.json
(an older check's compiled step: its 64-frame and throughput figures count as the compiled
variant's) and the check's log gpu_check.txt (the trainings' progress lines) and writes
RESULTS_FOLDER/gpu_summary.json: one record per target with the measured figure, the goal and
whether it holds. A missing file leaves its figures out (None), so a check whose bench failed still
reports its training. Prints the table it writes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from fad_edge.atomic import atomic_write_bytes

EPOCH_LINE = re.compile(r"epoch (\d+): step (\d+) .*val L2 (?:\(1 step\) )?([0-9.]+)")
TRAINED_LINE = re.compile(r"trained (\d+) steps in (\d+) s(?: \((\d+) s of it waiting for data\))?")
STOPPED_LINE = re.compile(r"^== (.+?): (?:stopped by|ran for) its (\d+)s")
GPU_LINE = re.compile(r"^GPU: (.+)$", re.MULTILINE)
TRAINED_PRESET_LINE = re.compile(r"^== training preset: (\S+)", re.MULTILINE)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def step_lines(log: str, name: str) -> list[str]:
    """The lines a step of the check printed, from its '== NAME (limit' line to its '== NAME:' line."""
    lines, inside = [], False
    for line in log.splitlines():
        if line.startswith(f"== {name} (limit"):
            inside = True
        elif inside:
            lines.append(line)
            if line.startswith(f"== {name}:"):
                break
    return lines


def training_figures(lines: list[str]) -> dict:
    """Steps reached, the training's own seconds where it finished (else the limit that stopped it, which
    also holds the process's start and data loading), and the last validation's 1-step L2."""
    epochs = [EPOCH_LINE.search(line) for line in lines]
    last = next((m for m in reversed(epochs) if m), None)
    done = next((m for m in (TRAINED_LINE.search(line) for line in lines) if m), None)
    stopped = next((m for m in (STOPPED_LINE.search(line) for line in lines) if m), None)
    return {"steps": int(done[1]) if done else (int(last[2]) if last else None),
            "seconds": float(done[2]) if done else None,
            "data_wait_s": float(done[3]) if done and done[3] else None,
            "finished": done is not None,
            "stopped_at_limit_s": float(stopped[2]) if stopped else None,
            "last_val_l2": float(last[3]) if last else None}


def bench_figures(bench: dict) -> dict:
    """The target figures of the bench: best 64-frame FAD, stream p99, 4096-frame rate, replica ratios."""
    fad64 = [row for row in bench["rows"] if row["pipeline"] == "fad" and row["frames"] == 64 and row["latency"]]
    best = min(fad64, key=lambda row: row["latency"]["median"], default=None)
    rates = [r for r in bench["throughput"] if r["frames"] == max(r2["frames"] for r2 in bench["throughput"])]
    fastest_rate = max(rates, key=lambda r: r["frames_per_second"], default=None)
    ratios = {(r["pipeline"], r["frames"]): r for r in bench["ratios"]}
    deca = ratios.get(("deca", 64))
    react = ratios.get(("reactface", 256))
    stream = bench.get("stream") or {}
    return {
        "gpu": bench["machine"].get("gpu"),
        "fad_64_best_ms": best["latency"]["median"] * 1000 if best else None,
        "fad_64_best_backend": best["backend"] if best else None,
        "stream_p99_ms": stream.get("latency_p99_ms"),
        "stream_backend": stream.get("backend"),
        "throughput_frames": fastest_rate["frames"] if fastest_rate else None,
        "throughput_frames_per_s": fastest_rate["frames_per_second"] if fastest_rate else None,
        "throughput_backend": fastest_rate["backend"] if fastest_rate else None,
        "deca_over_fad_64": deca["time_ratio"] if deca else None,
        "deca_against": deca["against"] if deca else None,
        "reactface_over_fad_256": react["time_ratio"] if react else None,
        "reactface_against": react["against"] if react else None,
    }


# Each figure of bench_figures, whether a lower value is better, and the key naming what measured it.
BENCH_BESTS = {"fad_64_best_ms": (True, "fad_64_best_backend"), "stream_p99_ms": (True, "stream_backend"),
               "throughput_frames_per_s": (False, "throughput_backend"),
               "deca_over_fad_64": (False, "deca_against"), "reactface_over_fad_256": (False, "reactface_against")}


def best_of(runs: list[dict]) -> dict:
    """Per target figure, the best over several bench runs' figures (each a ratio or time from its own run)."""
    merged: dict = {}
    for figures in runs:
        for key, value in figures.items():
            merged.setdefault(key, value)
        for key, (lower, named_by) in BENCH_BESTS.items():
            value, held = figures.get(key), merged.get(key)
            if value is not None and (held is None or (value < held if lower else value > held)):
                merged[key], merged[named_by] = value, figures.get(named_by)
                if key == "throughput_frames_per_s":
                    merged["throughput_frames"] = figures.get("throughput_frames")
    return merged


def add_compiled(figures: dict, timings: list[dict]) -> None:
    """The compiled FP16 graphs' timings, and the 64-frame and throughput bests where they beat the bench's.

    A row holds its compiled variants under "variants"; a check from before channels-last was compared too holds
    one, as "compiled_s"."""
    figures["fp16_compiled"] = timings
    variants = [row.get("variants") or {"compiled": {"seconds": row["compiled_s"]}} for row in timings]  # or one
    best = {row["frames"]: min(found.items(), key=lambda item: item[1]["seconds"])
            for row, found in zip(timings, variants)}
    if 64 in best:
        name, record = best[64]
        if figures.get("fad_64_best_ms") is None or record["seconds"] * 1000 < figures["fad_64_best_ms"]:
            figures["fad_64_best_ms"] = record["seconds"] * 1000
            figures["fad_64_best_backend"] = f"cuda-fp16-{name} (compiled FP16 step)"
    largest = max(best) if best else None
    if largest is not None and largest >= (figures.get("throughput_frames") or 0):
        name, record = best[largest]
        if largest / record["seconds"] > (figures.get("throughput_frames_per_s") or 0):
            figures["throughput_frames"], figures["throughput_frames_per_s"] = largest, largest / record["seconds"]
            figures["throughput_backend"] = f"cuda-fp16-{name} (compiled FP16 step)"


def targets(figures: dict) -> list[dict]:
    """(name, measured, goal, whether it holds) for each of the GPU targets."""

    def row(name: str, value: float | None, goal: float, at_most: bool, unit: str) -> dict:
        holds = None if value is None else (value <= goal if at_most else value >= goal)
        return {"target": name, "measured": value, "goal": ("<= " if at_most else ">= ") + f"{goal:g} {unit}".strip(),
                "holds": holds}

    return [
        row("FAD paper preset, 64 frames, best CUDA backend", figures.get("fad_64_best_ms"), 2.0, True, "ms"),
        row("ListenerStream on CUDA, per 8-frame clip, p99", figures.get("stream_p99_ms"), 3.0, True, "ms"),
        row("FAD throughput at 4096 frames", figures.get("throughput_frames_per_s"), 100_000, False, "frames/s"),
        row("DECA-based frame by frame / FAD, 64 frames", figures.get("deca_over_fad_64"), 600, False, "x"),
        row("ReactFace-like online / FAD, 256 frames", figures.get("reactface_over_fad_256"), 101, False, "x"),
        # bench/gpu_train_profile.py (FAD_GPU_CHECK_PACE=1): the demo's pretraining and encoding as timed, and its
        # FAD steps at the pace measured at its batch
        row("the demo's small-preset training", figures.get("demo_training_s_at_measured_pace"), 60, True, "s"),
        row(f"paper sizes trained on the GPU ({figures.get('trained_preset') or 'paper'}): held-out L2 / Median",
            figures.get("l2_over_median"), 0.7, True, ""),
    ]


def summarize(folder: Path) -> dict:
    log_path = folder / "gpu_check.txt"
    log = log_path.read_text() if log_path.exists() else ""
    benches = [found for found in (read_json(folder / f"{name}.json") for name in ("gpu_bench", "gpu_bench_compiled"))
               if found]
    evaluation = read_json(folder / "gpu_eval.json")
    figures: dict = best_of([bench_figures(bench) for bench in benches])
    named = GPU_LINE.search(log)
    figures["gpu"] = figures.get("gpu") or (named[1].strip() if named else None)
    figures["paper_training"] = training_figures(step_lines(log, "paper-preset training"))
    trained = TRAINED_PRESET_LINE.search(log)
    figures["trained_preset"] = trained[1] if trained else None  # checks before it was logged trained `paper`
    small_calls = read_json(folder / "gpu_profile_small.json") or read_json(folder / "gpu_profile.json") or {}
    kept = ("wall_s", "kernel_s", "gpu_busy", "gpu_ops")
    figures["fad_fp16_small_calls"] = {frames: {key: record[key] for key in kept}
                                       for frames, record in small_calls.get("fad_fp16_small", {}).items()}
    compiled = read_json(folder / "gpu_compiled.json")
    if compiled and "fp16_compiled" in compiled:
        add_compiled(figures, compiled["fp16_compiled"]["timings"])
    pace = read_json(folder / "gpu_train_profile.json")
    if pace:
        figures["training_pace"] = {v["variant"]: v["steps_per_s"] for v in pace["variants"]}
        figures["demo_training_s_at_measured_pace"] = pace.get("demo_training_s_at_this_pace")
    if evaluation:
        rows = evaluation["rows"]
        figures["l2_fad"], figures["l2_median"] = rows["FAD"]["all"]["L2"], rows["Median"]["all"]["L2"]
        figures["l2_over_median"] = figures["l2_fad"] / figures["l2_median"]
    return {"figures": figures, "targets": targets(figures)}


def lines(summary: dict) -> list[str]:
    """The targets as stacked lines (they fit 80 columns whatever the numbers)."""
    out = [f"GPU: {summary['figures'].get('gpu') or 'unknown'}"]
    for target in summary["targets"]:
        value = "not measured" if target["measured"] is None else f"{target['measured']:.4g}"
        verdict = {True: "met", False: "NOT met", None: "-"}[target["holds"]]
        out += [target["target"], f"    measured {value}, goal {target['goal']}: {verdict}"]
    return out


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python bench/gpu_summary.py RESULTS_FOLDER (where gpu_check.sh wrote its results)")
    folder = Path(sys.argv[1])
    summary = summarize(folder)
    atomic_write_bytes(folder / "gpu_summary.json", json.dumps(summary, indent=2).encode())
    print("\n".join(lines(summary)))


if __name__ == "__main__":
    main()
