"""The audio front end: log-mel frames aligned to video frames, and each frame's mel window.

Alignment: mel frames run at 120 Hz, 4 per video frame. Mel frame j is centred
at sample round((j + 0.5) * 16000 / 120) and analyses a Hann window of N_FFT = 512 samples (32 ms)
around that centre (zero padding at the ends), so mel frames 4i..4i+3 sit inside video frame i's
1/30 s exactly and never drift, whatever the length. The hop alternates between 133 and 134
samples to achieve this, which is why the frames are gathered here instead of by `librosa.stft`.
The mel filter bank is Slaney's (80 bands, 50 Hz - 8 kHz, area-normalized), written out here in
NumPy so that the edge runtime needs no librosa (and its numba); a test checks it against
`librosa.filters.mel` to float32 precision.

Values are log10 power, floored at 1e-5, scaled as whisper does ((log + 4) / 4) to sit near [-1, 1].
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
import soxr

from fad_edge.constants import (
    LOG_MEL_FLOOR,
    MEL_FMAX,
    MEL_FMIN,
    MEL_FRAMES_PER_SECOND,
    MELS_PER_FRAME,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
)
from fad_edge.errors import DataError

# Up to this many mel frames the filter bank is applied without BLAS: one clip's 32x257x80 product takes
# 0.5 ms in einsum's loop but was measured at 20 ms through a 2-thread OpenBLAS on a busy 2-core machine.
SMALL_PRODUCT_FRAMES = 256

# The value of a silent mel bin after scaling; used to pad windows before the first frame.
SILENCE = (np.log10(LOG_MEL_FLOOR) + 4.0) / 4.0


# Slaney's mel scale (the Auditory Toolbox): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_START_HZ = 1000.0
_SLANEY_LOG_START_MEL = _SLANEY_LOG_START_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: npt.ArrayLike) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    linear = hz / _SLANEY_HZ_PER_MEL
    log = _SLANEY_LOG_START_MEL + np.log(np.maximum(hz, 1e-10) / _SLANEY_LOG_START_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_LOG_START_HZ, log, linear)


def mel_to_hz(mel: npt.ArrayLike) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    log = _SLANEY_LOG_START_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_LOG_START_MEL))
    return np.where(mel >= _SLANEY_LOG_START_MEL, log, linear)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """(n_mels, N_FFT // 2 + 1) triangular filters, each scaled to unit area (Slaney normalization)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(MEL_FMIN), hz_to_mel(MEL_FMAX), n_mels + 2))
    bins = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def resample_audio(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample with soxr's high quality setting; the length is ceil(n * to / from), as librosa's."""
    samples = np.asarray(samples, np.float32)
    if from_rate == to_rate:
        return samples
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ").astype(np.float32)
    length = int(np.ceil(len(samples) * to_rate / from_rate))
    if len(out) < length:
        out = np.concatenate([out, np.zeros(length - len(out), np.float32)])
    return out[:length]


def mel_centres(n_mel_frames: int, first: int = 0) -> np.ndarray:
    """Sample index of the centre of mel frames first .. first + n_mel_frames - 1."""
    j = np.arange(first, first + n_mel_frames, dtype=np.float64)
    return np.round((j + 0.5) * SAMPLE_RATE / MEL_FRAMES_PER_SECOND).astype(np.int64)


def log_mel(samples: np.ndarray, n_video_frames: int, n_mels: int = N_MELS, first_frame: int = 0,
            offset: int = 0) -> np.ndarray:
    """Scaled log-mel (n_video_frames * 4, n_mels) for video frames first_frame .. first_frame + n - 1.

    `samples` is mono 16 kHz audio whose sample 0 is absolute sample `offset` of the session (a
    streaming caller passes a buffer that starts later); samples outside it count as silence.
    """
    if samples.ndim != 1:
        raise DataError(f"audio must be mono (1-D), got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise DataError("audio contains NaN or infinite samples")
    n = n_video_frames * MELS_PER_FRAME
    centres = mel_centres(n, first_frame * MELS_PER_FRAME) - offset
    half = N_FFT // 2
    padded = np.zeros(len(samples) + 2 * N_FFT + 2, dtype=np.float32)
    padded[N_FFT : N_FFT + len(samples)] = samples
    starts = np.clip(centres - half + N_FFT, 0, len(padded) - N_FFT)
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]  # (n, N_FFT)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=1)) ** 2
    spectrum = spectrum.astype(np.float32)
    if n <= SMALL_PRODUCT_FRAMES:  # a stream's clip: BLAS threads would wait longer than the product takes
        mel = np.einsum("nf,mf->nm", spectrum, mel_filters(n_mels))  # (n, n_mels)
    else:
        mel = spectrum @ mel_filters(n_mels).T
    return ((np.log10(np.maximum(mel, LOG_MEL_FLOOR)) + 4.0) / 4.0).astype(np.float32)


def frame_windows(mel: np.ndarray, window_frames: int, history: np.ndarray | None = None) -> np.ndarray:
    """Each video frame's audio input: the mel of the `window_frames` frames ending with it.

    mel: (T * 4, n_mels). history: the mel of earlier frames (any length, most recent last) or None
    for the start of a session (padded with silence). Returns (T, 1, window_frames * 4, n_mels).
    """
    n_mels = mel.shape[1]
    frames = mel.shape[0] // MELS_PER_FRAME
    width = window_frames * MELS_PER_FRAME
    before = width - MELS_PER_FRAME
    if history is None or len(history) == 0:
        history = np.full((0, n_mels), SILENCE, dtype=np.float32)
    history = history[-before:] if before > 0 else history[:0]
    pad = np.full((before - len(history), n_mels), SILENCE, dtype=np.float32)
    full = np.concatenate([pad, history, mel], axis=0)  # (before + T*4, n_mels)
    index = np.arange(frames)[:, None] * MELS_PER_FRAME + np.arange(width)[None, :]
    return full[index][:, None, :, :]  # (T, 1, width, n_mels)


def frame_spectra(mel: np.ndarray) -> np.ndarray:
    """(T * 4, n_mels) log-mel -> (n_mels, T): each video frame's own mel frames averaged.

    What the audio encoder passes on to the prosody branch per frame (`AudioEncoder.forward`), for a
    whole session at once.
    """
    frames = mel.shape[0] // MELS_PER_FRAME
    own = mel[: frames * MELS_PER_FRAME].reshape(frames, MELS_PER_FRAME, mel.shape[1])
    return np.ascontiguousarray(own.mean(axis=1, dtype=np.float32).T)
