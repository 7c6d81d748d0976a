"""Can the audio path tell a FALLING phrase end (the nod's cue) from a RISING one (the brow's)?

    PYTHONPATH=. python bench/audio_cue_probe.py --model RUN/best --data DATA --out probe.json

A linear probe (logistic regression, fit on the train split's phrase ends, scored on the test
split's) at each pause of each synthetic session, on three inputs:
- the log-mel of the last N frames before the pause (the contour relative to its own mean), for
  several N: how much audio the cue needs;
- the model's per-frame audio features, the same after ELNet's audio temporal layer (`ELNet.hear`),
  and its prosody branch's output where it has one, at frames around the phrase end: what the model
  hears.
Where the mel separates the two and the model's features do not, the audio path is what keeps the
model from learning the nod. Synthetic datasets only (the pauses come from each session's seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from fad_edge.atomic import atomic_write_bytes
from fad_edge.checkpoint import LoadedCheckpoint, load_checkpoint
from fad_edge.constants import FPS, MELS_PER_FRAME
from fad_edge.data import synthetic
from fad_edge.data.synthetic_dataset import read_session_record
from fad_edge.samples import LabelledInputs, split_samples

MEL_SPANS = (4, 8, 15, 24)  # video frames of mel before the pause
FEATURE_OFFSETS = (-8, -4, 0, 4, 8, 12)  # frames from the last speech frame


def phrase_ends(data: Path, sample: LabelledInputs) -> list[tuple[int, bool]]:
    """(first pause frame, rising) of each phrase that ends inside the session, from its generator seed."""
    seed, config = read_session_record(data / sample.name)
    frames = int(round(config.seconds * FPS))
    return synthetic._speaker(np.random.default_rng(seed), frames, config).speech.pauses


def audio_features(loaded: LoadedCheckpoint, sample: LabelledInputs) -> dict[str, np.ndarray]:
    """Per-frame audio features (T, Da): the encoder's own, after ELNet's audio temporal layer, and the
    prosody branch's output where the model has one (over the whole session at once: its norms then see
    the session, not one clip's window)."""
    model, config = loaded.model.eval(), loaded.config
    width = config.audio_features
    with torch.no_grad():
        own = model.audio_encoder(torch.from_numpy(sample.inputs.mel))
        condition = torch.cat([torch.zeros(len(own), config.video_features), own], dim=1).T[None]
        heard = model.elnet.hear(condition)[0, config.video_features :].T
    features = {"encoder": own[:, :width].numpy(), "heard": heard[:, :width].numpy()}
    if config.prosody_channels:
        features["prosody"] = heard[:, width:].numpy()
    return features


def probe(train: tuple[list, list], test: tuple[list, list]) -> dict[str, float]:
    if len(set(train[1])) < 2 or not test[1]:
        return {"train_accuracy": float("nan"), "test_accuracy": float("nan"), "test_n": len(test[1])}
    classifier = LogisticRegression(max_iter=5000, C=0.1).fit(np.array(train[0]), np.array(train[1]))
    return {"train_accuracy": float(classifier.score(np.array(train[0]), np.array(train[1]))),
            "test_accuracy": float(classifier.score(np.array(test[0]), np.array(test[1]))), "test_n": len(test[1])}


def examples(loaded: LoadedCheckpoint, data: Path, split: str) -> dict[str, tuple[list, list]]:
    """Probe inputs and labels (1: rising) per input kind, over a split's phrase ends."""
    out: dict[str, tuple[list, list]] = {}

    def add(key: str, vector: np.ndarray, rising: bool) -> None:
        out.setdefault(key, ([], []))
        out[key][0].append(vector)
        out[key][1].append(int(rising))

    for sample in split_samples(loaded.config, data, split):
        features = audio_features(loaded, sample)
        mel = sample.mel
        if mel is None:
            raise SystemExit(f"{sample.name}: no raw mel in the prepared inputs")
        for pause, rising in phrase_ends(data, sample):
            for span in MEL_SPANS:
                start, stop = (pause - span) * MELS_PER_FRAME, pause * MELS_PER_FRAME
                if start >= 0 and stop <= len(mel):
                    frames = mel[start:stop].reshape(span, MELS_PER_FRAME, -1).mean(1)
                    add(f"mel, last {span} frames", (frames - frames.mean(0)).ravel(), rising)
            for offset in FEATURE_OFFSETS:
                frame = pause - 1 + offset
                if 0 <= frame < len(features["heard"]):
                    for kind, values in features.items():
                        add(f"{kind} features, frame P{offset - 1:+d}", values[frame], rising)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint folder (RUN/best)")
    parser.add_argument("--data", type=Path, required=True, help="a synthetic dataset (fad-edge synth, or the demo's)")
    parser.add_argument("--out", type=Path, help="also write the scores to this JSON file")
    args = parser.parse_args()
    loaded = load_checkpoint(args.model)
    train, test = examples(loaded, args.data, "train"), examples(loaded, args.data, "test")
    scores = {key: probe(train[key], test.get(key, ([], []))) for key in train}
    print(f"falling vs rising phrase ends, linear probe (P = first pause frame); {args.model}")
    for key, score in scores.items():
        print(f"  {key:34s} train {score['train_accuracy']:.2f}  test {score['test_accuracy']:.2f}"
              f"  (n = {score['test_n']})")
    if args.out:
        record = {"model": str(args.model), "audio_context_frames": loaded.config.audio_context_frames,
                  "prosody_channels": loaded.config.prosody_channels, "scores": scores}
        atomic_write_bytes(args.out, json.dumps(record, indent=2).encode())


if __name__ == "__main__":
    main()
