"""Samples of a model for prepared inputs, encoding the speaker frames once for any number of them.

Encoding the frames is most of a sample's cost and does not depend on the seed or the sampler's
settings, so the paper's table and the REACT table share one encoding per session and model, and
each further sample costs only the diffusion sampling. Sample k with seed k is, value for value,
`runner.run_inputs(inputs)` with `runner.seed = k`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fad_edge.data.inputs import SpeakerInputs
from fad_edge.runtime.base import ClipRunner, clip_condition_windows


@dataclass
class EncodedInputs:
    conditions: np.ndarray  # (clips, (C + 1) L, D) every clip's condition window
    frames: int


def encode_inputs(runner: ClipRunner, inputs: SpeakerInputs) -> EncodedInputs:
    features = runner.encode(inputs.images, inputs.mel)
    config = runner.config
    return EncodedInputs(clip_condition_windows(features, config.clip_len, config.context_clips), inputs.n_frames)


def sample_encoded(runner: ClipRunner, encoded: EncodedInputs, seed: int, frames: int | None = None) -> np.ndarray:
    """Motion (frames, 56) with `seed` under the runner's settings; `frames` < all samples only the clips needed.

    With fewer frames the start noise of the clips kept is the same as for all of them (it is drawn
    clip by clip in order), so a one-step sample's first frames do not change.
    """
    frames = encoded.frames if frames is None else min(frames, encoded.frames)
    conditions = encoded.conditions[: math.ceil(frames / runner.config.clip_len)]
    generator = np.random.default_rng(seed)
    motion = runner.clips_motion(conditions, runner.initial_state(len(conditions), generator), generator)
    return motion.reshape(-1, runner.config.n_coeffs)[:frames].astype(np.float32)


def draws(runner: ClipRunner, inputs: SpeakerInputs, count: int) -> list[np.ndarray]:
    """`count` samples (T, 56) for seeds 0..count-1, encoding once."""
    encoded = encode_inputs(runner, inputs)
    return [sample_encoded(runner, encoded, seed) for seed in range(count)]
