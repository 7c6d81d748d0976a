"""ONNX Runtime's session options for the CPU runner, timed side by side: the numbers behind `SessionTuning`.

    python -m fad_edge.bench.ort_options EXPORT_FOLDER [--precision int8] [--rounds 15] [--out FILE.json]
    python -m fad_edge.bench.ort_options EXPORT_FOLDER --io-binding   # session.run against IO binding

Every variant's runner lives in this one process and the calls are interleaved in a new random order
each round, so that a machine whose load comes and goes (cores shared with other work) weighs on
every variant alike; variants in separate processes, timed one after another, were not comparable
on such a machine. Each call is timed alone: `gap` seconds of sleep follow it, in which its
spinning threads stop (seen busy for up to 200 ms after a call on a loaded machine, hence 0.3 s),
as they may between a stream's clips, 267 ms apart. The CPU time this process spends in that gap
is reported as "idle CPU": what spinning threads take from the rest of the machine. Runners with
a pool per session are opened first: ONNX Runtime refuses those once the process-wide pool
exists, but keeps running the ones already open.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fad_edge.atomic import atomic_write_bytes
from fad_edge.bench.profile import random_inputs
from fad_edge.bench.tables import figure_table, number, number_column, text_column
from fad_edge.json_report import json_report_bytes
from fad_edge.runtime.base import clip_condition_windows
from fad_edge.runtime.ort_runner import OrtRunner, SessionTuning

WINDOW, CLIP = 64, 8  # frames per call: a 64-frame window (one encoder call, 8 clips), and one streamed clip


@dataclass(frozen=True)
class Variant:
    name: str
    tuning: SessionTuning
    threads: int = 2
    note: str = ""


VARIANTS = (
    Variant("default", SessionTuning(), note="a pool per session, no spinning, ELNet on one thread"),
    Variant("spin", SessionTuning(spinning=True), note="a pool per session, spinning"),
    Variant("spin-stop", SessionTuning(spinning=True, stop_spinning=True),
            note="spinning, stopped when each run returns"),
    Variant("shared", SessionTuning(shared_pool=True), note="one process-wide pool; allow_spinning=0"),
    Variant("shared-spin", SessionTuning(shared_pool=True, spinning=True),
            note="one process-wide pool; allow_spinning=1"),
    Variant("no-arena", SessionTuning(memory_arena=False), note="default, without the CPU memory arena"),
    Variant("no-pattern", SessionTuning(memory_pattern=False), note="default, without memory patterns"),
    Variant("1-thread", SessionTuning(), threads=1, note="default, 1 intra-op thread"),
    Variant("elnet-all-threads", SessionTuning(elnet_threads=None), note="default, but ELNet on every thread too"),
)


def compare(folder: Path, precision: str, rounds: int, gap: float, names: list[str] | None = None) -> dict:
    """Median, p90 and CPU ms per call of each variant, for a 64-frame window and for one clip."""
    chosen = [v for v in VARIANTS if names is None or v.name in names]
    runners = {v.name: OrtRunner(folder, precision, threads=v.threads, tuning=v.tuning)
               for v in sorted(chosen, key=lambda v: v.tuning.shared_pool)}
    config = next(iter(runners.values())).config
    shuffle = np.random.default_rng(0)
    results: dict[str, dict] = {name: {} for name in runners}
    for frames in (WINDOW, CLIP):
        inputs = random_inputs(config, frames)
        for runner in runners.values():
            runner.run_inputs(inputs)  # warm-up: the first run plans memory and packs weights
        wall: dict[str, list[float]] = {name: [] for name in runners}
        cpu: dict[str, list[float]] = {name: [] for name in runners}
        idle: dict[str, list[float]] = {name: [] for name in runners}
        order = list(runners)
        for _ in range(rounds):
            shuffle.shuffle(order)
            for name in order:
                started, cpu_started = time.perf_counter(), time.process_time()
                runners[name].run_inputs(inputs)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)
                cpu_started = time.process_time()
                time.sleep(gap)
                idle[name].append(time.process_time() - cpu_started)
        for name in runners:
            results[name][str(frames)] = {
                "median_ms": 1000 * float(np.median(wall[name])),
                "p90_ms": 1000 * float(np.percentile(wall[name], 90)),
                "cpu_ms": 1000 * float(np.median(cpu[name])),
                "idle_cpu_ms": 1000 * float(np.median(idle[name])),
            }
    for runner in runners.values():
        runner.close()
    return {"export": str(folder), "precision": precision, "preset": config.preset, "rounds": rounds, "gap_s": gap,
            "variants": [{**asdict(v), "results": results[v.name]} for v in chosen]}


def binding_gain(folder: Path, precision: str, rounds: int) -> dict:
    """Median microseconds of each graph's call through `session.run` and through IO binding, at both frame counts.

    IO binding hands ONNX Runtime the input arrays and a pre-allocated output array, so the output
    is written in place instead of copied into a new NumPy array (inputs are not copied either way
    on the CPU). The two are timed in turns, call by call.
    """
    runner = OrtRunner(folder, precision)
    config, rng = runner.config, np.random.default_rng(0)
    result: dict[str, dict] = {}
    for frames in (WINDOW, CLIP):
        inputs = random_inputs(config, frames)
        features = runner.encode_batch(inputs.images, inputs.mel)
        feeds = {"video": {"images": inputs.images}, "audio": {"mel": inputs.mel},
                 "elnet": {"x_start": rng.standard_normal((frames // CLIP, CLIP, config.n_coeffs), dtype=np.float32),
                           "condition": clip_condition_windows(features, CLIP, config.context_clips)}}
        for name, feed in feeds.items():
            session = getattr(runner, name)
            expected = session.run(None, feed)[0]
            output = np.empty_like(expected)
            binding = session.io_binding()
            for key, value in feed.items():
                binding.bind_cpu_input(key, value)
            binding.bind_output(session.get_outputs()[0].name, "cpu", 0, np.float32, list(output.shape),
                                output.ctypes.data)

            def bound(binding=binding, session=session) -> None:
                session.run_with_iobinding(binding)

            def plain(feed=feed, session=session) -> None:
                session.run(None, feed)

            times: dict[str, list[float]] = {"run": [], "io_binding": []}
            for _ in range(rounds):
                for key, call in (("run", plain), ("io_binding", bound)):
                    started = time.perf_counter()
                    call()
                    times[key].append(time.perf_counter() - started)
            np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)
            result[f"{name} {frames}"] = {key: 1e6 * float(np.median(values)) for key, values in times.items()}
            result[f"{name} {frames}"]["output_bytes"] = expected.nbytes
    runner.close()
    return {"export": str(folder), "precision": precision, "preset": config.preset, "rounds": rounds,
            "median_us": result}


def binding_table(result: dict) -> Table:
    figures = figure_table()
    text_column(figures, "graph, frames", min_width=13)
    for header in ("output\nbytes", "run\nus", "binding\nus", "saved\nus", "saved\n%"):
        number_column(figures, header)
    for key, row in result["median_us"].items():
        saved = row["run"] - row["io_binding"]
        figures.add_row(key, f"{row['output_bytes']:,}", number(row["run"]), number(row["io_binding"]),
                        number(saved), f"{100 * saved / row['run']:.1f}")
    return figures


def table(result: dict) -> Table:
    figures = figure_table()
    text_column(figures, "variant", min_width=11)
    headers = ("64 fr.\nms", "x def.", "p90\nms", "1 clip\nms", "x def.", "p90\nms", "clip\nCPU ms", "idle\nCPU ms")
    for header in headers:
        number_column(figures, header)
    reference = next((v for v in result["variants"] if v["name"] == "default"), result["variants"][0])
    base = {frames: reference["results"][frames]["median_ms"] for frames in (str(WINDOW), str(CLIP))}
    for variant in result["variants"]:
        window, clip = variant["results"][str(WINDOW)], variant["results"][str(CLIP)]
        figures.add_row(variant["name"], number(window["median_ms"]), f"{window['median_ms'] / base[str(WINDOW)]:.2f}",
                        number(window["p90_ms"]), number(clip["median_ms"], 2),
                        f"{clip['median_ms'] / base[str(CLIP)]:.2f}", number(clip["p90_ms"], 2),
                        number(clip["cpu_ms"], 2), number(clip["idle_cpu_ms"], 2))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fad_edge.bench.ort_options", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="an export folder")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--rounds", type=int, default=15, help="timed calls per variant and frame count")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds of sleep after each call")
    parser.add_argument("--variants", help=f"comma-separated, from: {', '.join(v.name for v in VARIANTS)}")
    parser.add_argument("--io-binding", action="store_true", help="time session.run against IO binding instead")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    console = Console()
    if args.io_binding:
        result = binding_gain(args.folder, args.precision, args.rounds)
        console.print(f"session.run against IO binding: {result['preset']} preset, {args.precision}, median of "
                      f"{args.rounds} calls each", highlight=False)
        console.print(binding_table(result))
        if args.out:
            atomic_write_bytes(args.out, json_report_bytes(result))
        return
    names = args.variants.split(",") if args.variants else None
    result = compare(args.folder, args.precision, args.rounds, args.gap, names)
    console.print(f"ONNX Runtime session options: {result['preset']} preset, {args.precision}, "
                  f"{args.rounds} calls each", highlight=False)
    console.print(table(result))
    for variant in result["variants"]:
        console.print(f"  {variant['name']}: {variant['note']}", highlight=False)
    if args.out:
        atomic_write_bytes(args.out, json_report_bytes(result))


if __name__ == "__main__":
    main()
