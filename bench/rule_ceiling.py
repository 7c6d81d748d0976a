"""How low can held-out L2 go for a model that knows some of the synthetic listener's rules exactly?

    PYTHONPATH=. python bench/rule_ceiling.py --data DATA --out ceiling.json

Each "oracle" predicts the Median baseline's frame (the per-dim median of the train split's
listeners) plus the true component of the rules it is given, recomputed from each test session's
seed, and is scored by the evaluation's L2 (mean per-frame norm over all 56 dims, FLAME units):
- audible rules (brow raise, nod): the best an audio-only model can do, whatever it learns;
- visible rules (smile mirroring, head follow);
- all four: what is left is the listener's idle drift, blinks and noise, which nothing predicts.

It also gives, for the nod and brow pulses, the best Pearson r a deterministic model can reach when
each listener's reaction lag is drawn anew (`SyntheticConfig.lag_jitter`): the r of the pulse
averaged over the lags against the pulse at each lag.
Synthetic datasets only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fad_edge.atomic import atomic_write_bytes
from fad_edge.constants import EXPRESSION, HEAD
from fad_edge.data import synthetic
from fad_edge.data.layout import list_sessions
from fad_edge.data.synthetic_dataset import read_session_record

ORACLES = {"Median": (), "audible (brow, nod)": ("brow", "nod"), "visible (smile, head)": ("smile", "head"),
           "all four rules": ("brow", "nod", "smile", "head")}


def listener(folder: Path) -> np.ndarray:
    return np.load(folder / "listener_coeffs.npy").astype(np.float64)


def oracle(median: np.ndarray, components: dict[str, np.ndarray], rules: tuple[str, ...]) -> np.ndarray:
    """The median frame plus the named rules' true components, placed where the generator puts them."""
    frames = len(next(iter(components.values())))
    motion = np.tile(median, (frames, 1))
    factors = dict(zip(synthetic.LISTENER_FACTORS, synthetic.listener_basis().T))
    for rule in rules:
        if rule in ("brow", "smile"):
            motion[:, EXPRESSION] += np.outer(components[rule], factors[rule])
        else:  # the nod moves the head's pitch, head follow its yaw
            motion[:, HEAD.start + (rule == "head")] += components[rule]
    return motion


def lag_jitter_r(shape: np.ndarray, jitter: int, length: int = 200) -> float:
    """Pearson r of the lag-averaged pulse against the pulse at each lag in -jitter..jitter, pooled."""
    pulses = [synthetic._pulse(length, [length // 4 + lag], shape) for lag in range(-jitter, jitter + 1)]
    mean = np.mean(pulses, axis=0)
    return float(np.corrcoef(np.concatenate(pulses), np.tile(mean, len(pulses)))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    median = np.median(np.concatenate([listener(f) for f in list_sessions(args.data, "train")]), axis=0)
    errors: dict[str, list[np.ndarray]] = {name: [] for name in ORACLES}
    config = synthetic.SyntheticConfig()
    for folder in list_sessions(args.data, args.split):
        seed, config = read_session_record(folder)
        truth = listener(folder)
        components = {rule: c[: len(truth)] for rule, c in synthetic.listener_rule_components(seed, config).items()}
        for name, rules in ORACLES.items():
            errors[name].append(np.linalg.norm(truth - oracle(median, components, rules), axis=1))
    l2 = {name: float(np.concatenate(e).mean()) for name, e in errors.items()}
    result = {"data": str(args.data.name), "split": args.split,
              "l2": l2, "ratio_to_median": {name: value / l2["Median"] for name, value in l2.items()},
              "lag_jitter": config.lag_jitter,
              "best_r_with_lag_jitter": {"nod": lag_jitter_r(synthetic.NOD_SHAPE, config.lag_jitter),
                                         "brow": lag_jitter_r(synthetic.BROW_SHAPE, config.lag_jitter)}}
    for name, ratio in result["ratio_to_median"].items():
        print(f"{name:24s} L2 {l2[name]:.4f}  {ratio:.3f}x Median")
    for rule, r in result["best_r_with_lag_jitter"].items():
        print(f"{rule}: best r of a deterministic model with lags jittered by +-{config.lag_jitter}: {r:.2f}")
    if args.out:
        atomic_write_bytes(args.out, json.dumps(result, indent=2).encode())


if __name__ == "__main__":
    main()
