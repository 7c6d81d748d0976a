"""How well does a video encoder read the speaker's face? The speaker head's factors on held-out frames.

The small preset's video encoder is trained by the speaker loss: a linear head on its features predicts
the speaker's own coefficients. On the synthetic data those are a fixed mixing of the speaker's smile,
brow, blink, mouth and two idle factors (`data.synthetic.speaker_basis`) plus noise, so the head's
prediction, unmixed, says how well the encoder sees each factor: the Pearson r of predicted and true
factor over every frame of the split (the truth unmixed from the speaker's coefficients the same way).

    PYTHONPATH=. python bench/speaker_reading.py --data DATA --model RUN/best [--split test] [--out r.json]
    PYTHONPATH=. python bench/speaker_reading.py --data DATA --pretrain-steps 400 [--every 100] [--out r.json]

The first scores a trained model's encoder and head. The second pretrains a fresh small-preset
encoder and head as `fad-edge train` does before FAD's steps (`fad_edge.video_pretraining`, 128 frames a
step from the train split, seed 0) and scores them every `--every` steps, with the seconds so far.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fad_edge.constants import EXPRESSION
from fad_edge.data.dataset import load_split
from fad_edge.data.normalization import Normalization
from fad_edge.data.synthetic import SPEAKER_FACTORS, speaker_basis
from fad_edge.models.config import ModelConfig
from fad_edge.models.encoders import VideoEncoder
from fad_edge.models.presets import preset
from fad_edge.train_precision import MixedPrecision
from fad_edge.video_pretraining import FramePool, pretrain_video

SCORED = SPEAKER_FACTORS[:3]  # smile, brow, blink: what the face shows; the mouth also moves with speech
BATCH = 512  # frames per inference call


def factors(expression: np.ndarray) -> np.ndarray:
    """(N, 50) speaker expression -> (N, 6) factors: least squares against the speaker's basis."""
    return expression @ np.linalg.pinv(speaker_basis()).T


def factor_r(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Pearson r of each scored factor, from (N, 56) predicted and true speaker coefficients."""
    p, t = factors(predicted[:, EXPRESSION]), factors(true[:, EXPRESSION])
    return {name: float(np.corrcoef(p[:, k], t[:, k])[0, 1]) for k, name in enumerate(SPEAKER_FACTORS)
            if name in SCORED}


def read_speaker(encoder: nn.Module, head: nn.Module, images: np.ndarray, normalization: Normalization
                 ) -> np.ndarray:
    """The head's speaker coefficients (N, 56), de-normalized, for uint8 frames (N, S, S, 3)."""
    was_training = encoder.training
    encoder.eval()
    head.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            batch = torch.from_numpy(images[start:start + BATCH]).permute(0, 3, 1, 2).float().div_(255.0)
            out.append(head(encoder(batch)).numpy())
    encoder.train(was_training)
    head.train(was_training)
    return normalization.denormalize(np.concatenate(out))


def _split(data: Path, split: str, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    sessions = [s for s in load_split(data, split, config.image_size, config.n_mels) if s.speaker is not None]
    if not sessions:
        raise SystemExit(f"error: the {split} split of {data} has no speaker coefficients")
    return np.concatenate([s.frames for s in sessions]), np.concatenate([s.speaker for s in sessions])


def score_model(model_path: Path, data: Path, split: str) -> dict:
    from fad_edge.checkpoint import load_checkpoint

    loaded = load_checkpoint(model_path)
    heads = loaded.model.speaker_heads
    if heads is None:
        raise SystemExit(f"error: {model_path} has no speaker heads (trained without the speaker loss)")
    config = loaded.config
    train = load_split(data, "train", config.image_size, config.n_mels)
    images, speaker = _split(data, split, config)
    predicted = read_speaker(loaded.model.video_encoder, heads[0], images, Normalization.fit(train, speaker=True))
    return {"model": str(model_path), "split": split, "frames": len(images), "r": factor_r(predicted, speaker)}


def score_pretraining(data: Path, split: str, steps: int, every: int, frames: int) -> dict:
    config = preset("small", speaker_aux_weight=1.0)
    train = load_split(data, "train", config.image_size, config.n_mels)
    normalization = Normalization.fit(train, speaker=True)
    pool = FramePool([s.frames for s in train],
                     [None if s.speaker is None else normalization.normalize(s.speaker) for s in train])
    images, speaker = _split(data, split, config)
    torch.manual_seed(0)
    encoder, head = VideoEncoder(config), nn.Linear(config.video_features, config.n_coeffs)
    rows: list[dict] = []
    started = time.perf_counter()
    scoring = [0.0]  # seconds spent scoring, not counted as pretraining

    def score(step: int) -> None:
        if step % every and step != steps:
            return
        began = time.perf_counter()
        r = factor_r(read_speaker(encoder, head, images, normalization), speaker)
        seconds = began - started - scoring[0]
        rows.append({"steps": step, "seconds": round(seconds, 1), "r": r})
        print(f"{step:5d} steps {seconds:6.1f} s  " + "  ".join(f"{k} r {v:.3f}" for k, v in r.items()), flush=True)
        scoring[0] += time.perf_counter() - began

    pretrain_video(encoder, head, pool, steps, frames, seed=0, precision=MixedPrecision(torch.device("cpu"), None),
                   after_step=score)
    return {"split": split, "frames_per_step": frames, "frames": len(images), "pretraining": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="a checkpoint (RUN/best) to score")
    parser.add_argument("--pretrain-steps", type=int, default=0, help="pretrain a fresh encoder this many steps")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--frames", type=int, default=preset("small").video_pretrain_frames)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if (args.model is None) == (args.pretrain_steps < 1):
        parser.error("give either --model or --pretrain-steps")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.model is not None:
        report = score_model(args.model, args.data, args.split)
        print("  ".join(f"{k} r {v:.3f}" for k, v in report["r"].items()))
    else:
        report = score_pretraining(args.data, args.split, args.pretrain_steps, max(1, args.every), args.frames)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
