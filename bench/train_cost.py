"""Training time of the demo's settings against others, measured side by side in one process.

Each setting trains the `small` preset for --steps FAD steps from scratch (without the prosody
pretraining and with one step of the video pretraining: both cost the same for every setting, and
one step is enough for the preset's frozen video encoder to apply), alternating settings, --repeats times, with
bf16 autocast where the CPU has it ("auto") and in fp32 ("off"). Prints seconds per setting and the
ratio to the demo's; timings of separate runs on a shared machine are not comparable. The cheaper
video encoders are candidates, measured for cost here and for accuracy in `bench/results/seed_study.md`.
The demo's setting encodes the frozen video encoder's features of every training frame once, a cost
that does not grow with the steps: compare it with encoding each step at the demo's 350 steps.

    PYTHONPATH=. python bench/train_cost.py --data DATA --out DIR [--steps 40] [--repeats 2] \
        [--autocast auto,off] [--only demo,each step] [--json cost.json]

As a CPU without AVX-512 would run it: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ... --autocast off
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path

import torch

from fad_edge.cli.demo_command import DEMO_BATCH_SIZE, DEMO_CLIPS_PER_ITEM
from fad_edge.train import TrainConfig, train

# The settings compared: TrainConfig fields, and model overrides of the small preset.
SETTINGS: dict[str, tuple[dict, dict]] = {
    "the demo's (4 windows of 8 clips, 4 context clips, rotation head)": (
        {"batch_size": DEMO_BATCH_SIZE, "clips_per_item": DEMO_CLIPS_PER_ITEM}, {}),
    "4 context clips, rotation head, 8 windows of 4 clips": ({"batch_size": 8, "clips_per_item": 4}, {}),
    "before: 2 context clips, no rotation head, 8 windows of 4 clips": (
        {"batch_size": 8, "clips_per_item": 4},
        {"context_clips": 2, "rotation_head_channels": 0, "loss_dim_weighting": "group_variance"}),
    "stem max-pool in the video encoder (last map 2x2)": (
        {"batch_size": DEMO_BATCH_SIZE, "clips_per_item": DEMO_CLIPS_PER_ITEM}, {"stem_pool": True}),
    "video widths 16, 24, 48, 96": (
        {"batch_size": DEMO_BATCH_SIZE, "clips_per_item": DEMO_CLIPS_PER_ITEM}, {"video_widths": (16, 24, 48, 96)}),
    "the video encoder trained on through FAD's steps (before freeze_pretrained_video)": (
        {"batch_size": DEMO_BATCH_SIZE, "clips_per_item": DEMO_CLIPS_PER_ITEM}, {"freeze_pretrained_video": False}),
    "the frozen encoder's frames encoded each step (before frozen_video_once)": (
        {"batch_size": DEMO_BATCH_SIZE, "clips_per_item": DEMO_CLIPS_PER_ITEM, "frozen_video_once": False}, {}),
}
NO_PRETRAINING = {"prosody_pretrain_steps": 0, "video_pretrain_steps": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="scratch folder for the runs (replaced)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--autocast", default="auto,off", help="comma-separated training arithmetic modes")
    parser.add_argument("--only", help="comma-separated words; the settings whose names hold one of them "
                        "(the demo's is always run: ratios are to it)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    demo = next(iter(SETTINGS))
    words = args.only.split(",") if args.only else None
    chosen = {name: setting for name, setting in SETTINGS.items()
              if words is None or name == demo or any(word in name for word in words)}
    seconds: dict[str, dict[str, list[float]]] = {}
    for autocast in args.autocast.split(","):
        for _ in range(args.repeats):
            for name, (training, overrides) in chosen.items():
                shutil.rmtree(args.out, ignore_errors=True)
                config = TrainConfig(data=str(args.data), out=str(args.out), preset="small", epochs=args.steps,
                                     max_steps=args.steps, seed=0, autocast=autocast,
                                     overrides={**NO_PRETRAINING, **overrides}, **training)
                seconds.setdefault(autocast, {}).setdefault(name, []).append(train(config).seconds)
    shutil.rmtree(args.out, ignore_errors=True)
    for autocast, runs in seconds.items():
        print(f"autocast {autocast}, {args.steps} steps, median of {args.repeats}:")
        for name, values in runs.items():
            ratio = statistics.median(values) / statistics.median(runs[demo])
            print(f"  {statistics.median(values):6.1f} s  {ratio:.2f}x  {name}")
    if args.json:
        # What the kernels were held to, since the emulated CPU is not the one the file was written on.
        isa = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}
        args.json.write_text(json.dumps({"steps": args.steps, **isa, "seconds": seconds}, indent=2) + "\n")


if __name__ == "__main__":
    main()
