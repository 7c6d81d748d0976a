"""The pace of GPU training steps under the settings that could slow them, side by side in one run.

    PYTHONPATH=. python bench/gpu_train_profile.py --data DATA --out gpu_train_profile.json [--device cuda]

A training step on a GPU can wait on the loader's workers, on cuDNN's deterministic algorithms
(the default, for exact resumes), on format conversions around channels-last weights, or on
Python launching thousands of small kernels. Each variant below trains `--steps` steps from
scratch with `fad_edge.train.train` and records its pace after a warm-up (steps per second between
the warm-up's last step and the last step, which excludes the start, cuDNN's first-call planning and
the final validation) and the seconds it waited for the loader. The small-preset variants train at
the demo's batch (4 windows of 8 clips); the first runs the demo's pretraining too, so the demo's
training on this device (its pretraining, the frozen encoder's encoding, and 350 FAD steps at the
measured pace) is printed beside its 60 s target. The other small variants skip the prosody
pretraining and take one video-pretraining step, which is enough for the frozen encoder to apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from fad_edge.atomic import atomic_write_bytes
from fad_edge.cli.demo_command import DEMO_BATCH_SIZE, DEMO_CLIPS_PER_ITEM
from fad_edge.errors import FadEdgeError
from fad_edge.train import DatasetLoader, Datasets, SilentReporter, TrainConfig, load_datasets, train

DEMO_STEPS = 350  # the demo's FAD steps (`fad-edge demo --steps`)
WARMUP_STEPS = 10
DEMO_BATCH = {"preset": "small", "batch_size": DEMO_BATCH_SIZE, "clips_per_item": DEMO_CLIPS_PER_ITEM}
STEPS_ONLY = {"overrides": {"prosody_pretrain_steps": 0, "video_pretrain_steps": 1}}
# (name, TrainConfig changes): the small preset at the demo's batch, then the paper preset at the GPU check's.
VARIANTS: list[tuple[str, dict]] = [
    ("small, defaults", DEMO_BATCH),
    ("small, --no-deterministic", {**DEMO_BATCH, **STEPS_ONLY, "deterministic": False}),
    ("small, NCHW weights", {**DEMO_BATCH, **STEPS_ONLY, "channels_last": False}),
    ("small, no loader workers", {**DEMO_BATCH, **STEPS_ONLY, "workers": 0}),
    ("paper x32, defaults", {"preset": "paper", "batch_size": 32}),
    ("paper x32, --no-deterministic", {"preset": "paper", "batch_size": 32, "deterministic": False}),
]


class StepClock(SilentReporter):
    """A TrainReporter that keeps the time of each step (the loop syncs on the loss each step, so a step's time is
    when its GPU work ended)."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}

    def step(self, step: int, loss: float) -> None:
        self.times[step] = time.perf_counter()

    def pace(self) -> float:
        """Steps per second after the warm-up."""
        last = max(self.times)
        return (last - WARMUP_STEPS) / (self.times[last] - self.times[WARMUP_STEPS])


def load_each_split_once() -> DatasetLoader:
    """A dataset loader under which variants that read the same data at the same sizes share one load (the
    split's decoding and normalization take seconds at the check's 96 speakers; the windows are only read while
    training)."""
    loaded: dict[tuple, Datasets] = {}

    def cached(config: TrainConfig) -> Datasets:
        key = (config.data, config.preset, config.stride, config.clips_per_item, config.context_clips,
               config.modalities, tuple(sorted(config.overrides.items())))
        if key not in loaded:
            loaded[key] = load_datasets(config)
        return loaded[key]

    return cached


def measure(name: str, changes: dict, data: Path, device: str, steps: int, scratch: Path,
            datasets: DatasetLoader) -> dict:
    config = dataclasses.replace(
        TrainConfig(data=str(data), out=str(scratch / name.replace(" ", "_").replace(",", "")), device=device,
                    epochs=1000, max_steps=steps, checkpoint_every=10**6),
        **changes)
    clock = StepClock()
    started = time.perf_counter()
    result = train(config, clock, datasets=datasets)
    return {"variant": name, "changes": changes, "steps": result.steps, "steps_per_s": clock.pace(),
            "windows_per_s": clock.pace() * config.batch_size, "data_wait_s": result.data_wait_seconds,
            "before_steps_s": result.seconds - result.parts_seconds()["fad_steps"], "train_s": result.seconds,
            "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--variants", default=None, help="comma-separated indices into VARIANTS (default: all)")
    parser.add_argument("--plumbing", action="store_true", help="every variant on the tiny preset, 4 windows a step "
                        "(checks the script on a CPU; no figure to quote)")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must exceed the {WARMUP_STEPS}-step warm-up")
    chosen = VARIANTS if args.variants is None else [VARIANTS[int(i)] for i in args.variants.split(",")]
    datasets = load_each_split_once()
    summary: dict = {"device": args.device, "steps": args.steps, "warmup_steps": WARMUP_STEPS, "variants": []}
    with tempfile.TemporaryDirectory(prefix="fad-train-profile-") as scratch:
        for name, changes in chosen:
            if args.plumbing:
                changes = {**changes, "preset": "tiny", "batch_size": 4}
            record = measure(name, changes, args.data, args.device, args.steps, Path(scratch), datasets)
            summary["variants"].append(record)
            print(f"{name}: {record['steps_per_s']:.2f} steps/s ({record['windows_per_s']:.0f} windows/s), "
                  f"waited {record['data_wait_s']:.1f} s for data", flush=True)
            if name == "small, defaults":
                summary["demo_training_s_at_this_pace"] = record["before_steps_s"] + DEMO_STEPS / record["steps_per_s"]
                print(f"the demo's training at the default pace: {record['before_steps_s']:.0f} s of pretraining "
                      f"and encoding, then {DEMO_STEPS} steps: {summary['demo_training_s_at_this_pace']:.0f} s "
                      "(target 60 s)", flush=True)
            # after each variant: a time limit that stops the script keeps what it measured
            atomic_write_bytes(args.out, json.dumps(summary, indent=2).encode())


if __name__ == "__main__":
    try:
        main()
    except FadEdgeError as error:  # no GPU, bad data: one line, as the CLI says it
        raise SystemExit(f"error: {error}") from None
