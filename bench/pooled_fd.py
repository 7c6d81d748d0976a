"""Where a model's pooled FD comes from: the distance of the means, or the covariances'.

The pooled FD (`fad-edge evaluate`'s last table) compares all the split's predicted frames with all its
real ones. Its two terms say different things: the means' distance is a bias, the covariance term is
motion whose spread or shape differs from the listeners'. The script splits it, next to each side's
total variance (the covariance's trace), for the `mean` sampler, the `diverse` one, the `diverse`
one at other temperatures, and plain DDPM of several steps from pure noise at the last timestep (t = 99;
does sampling the model's own distribution more closely bring the pooled FD down?), seed 0.

    PYTHONPATH=. python bench/pooled_fd.py --checkpoint demo_out/run/best --data demo_out/data \
        [--split test] [--temperatures 1.8,2.4] [--steps 5,10,25,100] [--out pooled_fd.json]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from scipy import linalg

from fad_edge.atomic import atomic_write_bytes
from fad_edge.checkpoint import load_checkpoint
from fad_edge.evaluation import draw_settings, encoded_split, sampler_settings
from fad_edge.json_report import json_report_bytes
from fad_edge.metrics import GROUPS
from fad_edge.sampling import SamplerSettings


def fd_terms(predicted: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """The Frechet distance's two terms over frames (T, D), and each side's total variance."""
    means = float(np.sum((predicted.mean(0) - real.mean(0)) ** 2))
    cov_p, cov_r = np.cov(predicted, rowvar=False), np.cov(real, rowvar=False)
    root = np.real(linalg.sqrtm(cov_p @ cov_r))
    covariances = float(np.trace(cov_p) + np.trace(cov_r) - 2 * np.trace(root))
    return {"pooled FD": means + covariances, "means": means, "covariances": covariances,
            "variance predicted": float(np.trace(cov_p)), "variance real": float(np.trace(cov_r))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--temperatures", default="1.8,2.4", help="Other temperatures of the diverse sampler.")
    parser.add_argument("--steps", default="5,10,25,100", help="Step counts of plain DDPM from noise at t = 99.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    runner, encoded, truths = encoded_split(loaded, args.data, args.split)
    real = np.concatenate(truths)
    variants = [(name, sampler_settings(loaded.config, name)) for name in ("mean", "diverse")]
    variants += [("diverse", dataclasses.replace(variants[1][1], temperature=float(t)))
                 for t in args.temperatures.split(",") if t]
    variants += [("ddpm", SamplerSettings(steps=int(n), start_step=loaded.config.train_steps - 1, start_noise=1.0,
                                          clip_sample=loaded.config.clip_sample))
                 for n in args.steps.split(",") if n]
    rows = []
    for sampler, settings in variants:
        predicted = np.concatenate(draw_settings(runner, encoded, settings, 1)[0])
        for group, columns in GROUPS.items():
            terms = fd_terms(predicted[:, columns], real[:, columns])
            l2 = float(np.linalg.norm(predicted[:, columns] - real[:, columns], axis=1).mean())
            rows.append({"sampler": sampler, "settings": dataclasses.asdict(settings),
                         "temperature": settings.temperature, "group": group, "L2": l2, **terms})
            print(f"{sampler} ({settings.describe()}), {group}: pooled FD {terms['pooled FD']:.3g} "
                  f"= means {terms['means']:.3g} + covariances {terms['covariances']:.3g}; total variance "
                  f"{terms['variance predicted']:.3g} against the real {terms['variance real']:.3g}; L2 {l2:.3g}")
    if args.out:
        atomic_write_bytes(args.out, json_report_bytes({"checkpoint": str(args.checkpoint), "split": args.split,
                                                        "rows": rows}))


if __name__ == "__main__":
    main()
