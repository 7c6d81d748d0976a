"""Turning a speaker's frames and audio into model inputs, identically for every backend.

Frames are uint8 RGB (T, H, W, 3) of any size, resized to the model's square input with OpenCV's
INTER_AREA; audio is mono float at 1 kHz to 384 kHz, resampled to 16 kHz. The sequence is padded at the end
to whole clips (the last frame repeated, silence for audio) and the runner cuts the padding off.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fad_edge.constants import CLIP_LEN, FPS, INPUT_SAMPLE_RATES, SAMPLE_RATE
from fad_edge.data.audio_features import frame_windows, log_mel, resample_audio
from fad_edge.errors import DataError

MAX_CHANNELS = 8  # a 2-D audio array's channel axis is the one with at most this many entries
# Float audio is nominally within [-1, 1]; a peak beyond this is not audio at that scale (int16 values in a
# float array, say), and squared in the log-mel it overflows float32: refused rather than misread.
MAX_AMPLITUDE = 16.0


@dataclass
class SpeakerInputs:
    """Model-ready inputs for T frames padded to T_pad (a multiple of the clip length)."""

    images: np.ndarray  # (T_pad, 3, S, S) float32 in [0, 1]
    mel: np.ndarray  # (T_pad, 1, W, n_mels) float32
    n_frames: int  # T, before padding
    # True where the images were made within [0, 1] (from uint8 pixels, or drawn so): `check_inputs` then skips
    # its scan of every value, which at 4096 paper-preset frames costs tens of ms, more than a GPU's call.
    pixels_in_range: bool = False

    @property
    def n_clips(self) -> int:
        return len(self.images) // CLIP_LEN


def resize_frames(frames: np.ndarray, image_size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, S, S, 3) uint8, INTER_AREA (no-op when already that size)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(f"frames must be uint8 RGB of shape (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1:3] == (image_size, image_size):
        return frames
    return np.stack([cv2.resize(f, (image_size, image_size), interpolation=cv2.INTER_AREA) for f in frames])


def images_from_frames(frames: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) uint8 -> (T, 3, S, S) float32 in [0, 1]."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def channel_axes(shape: tuple[int, ...]) -> list[int]:
    """The axes of a 2-D audio array that could hold its channels: those with at most MAX_CHANNELS entries."""
    return [axis for axis in (0, 1) if shape[axis] <= MAX_CHANNELS]


# A mix of the channels whose RMS is below this share of the loudest channel's has cancelled itself out:
# one channel is the other in opposite phase (a miswired microphone), and the average is near silence.
CANCELLED_MIX_RATIO = 0.1


def cancelling_loudest(channels: np.ndarray) -> int | None:
    """The loudest of (channels, samples) where their average cancels (CANCELLED_MIX_RATIO), else None."""
    if channels.shape[0] < 2 or channels.shape[1] == 0:
        return None
    rms = np.sqrt(np.mean(np.square(channels, dtype=np.float64), axis=1))
    loudest = int(np.argmax(rms))
    mix_rms = np.sqrt(np.mean(np.square(channels.mean(axis=0), dtype=np.float64)))
    return loudest if rms[loudest] > 0 and mix_rms < CANCELLED_MIX_RATIO * rms[loudest] else None


def downmix(channels: np.ndarray, notes: list[str] | None = None) -> np.ndarray:
    """Mono float32 from (channels, samples): the channels' average, or the loudest channel where the average
    cancels (`cancelling_loudest`), with a note appended to `notes` saying so."""
    channels = np.asarray(channels, np.float32)
    loudest = cancelling_loudest(channels)
    if loudest is None:
        return channels.mean(axis=0)
    if notes is not None:
        notes.append(f"the audio's {channels.shape[0]} channels cancel each other out when averaged (one is "
                     f"another in opposite phase); channel {loudest + 1}, the loudest, is used alone")
    return np.ascontiguousarray(channels[loudest])


def finite_peak(samples: np.ndarray) -> float:
    """The largest |sample| among the finite ones (0 if none)."""
    finite = np.abs(samples[np.isfinite(samples)])
    return float(finite.max()) if finite.size else 0.0


def out_of_range(peak: float) -> str:
    """Why audio reaching `peak` is refused, and what to do."""
    return (f"float audio must be within [-1, 1], but it reaches {peak:.3g}; scale it (int16 values stored as "
            "float are divided by 32768)")


def fit_audio(audio: np.ndarray, sample_rate: int, n_frames: int, pad_audio: bool = False,
              pad_option: str | None = None) -> np.ndarray:
    """Mono 16 kHz audio covering n_frames, resampled if needed.

    Audio shorter than the video by more than one frame is an error unless pad_audio, which pads
    with silence; longer audio is kept at 16 kHz and, at other rates, cut to the video's span (plus a
    second for the resampler's filter) before resampling. `pad_option` is the caller's
    option that sets pad_audio (generate's --pad-audio), named in that error where there is one.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.size:
        axes = channel_axes(audio.shape)
        if len(axes) != 1:
            which = "both" if axes else "neither"
            raise DataError(f"audio of shape {audio.shape} is ambiguous: {which} axis could be the channels "
                            f"(at most {MAX_CHANNELS}); give (N,), (N, channels) or (channels, N)")
        audio = audio.mean(axis=axes[0])
    if audio.ndim != 1 or audio.size == 0:
        raise DataError(f"audio must be a non-empty mono signal, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise DataError("audio contains NaN or infinite samples")
    if (peak := float(np.abs(audio).max())) > MAX_AMPLITUDE:
        raise DataError(out_of_range(peak))
    low, high = INPUT_SAMPLE_RATES
    if not low <= sample_rate <= high:
        raise DataError(f"an audio sample rate of {sample_rate} Hz is not one fad-edge reads ({low} to {high} Hz)")
    needed = int(round(n_frames * SAMPLE_RATE / FPS))
    if sample_rate != SAMPLE_RATE:
        # Only the video's span (and a second for the resampler's filter to settle) is resampled: the rest is cut.
        audio = resample_audio(audio[: int(np.ceil((needed / SAMPLE_RATE + 1.0) * sample_rate))], sample_rate,
                               SAMPLE_RATE)
    if len(audio) < needed - SAMPLE_RATE // FPS and not pad_audio:
        remedy = f"give {pad_option} to pad it with silence" if pad_option else "pad it with silence"
        raise DataError(f"audio is {len(audio) / SAMPLE_RATE:.2f} s but the video is {n_frames / FPS:.2f} s; "
                        f"give audio covering the video (or {remedy})")
    if len(audio) < needed:
        audio = np.concatenate([audio, np.zeros(needed - len(audio), np.float32)])
    return audio


def prepare_inputs(
    frames: np.ndarray,
    audio: np.ndarray,
    sample_rate: int,
    image_size: int,
    audio_window_frames: int,
    n_mels: int,
    pad_audio: bool = False,
) -> SpeakerInputs:
    """Resize, resample, pad to whole clips and compute each frame's mel window."""
    if len(frames) == 0:
        raise DataError("no speaker frames given")
    n_frames = len(frames)
    frames = resize_frames(frames, image_size)
    audio = fit_audio(audio, sample_rate, n_frames, pad_audio)
    padded = -(-n_frames // CLIP_LEN) * CLIP_LEN
    if padded > n_frames:
        frames = np.concatenate([frames, np.repeat(frames[-1:], padded - n_frames, axis=0)])
    mel = log_mel(audio, padded, n_mels)
    return SpeakerInputs(images_from_frames(frames), frame_windows(mel, audio_window_frames), n_frames,
                         pixels_in_range=True)
