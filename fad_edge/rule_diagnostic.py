"""`fad-edge rules`: how well a model reproduces each predictable rule of the synthetic listener.

L2 and FD pool all 56 dims, where the visible rules (smile mirroring, head follow) outweigh the
audible ones (a nod after a falling phrase end, a brow raise after a rising one). This scores each
rule on its own, against the true component the generator added to the session's listener (see
`fad_edge.data.synthetic.listener_rules`), from the model's motion:

    nod    predicted head pitch minus its session mean (against the nod pulses minus theirs)
    head   predicted head yaw
    smile, brow   the factor's coefficient when the predicted expression is projected on the
                  listener's expression basis by least squares (all five factors at once)

`r` is Pearson's r between that signal and the true component over every frame of every session,
concatenated. `amplitude` is the std of the predicted signal over the std of the true component:
for the pulse rules (nod, brow) on the frames where the component is active only, so that the long
quiet stretches between pulses do not hide an under-predicted amplitude. `data_r` is the r of the
dataset's own listener, whose idle drift and noise no model can predict: a model that learned a rule
perfectly (the rule's component, nothing else) scores r = 1, above its `data_r`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fad_edge.constants import EXPRESSION, HEAD, N_COEFFS
from fad_edge.data.layout import list_sessions
from fad_edge.data.synthetic import LISTENER_FACTORS, RULES, ListenerRules, listener_basis, listener_rules
from fad_edge.data.synthetic_dataset import read_session_record
from fad_edge.errors import DataError
from fad_edge.runtime.base import ClipRunner
from fad_edge.samples import LabelledInputs, split_samples

PULSE_RULES = ("nod", "brow")
# Rules scored on each session's deviations from its mean: the predicted pitch also holds the listener's
# resting pose, which the nod rule does not set, so both sides are centred per session.
CENTRED_RULES = ("nod",)
# A pulse rule's component is "active" where it is further than this from zero (its quiet frames are exactly 0).
ACTIVE_EPSILON = 1e-9
# How far the listener recomputed from a session's seed may be from its listener_coeffs.npy (float32 rounding).
REPRODUCED_TOLERANCE = 1e-5


@dataclass
class RuleScore:
    rule: str
    r: float  # Pearson r of the predicted rule signal against the true component, NaN where either is constant
    amplitude: float  # std ratio predicted / true (on active frames for the pulse rules), NaN where undefined
    frames: int  # frames the r is computed over
    active_frames: int  # frames the amplitude is computed over
    data_r: float = math.nan  # the same r of the dataset's own listener, idle drift and noise included


@dataclass
class RuleReport:
    split: str
    sessions: list[str]
    rules: dict[str, RuleScore]
    per_session_r: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: NaN becomes null."""
        def clean(value: object) -> object:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {key: clean(item) for key, item in value.items()}
            if isinstance(value, list):
                return [clean(item) for item in value]
            return value

        return {"split": self.split, "sessions": self.sessions,
                "rules": {name: clean(asdict(score)) for name, score in self.rules.items()},
                "per_session_r": clean(self.per_session_r)}


def predicted_rule_signals(motion: np.ndarray, basis: np.ndarray) -> dict[str, np.ndarray]:
    """(T, 56) motion -> each rule's predicted signal (T,), read as the module docstring says."""
    factors = np.linalg.lstsq(basis, motion[:, EXPRESSION].T.astype(np.float64), rcond=None)[0].T  # (T, 5)
    pitch = motion[:, HEAD.start].astype(np.float64)
    return {
        "nod": pitch - pitch.mean(),
        "brow": factors[:, LISTENER_FACTORS.index("brow")],
        "smile": factors[:, LISTENER_FACTORS.index("smile")],
        "head": motion[:, HEAD.start + 1].astype(np.float64),
    }


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r, NaN where either side is constant (numpy's corrcoef would warn and divide by zero)."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _std_ratio(predicted: np.ndarray, true: np.ndarray) -> float:
    if len(true) < 2 or np.std(true) == 0:
        return math.nan
    return float(np.std(predicted) / np.std(true))


def score_rules(predictions: list[np.ndarray], components: list[dict[str, np.ndarray]],
                basis: np.ndarray | None = None) -> dict[str, RuleScore]:
    """Each rule's pooled r and amplitude ratio; predictions[i] (T_i, 56) goes with components[i] (each (T_i,))."""
    if len(predictions) != len(components) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(components)} sessions")
    basis = listener_basis() if basis is None else basis
    signals = [predicted_rule_signals(motion, basis) for motion in predictions]
    scores = {}
    for rule in RULES:
        predicted = np.concatenate([signal[rule] for signal in signals])
        truths = [np.asarray(component[rule], np.float64) for component in components]
        if any(len(truth) != len(signal[rule]) for truth, signal in zip(truths, signals)):
            raise ValueError(f"{rule}: a session's component and prediction differ in length")
        active = np.concatenate([np.abs(truth) > ACTIVE_EPSILON if rule in PULSE_RULES else np.ones(len(truth), bool)
                                 for truth in truths])
        true = np.concatenate([truth - truth.mean() if rule in CENTRED_RULES else truth for truth in truths])
        scores[rule] = RuleScore(rule, pearson(predicted, true), _std_ratio(predicted[active], true[active]),
                                 len(true), int(active.sum()))
    return scores


def reproduced_rules(folder: Path, sample: LabelledInputs) -> ListenerRules:
    """The session's listener rules recomputed from its seed, or a DataError if they are not the sample's listener."""
    seed, config = read_session_record(folder)
    rules = listener_rules(seed, config)
    frames = len(sample.listener)
    if len(rules.motion) < frames or not np.allclose(rules.motion[:frames], sample.listener,
                                                     atol=REPRODUCED_TOLERANCE, rtol=0):
        raise DataError(f"{folder}: the synthetic generator (seed {seed}) does not reproduce this session's listener; "
                        "it was written by another version of fad-edge or changed since: write it again with "
                        "fad-edge synth")
    return rules


def _session_components(folder: Path, sample: LabelledInputs) -> dict[str, np.ndarray]:
    """The session's true rule components, cut to the sample's frames, once its listener is reproduced."""
    rules, frames = reproduced_rules(folder, sample), len(sample.listener)
    return {rule: rules.components[rule][:frames] for rule in RULES}


def diagnose(runner: ClipRunner, data: Path, split: str = "test") -> RuleReport:
    """Run `runner` over the split's sessions and score each rule (the sessions must be synthetic)."""
    folders = {folder.name: folder for folder in list_sessions(Path(data), split)}
    for folder in folders.values():
        read_session_record(folder)  # refuse data that is not synthetic before any video is decoded
    if runner.config.n_coeffs != N_COEFFS:
        raise DataError(f"the model produces {runner.config.n_coeffs} coefficients; the rules read {N_COEFFS}")
    samples = split_samples(runner.config, Path(data), split)
    components = [_session_components(folders[sample.name], sample) for sample in samples]
    predictions = [runner.run_inputs(sample.inputs) for sample in samples]
    basis = listener_basis()
    per_session = {sample.name: {rule: score.r for rule, score in score_rules([motion], [truth], basis).items()}
                   for sample, motion, truth in zip(samples, predictions, components)}
    scores = score_rules(predictions, components, basis)
    recorded = score_rules([sample.listener for sample in samples], components, basis)
    for rule, score in scores.items():
        score.data_r = recorded[rule].r
    return RuleReport(split, [sample.name for sample in samples], scores, per_session)
