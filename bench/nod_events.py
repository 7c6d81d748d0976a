"""Where a model's nod goes wrong: missed, false, mistimed or misshapen?

`fad-edge rules` gives one r for the nod over every frame. This looks at the phrase ends themselves:
for each pause of the test split, the model's session-centred head pitch from 4 frames before the
pause to 30 after (the nod pulse starts its lag, 8 +- 2 frames, after the pause) is projected on the
true nod's pause-locked mean shape.

- `amplitude`: the mean projection after falling phrase ends over the true nod's (1: full size);
- `detected`: the share of falling ends whose projection is over half the mean one;
- `false`: the share of rising ends (no nod) whose projection is over half the falling ends' mean;
- `shape_r`: Pearson r of the model's and the true nod's pause-locked mean shapes, and
  `best_shift`, the shift in frames of the model's that fits the true one best (+: the model is late);
- `placed_r`: the r that placing the true mean shape at every falling pause would score, frame by
  frame as `fad-edge rules` does: about the best a deterministic model can do with each listener's
  lag jitter unknown.

    PYTHONPATH=. python bench/nod_events.py --model RUN/best --data DATA [--split test] [--out events.json]

Synthetic data only; the model is run as `fad-edge generate` runs it (torch, `mean` sampler).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fad_edge.cli.model_commands import _open_runner_on
from fad_edge.data.layout import list_sessions
from fad_edge.data.synthetic import ListenerRules, listener_basis
from fad_edge.rule_diagnostic import pearson, predicted_rule_signals, reproduced_rules
from fad_edge.samples import split_samples

BEFORE, AFTER = 4, 30  # frames around each pause's first frame
SHIFTS = range(-4, 5)


def pause_windows(signal: np.ndarray, pauses: list[tuple[int, bool]], rising: bool) -> np.ndarray:
    """(events, BEFORE + AFTER) stretches of `signal` around the pauses of the given kind that fit in it."""
    starts = [frame - BEFORE for frame, up in pauses if up == rising and frame - BEFORE >= 0
              and frame + AFTER <= len(signal)]
    return np.array([signal[start : start + BEFORE + AFTER] for start in starts]).reshape(-1, BEFORE + AFTER)


def placed(length: int, pauses: list[tuple[int, bool]], shape: np.ndarray) -> np.ndarray:
    """`shape` added at every falling pause, centred over the session as the rule diagnostic centres the nod."""
    out = np.zeros(length)
    for frame, rising in pauses:
        if not rising:
            start = frame - BEFORE
            lo, hi = max(0, start), min(length, start + len(shape))
            out[lo:hi] += shape[lo - start : hi - start]
    return out - out.mean()


def nod_events(predictions: list[np.ndarray], rules: list[ListenerRules]) -> dict:
    """The figures of the module docstring; predictions[i] (T_i, 56) is the motion for rules[i]'s session."""
    basis = listener_basis()
    pitch = [predicted_rule_signals(motion, basis)["nod"] for motion in predictions]
    nods = [rule.components["nod"][: len(p)] for rule, p in zip(rules, pitch)]
    nods = [nod - nod.mean() for nod in nods]
    falling = np.concatenate([pause_windows(p, r.pauses, False) for p, r in zip(pitch, rules)])
    rising = np.concatenate([pause_windows(p, r.pauses, True) for p, r in zip(pitch, rules)])
    truth = np.concatenate([pause_windows(n, r.pauses, False) for n, r in zip(nods, rules)])
    true_shape = truth.mean(axis=0)
    unit = true_shape / np.linalg.norm(true_shape)
    on_falling, on_rising, on_truth = falling @ unit, rising @ unit, truth @ unit
    model_shape = falling.mean(axis=0)
    inner = slice(max(SHIFTS), len(unit) - max(SHIFTS))
    by_shift = {shift: pearson(np.roll(model_shape, -shift)[inner], true_shape[inner]) for shift in SHIFTS}
    placed_all = np.concatenate([placed(len(p), r.pauses, true_shape) for p, r in zip(pitch, rules)])
    return {
        "falling_ends": len(falling), "rising_ends": len(rising),
        "nod_r": pearson(np.concatenate(pitch), np.concatenate(nods)),
        "amplitude": float(on_falling.mean() / on_truth.mean()),
        "detected": float((on_falling > 0.5 * on_falling.mean()).mean()),
        "false": float((on_rising > 0.5 * on_falling.mean()).mean()),
        "shape_r": pearson(model_shape, true_shape),
        "best_shift": max(by_shift, key=lambda shift: by_shift[shift]),
        "placed_r": pearson(placed_all, np.concatenate(nods)),
        "true_shape": [round(float(v), 4) for v in true_shape],
        "model_shape": [round(float(v), 4) for v in model_shape],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folders = {folder.name: folder for folder in list_sessions(args.data, args.split)}
    with _open_runner_on(args.model, "torch", None, None, 0, 2, "cpu") as runner:
        samples = split_samples(runner.config, args.data, args.split)
        predictions = [runner.run_inputs(sample.inputs) for sample in samples]
    # Refuses a session the generator does not reproduce (written by another version), as `fad-edge rules` does.
    rules = [reproduced_rules(folders[sample.name], sample) for sample in samples]
    result = {"model": "/".join(args.model.parts[-2:]), "data": args.data.name, "split": args.split,
              **nod_events(predictions, rules)}
    print(json.dumps({key: value for key, value in result.items() if not key.endswith("_shape")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
