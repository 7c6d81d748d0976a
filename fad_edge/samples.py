"""Speaker inputs with known listener motion, for INT8 calibration and the export's accuracy checks.

Without a dataset, sessions are drawn from the synthetic generator with seeds no dataset written by
`fad-edge synth` uses for the same index (so they are held out by construction); with one, the
sessions of a split are read from disk exactly as training read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fad_edge.constants import CLIP_LEN, SAMPLE_RATE
from fad_edge.data.audio_features import frame_windows
from fad_edge.data.dataset import load_split
from fad_edge.data.inputs import SpeakerInputs, images_from_frames, prepare_inputs
from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.models.config import ModelConfig

HELD_OUT_SEED = 9_000_001


@dataclass
class LabelledInputs:
    """Prepared speaker inputs and the listener motion that goes with them (T, 56)."""

    name: str
    inputs: SpeakerInputs
    listener: np.ndarray
    speaker: np.ndarray | None = None  # (T, 56) speaker coefficients where known
    mel: np.ndarray | None = None  # (T * 4, n_mels) raw log-mel, for the audio baselines


def synthetic_samples(
    config: ModelConfig, count: int, seconds: float, seed: int = HELD_OUT_SEED
) -> list[LabelledInputs]:
    """`count` fresh synthetic sessions, drawn at twice the model's image size and resized like real video."""
    samples = []
    for index in range(count):
        session = generate_session(seed + index, SyntheticConfig(seconds=seconds, image_size=2 * config.image_size))
        inputs = prepare_inputs(session.frames, session.audio, SAMPLE_RATE, config.image_size,
                                config.audio_window_frames, config.n_mels)
        samples.append(LabelledInputs(f"synthetic-{seed + index}", inputs, session.listener, session.speaker))
    return samples


def split_samples(config: ModelConfig, data: Path, split: str) -> list[LabelledInputs]:
    """The sessions of a dataset split, cut to whole clips."""
    samples = []
    for session in load_split(Path(data), split, config.image_size, config.n_mels):
        frames = session.n_frames // CLIP_LEN * CLIP_LEN
        mel = frame_windows(session.mel[: frames * 4], config.audio_window_frames)
        inputs = SpeakerInputs(images_from_frames(session.frames[:frames]), mel, frames, pixels_in_range=True)
        speaker = None if session.speaker is None else session.speaker[:frames]
        samples.append(LabelledInputs(session.name, inputs, session.listener[:frames], speaker,
                                      session.mel[: frames * 4]))
    return samples


def mean_l2(motion: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-frame Euclidean norm of the difference over all 56 coefficients."""
    return float(np.linalg.norm(motion - reference, axis=1).mean())
