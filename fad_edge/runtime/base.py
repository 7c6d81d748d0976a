"""The contract every backend keeps: speaker frames + audio in, de-normalized (T, 56) listener motion out.

A backend implements two steps and owns its sampling loop, and `ClipRunner` does the rest
identically for all of them: preparing inputs, padding to whole clips, cutting each clip's condition
window (its own frames plus `context_clips` preceding clips, zeros before the start) and drawing the
start noise from one NumPy stream, so every backend sees the same noise for the same seed.

A runner holds resources (sessions, GPU buffers): close it, or use it as a context manager. This
module imports no torch: the edge runtime runs on NumPy and the backend's own library.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np

from fad_edge.data.inputs import SpeakerInputs, prepare_inputs
from fad_edge.errors import FadEdgeError
from fad_edge.models.config import ModelConfig
from fad_edge.sampling import DEFAULT_SAMPLER, DiffusionSampler, SamplerSettings


def run_in_batches(run: Callable[[dict[str, np.ndarray]], np.ndarray], feeds: dict[str, np.ndarray],
                   size: int | None) -> np.ndarray:
    """`run` over every row of `feeds` (arrays of equal length), `size` rows a call (None: all in one), outputs
    concatenated: for sessions and engines whose profiles stop at a batch size."""
    rows = len(next(iter(feeds.values())))
    if size is None or rows <= size:
        return run(feeds)
    return np.concatenate([run({name: array[start : start + size] for name, array in feeds.items()})
                           for start in range(0, rows, size)])


def clip_condition_windows(features: np.ndarray, clip_len: int, context_clips: int) -> np.ndarray:
    """Frame features (T, D), T a multiple of clip_len -> each clip's condition (T/L, (C+1) L, D).

    NumPy twin of `ListenerModel.clip_conditions`, for backends that do not run torch.
    """
    frames, dim = features.shape
    padded = np.concatenate([np.zeros((context_clips * clip_len, dim), features.dtype), features])
    span = (context_clips + 1) * clip_len
    return np.stack([padded[k * clip_len : k * clip_len + span] for k in range(frames // clip_len)])


def check_inputs(inputs: SpeakerInputs, config: ModelConfig) -> None:
    """Inputs shaped as `prepare_inputs` makes them for this model, or a FadEdgeError that says how they differ:
    a session sees only what it is fed, and would cut frames that are not whole clips or read 0..255 images."""
    size, clip = config.image_size, config.clip_len
    images, mel = np.asarray(inputs.images), np.asarray(inputs.mel)
    frames = len(images)
    if images.shape[1:] != (3, size, size) or not np.issubdtype(images.dtype, np.floating):
        raise FadEdgeError(f"images must be float (T, 3, {size}, {size}) in [0, 1], got {images.dtype} {images.shape}")
    if mel.shape != (frames, 1, config.audio_window, config.n_mels):
        raise FadEdgeError(f"mel must be ({frames}, 1, {config.audio_window}, {config.n_mels}) for these images, "
                           f"got {mel.shape}")
    if frames == 0 or frames % clip or not frames - clip < inputs.n_frames <= frames:
        raise FadEdgeError(f"{frames} input frames for {inputs.n_frames}: give whole clips of {clip} frames, "
                           "padded past the last frame by less than a clip (prepare_inputs does)")
    if inputs.pixels_in_range:  # made so (prepare_inputs, images_from_frames): no need to scan every value
        return
    if not (np.all(np.isfinite(images)) and images.min(initial=0.0) >= 0.0 and images.max(initial=0.0) <= 1.0):
        raise FadEdgeError("images must be finite and within [0, 1] (uint8 pixels divided by 255)")


class ClipRunner(ABC):
    """Base of TorchRunner, OrtRunner and TrtRunner."""

    name: str = "runner"
    frame_batch: int = 64  # frames per encoder call: bounds memory for any input length
    mean: np.ndarray  # (56,) motion normalization, set by each backend
    std: np.ndarray
    sampler: DiffusionSampler  # follows `settings`

    def __init__(self, config: ModelConfig, settings: SamplerSettings, seed: int = 0) -> None:
        self.config = config
        self.settings = settings  # validates the settings before any work
        self.seed = seed

    @property
    def settings(self) -> SamplerSettings:
        return self.sampler.settings

    @settings.setter
    def settings(self, settings: SamplerSettings) -> None:
        """New settings (e.g. another start noise) re-derive the sampler: its start state and timesteps follow."""
        self.sampler = DiffusionSampler(settings, self.config.train_steps)

    @property
    def folded_one_step(self) -> bool:
        """Whether the export's folded one-step graph (`elnet_x0`) computes these settings.

        It bakes in the model's `sample_start_step` and `clip_sample` and takes the start state as an
        input, so it serves any start noise (the mean start or a noisy one) from that step, in one step.
        """
        settings, config = self.settings, self.config
        return (settings.steps == 1 and settings.start_step == config.sample_start_step
                and settings.clip_sample == config.clip_sample)

    def initial_state(self, clips: int, generator: np.random.Generator, guess: np.ndarray | None = None) -> np.ndarray:
        """x at the first sampling step (see `DiffusionSampler.initial_state`), (clips, L, 56) float32."""
        return self.sampler.initial_state(clips, generator, self.config.clip_len, self.config.n_coeffs, guess)

    @classmethod
    @abstractmethod
    def open(cls, path: Path, *, precision: str, steps: int | None, seed: int, threads: int,
             sampler: str = DEFAULT_SAMPLER) -> ClipRunner:
        """The runner for a checkpoint or export folder (`open_runner` calls this after checking the backend table).

        `sampler` names the model's sampler settings (`SamplerSettings.named`); `steps` overrides its steps.
        """

    @abstractmethod
    def encode_video_batch(self, images: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 images -> (N, video_features) frame features, modality mask applied.

        The two encoders are separate calls so that a stream can encode each frame's image as soon as
        it arrives, ahead of the audio its clip still waits for (`fad_edge.runtime.clip_encoder`).
        """

    @abstractmethod
    def encode_audio_batch(self, mel: np.ndarray) -> np.ndarray:
        """(N, 1, W, M) float32 mel windows -> (N, audio_output_dim) frame features, modality mask applied."""

    def encode_batch(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 images and (N, 1, W, M) mel -> (N, D) frame features: video, then audio."""
        return np.concatenate([self.encode_video_batch(images), self.encode_audio_batch(mel)], axis=1)

    @abstractmethod
    def clips_motion(self, conditions: np.ndarray, state: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        """Clip conditions (B, (C+1) L, D) and initial states (B, L, 56) -> de-normalized motion (B, L, 56).

        `generator` supplies the noise of any further denoising steps. Each backend runs the loop of
        `fad_edge.sampling` over its own network session.
        """

    def encode(self, images: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """Frame features for any number of frames, `frame_batch` at a time."""
        parts = [
            self.encode_batch(images[start : start + self.frame_batch], mel[start : start + self.frame_batch])
            for start in range(0, len(images), self.frame_batch)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def run_inputs(self, inputs: SpeakerInputs) -> np.ndarray:
        """Motion (T, 56) for prepared inputs; the padding frames are cut off."""
        check_inputs(inputs, self.config)
        features = self.encode(inputs.images, inputs.mel)
        conditions = clip_condition_windows(features, self.config.clip_len, self.config.context_clips)
        generator = np.random.default_rng(self.seed)
        motion = self.clips_motion(conditions, self.initial_state(len(conditions), generator), generator)
        return motion.reshape(-1, self.config.n_coeffs)[: inputs.n_frames].astype(np.float32)

    def run(self, frames: np.ndarray, audio: np.ndarray, sample_rate: int, pad_audio: bool = False) -> np.ndarray:
        """frames: uint8 RGB (T, H, W, 3) of any size; audio: mono float, 1-384 kHz -> float32 (T, 56)."""
        config = self.config
        inputs = prepare_inputs(frames, audio, sample_rate, config.image_size, config.audio_window_frames,
                                config.n_mels, pad_audio)
        return self.run_inputs(inputs)

    def close(self) -> None:  # noqa: B027 (a no-op default: runners holding nothing need not override it)
        """Release the backend's sessions and buffers; the runner is unusable afterwards. Idempotent."""

    def __enter__(self) -> ClipRunner:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
