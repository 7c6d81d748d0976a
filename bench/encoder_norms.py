"""What folding the encoders' norms buys INT8: encoder_norm group vs batch, torch eager vs ORT FP32 vs ORT INT8.

    PYTHONPATH=. python bench/encoder_norms.py --preset small --frames 64 --runs 10 --rounds 2

Each variant is a random-weight model (cost only) exported with INT8 as `fad-edge bench` exports
one (`--work DIR` keeps the exports and reuses them). Every timed run calls each (norm, backend)
pair once, one after the other, so on a shared machine a change of load hits them all alike; a
round reports the median of `--runs` such runs after warm-up. Prints one table per round and
writes OUT.json."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from fad_edge.artifact import ExportManifest
from fad_edge.atomic import atomic_write_bytes
from fad_edge.bench.run import export_for_bench, speaker_inputs
from fad_edge.bench.timing import machine
from fad_edge.listener_model import ListenerModel
from fad_edge.models.config import ENCODER_NORMS
from fad_edge.models.presets import preset
from fad_edge.report_paths import report_path
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.select import open_runner
from fad_edge.runtime.torch_runner import TorchRunner

BACKENDS = ("torch", "ort-fp32", "ort-int8")


def open_variant(name: str, norm: str, folder: Path, threads: int) -> tuple[dict[str, ClipRunner], str]:
    """The three runners of one random-weight model, and where its INT8 set runs ELNet (int8 or fp32)."""
    torch.manual_seed(0)
    model = ListenerModel(preset(name, encoder_norm=norm)).eval()
    exported = folder / norm / "model"
    if not (exported / "manifest.json").exists():
        exported = export_for_bench(model, folder / norm, print)
    int8_report = ExportManifest.load(exported).reports["int8"]
    elnet = str(int8_report["elnet"]) if isinstance(int8_report, dict) else "?"
    runners = {"torch": TorchRunner(model),
               "ort-fp32": open_runner(exported, "ort", "fp32", threads=threads),
               "ort-int8": open_runner(exported, "ort", "int8", threads=threads)}
    return runners, elnet


def interleaved_medians(calls: dict[str, Callable[[], object]], runs: int, warmup: int = 3) -> dict[str, float]:
    """Median wall time (ms) of each call, the calls taking turns within every run."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(runs):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    return {key: 1e3 * float(np.median(values)) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="writes OUT.json (default: print only)")
    parser.add_argument("--work", type=Path, default=None, help="keeps the exports here and reuses them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"machine": machine(), "preset": args.preset, "frames": args.frames, "runs": args.runs,
                     "threads": args.threads, "elnet_in_int8_set": {}, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="fad-norms-") as scratch:
        work = args.work or Path(scratch)
        variants = {}
        for norm in ENCODER_NORMS:
            variants[norm], results["elnet_in_int8_set"][norm] = open_variant(args.preset, norm, work, args.threads)
        inputs = speaker_inputs(variants["group"]["torch"].config, args.frames)
        calls: dict[str, Callable[[], object]] = {f"{norm} {backend}": partial(runner.run_inputs, inputs)
                                                   for norm, runners in variants.items()
                                                   for backend, runner in runners.items()}
        for round_index in range(args.rounds):
            medians = interleaved_medians(calls, args.runs)
            results["rounds"].append(medians)
            print(f"\nround {round_index + 1}: {args.preset} preset, {args.frames} frames, {args.threads} threads, "
                  f"median of {args.runs} (ms)")
            print(f"{'norm':<6} {'torch':>8} {'ort-fp32':>9} {'ort-int8':>9}   int8 speed-up: vs torch, vs fp32")
            for norm in variants:
                row = {backend: medians[f"{norm} {backend}"] for backend in BACKENDS}
                print(f"{norm:<6} {row['torch']:8.1f} {row['ort-fp32']:9.1f} {row['ort-int8']:9.1f} "
                      f"{'':17}{row['torch'] / row['ort-int8']:5.2f}x {row['ort-fp32'] / row['ort-int8']:8.2f}x")
        for runners in variants.values():
            for runner in runners.values():
                runner.close()
    print(f"\nELNet in the INT8 set: {results['elnet_in_int8_set']}")
    if args.out is not None:
        atomic_write_bytes(report_path(args.out, ".json"), json.dumps(results, indent=2).encode())


if __name__ == "__main__":
    main()
