"""`fad-edge evaluate`: the paper's tables (baselines, FAD, ground truth) on a dataset split, and the REACT table.

Every metric runs on de-normalized coefficients for the expression (50) and rotation (jaw + head,
6) groups; see metrics.py for the definitions. SI's k-means is fitted on the evaluated split's
ground truth, as Learning to Listen does, so GT's own SI is the reference for the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fad_edge import metrics
from fad_edge.baselines import NAMES as BASELINE_NAMES
from fad_edge.baselines import Baselines, BaselineSequence
from fad_edge.checkpoint import LoadedCheckpoint
from fad_edge.digests import motion_fingerprint
from fad_edge.errors import DataError
from fad_edge.model_draws import EncodedInputs, encode_inputs, sample_encoded
from fad_edge.models.config import ModelConfig
from fad_edge.react_evaluation import ReactOptions, ReactTable, evaluate_react
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.torch_runner import TorchRunner
from fad_edge.samples import LabelledInputs, split_samples
from fad_edge.sampling import DEFAULT_SAMPLER, SamplerSettings

METRIC_NAMES = ("L2", "MSE", "FD", "FD pooled", "P-FD", "P-FD pooled", "SI", "TLCC lag", "TLCC r")


@dataclass
class EvaluationTable:
    """rows[name][group][metric] -> value; NaN where a metric does not apply."""

    split: str
    sessions: list[str]
    frames: int
    rows: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    react: ReactTable | None = None  # the REACT metrics, where asked for
    # Per model: {"sampler": name, "settings": SamplerSettings' fields, "samples": draws per clip}.
    samplers: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def short_sequence_notes(truths: list[np.ndarray]) -> list[str]:
    """A note per group whose per-sequence FD and P-FD rest on too few frames for their covariances.

    Each sequence's covariance has the group's dims (twice that for P-FD); from fewer than ten frames a dim
    (Learning to Listen's 64-frame clips against 50 expression dims) its estimate dominates the distance.
    """
    shortest = min(len(truth) for truth in truths)
    notes = []
    for group, columns in metrics.GROUPS.items():
        dims = columns.stop - columns.start
        if shortest < 10 * dims:
            notes.append(f"{group}: the shortest sequence has {shortest} frames for a {dims}-dim covariance, so its "
                         f"per-sequence FD and P-FD are mostly estimation error; read the pooled ones")
    return notes


def _baseline_sequence(sample: LabelledInputs) -> BaselineSequence:
    if sample.mel is None:
        raise DataError(f"{sample.name}: no mel features to evaluate the audio baselines on")
    return BaselineSequence(sample.speaker, sample.mel, sample.listener)


def check_compatible(loaded: LoadedCheckpoint, samples: list[LabelledInputs]) -> None:
    """The checkpoint must produce the dataset's coefficient layout and have sane statistics."""
    config = loaded.config
    for sample in samples:
        if sample.listener.shape[1] != config.n_coeffs:
            raise DataError(f"{sample.name}: listener motion has {sample.listener.shape[1]} dims, "
                            f"the checkpoint produces {config.n_coeffs}")
    std = np.asarray(loaded.normalization.std)
    if std.shape != (config.n_coeffs,) or not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise DataError(f"{loaded.path}: the checkpoint's normalization does not fit {config.n_coeffs} dims")


def input_key(config: ModelConfig) -> tuple[int, int, int]:
    """What preparing a split's inputs depends on: models that differ here cannot share prepared inputs."""
    return config.image_size, config.n_mels, config.audio_window_frames


def model_samples(config: ModelConfig, data: Path, split: str,
                  prepared: dict[tuple[int, int, int], list[LabelledInputs]]) -> list[LabelledInputs]:
    """The split prepared for this model's inputs, read once per distinct `input_key` (models of several
    presets, e.g. 32 and 48 pixels, are compared on the same sessions)."""
    key = input_key(config)
    if key not in prepared:
        prepared[key] = split_samples(config, data, split)
    return prepared[key]


def fit_shannon_indices(truths: list[np.ndarray], split: str) -> dict[str, metrics.ShannonIndex]:
    """SI's k-means per group, fitted on the split's pooled ground-truth frames."""
    truth_frames = np.concatenate(truths)
    needed = max(metrics.SI_CLUSTERS.values())
    if len(truth_frames) < needed:
        raise DataError(f"the {split} split has {len(truth_frames)} frames; SI needs at least {needed}")
    return {group: metrics.ShannonIndex.fit(truth_frames[:, cols], metrics.SI_CLUSTERS[group])
            for group, cols in metrics.GROUPS.items()}


def group_metrics(predictions: list[np.ndarray], truths: list[np.ndarray], speakers: list[np.ndarray | None],
                  si: dict[str, metrics.ShannonIndex]) -> dict[str, dict[str, float]]:
    """Every metric for both groups, over sequences (L2/MSE averaged over all frames), and L2/MSE over all 56."""
    result = {}
    for group, columns in metrics.GROUPS.items():
        pred = [p[:, columns] for p in predictions]
        true = [t[:, columns] for t in truths]
        frames = np.concatenate(pred)
        known = [(s[:, columns], p, t) for s, p, t in zip(speakers, pred, true) if s is not None]
        paired = [list(part) for part in zip(*known)]  # speakers, predictions, truths where the speaker is known
        lagged = metrics.tlcc_summary(paired[0], paired[1]) if known else {"lag": math.nan, "r": math.nan}
        row = {
            "L2": metrics.l2(frames, np.concatenate(true)),
            "MSE": metrics.mse(frames, np.concatenate(true)),
            "FD": metrics.fd_per_sequence(pred, true),
            "FD pooled": metrics.fd_pooled(pred, true),
            "P-FD": metrics.paired_fd_per_sequence(*paired) if known else math.nan,
            "P-FD pooled": metrics.paired_fd_pooled(*paired) if known else math.nan,
            "SI": si[group](frames),
            "TLCC lag": lagged["lag"],
            "TLCC r": lagged["r"],
        }
        result[group] = row
    # Both groups together (all 56 dims): the L2 the foundation's accuracy target is stated in.
    every = (np.concatenate(predictions), np.concatenate(truths))
    result["all"] = {"L2": metrics.l2(*every), "MSE": metrics.mse(*every)}
    return result


def sampler_settings(config: ModelConfig, sampler: str = DEFAULT_SAMPLER, steps: int | None = None,
                     start_noise: float | None = None) -> SamplerSettings:
    """The named sampler's settings, with the steps and the start noise optionally overridden."""
    settings = SamplerSettings.named(sampler, config, steps)
    return settings if start_noise is None else dataclasses.replace(settings, start_noise=start_noise)


def l2_and_fd(predictions: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """L2 over all frames and FD per sequence, per group: what the steps curve and the sampler grid report."""
    return {group: {"L2": metrics.l2(np.concatenate([p[:, c] for p in predictions]),
                                     np.concatenate([t[:, c] for t in truths])),
                    "FD": metrics.fd_per_sequence([p[:, c] for p in predictions], [t[:, c] for t in truths])}
            for group, c in metrics.GROUPS.items()}


def draw_settings(runner: ClipRunner, encoded: list[EncodedInputs], settings: SamplerSettings,
                  samples: int) -> list[list[np.ndarray]]:
    """`samples` draws (seeds 0..samples-1) of every session under `settings`: draws[seed][session]."""
    runner.settings = settings
    return [[sample_encoded(runner, session, seed) for session in encoded] for seed in range(samples)]


def score_settings(runner: ClipRunner, encoded: list[EncodedInputs], truths: list[np.ndarray],
                   settings: SamplerSettings, samples: int = 1) -> dict[str, dict[str, float]]:
    """L2 and FD per group of `samples` draws (seeds 0..samples-1) under `settings`, averaged over the draws;
    with more than one draw, also their diversity. The inputs are encoded once for any number of settings."""
    return score_draws(draw_settings(runner, encoded, settings, samples), truths)


def score_draws(draws: list[list[np.ndarray]], truths: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """What `score_settings` reports, for draws[seed][session] already drawn."""
    samples = len(draws)
    scored = [l2_and_fd(draw, truths) for draw in draws]
    result = {group: {key: float(np.mean([s[group][key] for s in scored])) for key in ("L2", "FD")}
              for group in metrics.GROUPS}
    if samples > 1:
        for group, cols in metrics.GROUPS.items():
            result[group]["diversity"] = diversity([[d[:, cols] for d in draw] for draw in draws])
    return result


def diversity(draws: list[list[np.ndarray]]) -> float:
    """Mean pairwise L2 between the N draws for the same input, averaged over inputs."""
    values = [metrics.l2(a, b) for per_input in zip(*draws) for a, b in itertools.combinations(per_input, 2)]
    return float(np.mean(values)) if values else math.nan


def evaluate(models: list[tuple[str, LoadedCheckpoint]], data: Path, split: str = "test", steps: int | None = None,
             samples: int = 1, start_noise: float | None = None, device: str = "cpu",
             react: ReactOptions | None = None, sampler: str = DEFAULT_SAMPLER) -> EvaluationTable:
    """Baselines (fitted on train), each model (run on `device`, a torch device name, with the named
    `sampler`, `steps` and `start_noise` overriding its settings), and GT on `split`; with `react`, the
    REACT table too."""
    if not models:
        raise ValueError("evaluate needs at least one checkpoint")
    labels = [label for label, _ in models]
    if len(set(labels)) < len(labels) or set(labels) & {*BASELINE_NAMES, "GT"}:
        raise ValueError(f"each checkpoint needs a row name of its own, not a baseline's or GT; got {labels}")
    config = models[0][1].config
    prepared = {input_key(config): split_samples(config, data, split)}
    test = prepared[input_key(config)]
    train = split_samples(config, data, "train")
    table = EvaluationTable(split, [s.name for s in test], int(sum(len(s.listener) for s in test)))
    truths = [s.listener for s in test]
    table.notes += short_sequence_notes(truths)
    table.notes += in_sample_notes(models, truths, split)
    speakers = [s.speaker for s in test]
    si = fit_shannon_indices(truths, split)

    baselines = Baselines([_baseline_sequence(s) for s in train])
    sequences = [_baseline_sequence(s) for s in test]
    baseline_draws = {}  # the REACT table's m draws; the first is the paper table's prediction
    for name in BASELINE_NAMES:
        if not all(name in baselines.available(seq) for seq in sequences):
            table.notes.append(f"{name}: skipped, the dataset has no speaker coefficients")
            continue
        count = react.samples if react is not None else 1
        baseline_draws[name] = [baselines.draws(name, seq, index, count) for index, seq in enumerate(sequences)]
        table.rows[name] = group_metrics([draws[0] for draws in baseline_draws[name]], truths, speakers, si)

    encoded_models = []
    for label, loaded in models:
        model_test = model_samples(loaded.config, data, split, prepared)
        check_compatible(loaded, model_test)
        settings = sampler_settings(loaded.config, sampler, steps, start_noise)
        runner = TorchRunner(loaded.model, settings=settings, device=device)
        table.samplers[label] = {"sampler": sampler, "settings": dataclasses.asdict(settings), "samples": samples}
        encoded = [encode_inputs(runner, sample.inputs) for sample in model_test]  # shared with the REACT table
        encoded_models.append((label, TorchRunner(loaded.model, settings=settings, device=device), encoded))
        draws = draw_settings(runner, encoded, settings, samples)
        row = group_metrics(draws[0], truths, speakers, si)
        if samples > 1:
            for group, cols in metrics.GROUPS.items():
                row[group]["diversity"] = diversity([[d[:, cols] for d in draw] for draw in draws])
        table.rows[label] = row

    gt = group_metrics(truths, truths, speakers, si)
    table.rows["GT"] = gt
    if react is not None:
        table.react = evaluate_react(test, data, baseline_draws, encoded_models, react)
        if table.react is None:
            table.notes.append(f"REACT metrics: skipped, no {split} session has {react.window} frames")
    return table


def encoded_split(
    loaded: LoadedCheckpoint, data: Path, split: str, device: str = "cpu", samples: list[LabelledInputs] | None = None
) -> tuple[TorchRunner, list[EncodedInputs], list[np.ndarray]]:
    """A runner for the checkpoint, the split's sessions (`samples`, where already loaded) encoded once,
    and their listener motion."""
    test = split_samples(loaded.config, data, split) if samples is None else samples
    check_compatible(loaded, test)
    runner = TorchRunner(loaded.model, device=device)
    return runner, [encode_inputs(runner, s.inputs) for s in test], [s.listener for s in test]


def steps_curve(loaded: LoadedCheckpoint, data: Path, split: str, steps_list: list[int], device: str = "cpu",
                sampler: str = DEFAULT_SAMPLER, start_noise: float | None = None) -> dict[int, dict]:
    """L2 and FD (both groups) of FAD at each number of denoising steps (the paper's Figure 4), seed 0."""
    runner, encoded, truths = encoded_split(loaded, data, split, device)
    config = loaded.config
    return {n: score_settings(runner, encoded, truths, sampler_settings(config, sampler, n, start_noise))
            for n in steps_list}


def in_sample_notes(models: list[tuple[str, LoadedCheckpoint]], truths: list[np.ndarray], split: str) -> list[str]:
    """A note for each model that was trained on some of the evaluated sessions (the same listener motion, under
    whatever name: another split of the dataset, another dataset drawn with the same seed): its figures are
    in-sample there, and look better than held-out ones would."""
    evaluated = [motion_fingerprint(truth) for truth in truths]
    notes = []
    for label, checkpoint in models:
        trained = set(checkpoint.info.get("train_motion_fingerprints") or ())
        if count := sum(fingerprint in trained for fingerprint in evaluated):
            notes.append(f"{label}: {count} of the {len(evaluated)} {split} sessions were in its training data, "
                         "so its figures are in-sample for them")
    return notes


def evaluate_baselines(train: list[BaselineSequence], test: list[BaselineSequence], split: str,
                       names: list[str]) -> EvaluationTable:
    """The coefficient baselines and GT on sequences without video (e.g. Learning to Listen)."""
    if not test:
        raise DataError(f"the {split} split has no sequences")
    truths = [s.listener for s in test]
    si = fit_shannon_indices(truths, split)
    table = EvaluationTable(split, names, int(sum(len(t) for t in truths)))
    table.notes += short_sequence_notes(truths)
    baselines = Baselines(train)
    speakers = [s.speaker for s in test]
    for name in BASELINE_NAMES:
        predictions = [baselines.predict(name, seq, index) for index, seq in enumerate(test)]
        table.rows[name] = group_metrics(predictions, truths, speakers, si)
    table.rows["GT"] = group_metrics(truths, truths, speakers, si)
    table.notes.append("no video in this dataset: coefficient baselines only")
    return table
