"""What a live stream accepts: frames, audio samples and rates, and timestamps, each checked at the call.

Every refusal is a `StreamInputError` (a FadEdgeError and a ValueError) naming the value and what
to do, raised before the stream's state changes, so the stream stays usable after it.
"""

from __future__ import annotations

import math

import numpy as np

from fad_edge.constants import INPUT_SAMPLE_RATES
from fad_edge.data.inputs import MAX_AMPLITUDE, MAX_CHANNELS, channel_axes, downmix, finite_peak, out_of_range
from fad_edge.errors import StreamInputError

MAX_TIMESTAMP = 1e10  # seconds (317 years): anything larger is nanoseconds or milliseconds by mistake
SAMPLE_RATES = INPUT_SAMPLE_RATES  # also bounds the silence a gap can ask for
INTEGER_SCALES = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


def check_time(t: object, what: str) -> float:
    """A timestamp as finite seconds, or StreamInputError."""
    try:
        value = float(t)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StreamInputError(f"{what} timestamp must be a number of seconds, got {t!r}") from None
    if not math.isfinite(value) or abs(value) > MAX_TIMESTAMP:
        raise StreamInputError(f"{what} timestamp must be finite seconds (|t| <= {MAX_TIMESTAMP:g}), got {t!r}")
    return value


def check_rate(sample_rate: object) -> int:
    """A sample rate as a whole number of Hz within SAMPLE_RATES, or StreamInputError."""
    try:
        rate = float(sample_rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate == int(rate) and SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]):
        raise StreamInputError(f"audio sample rate must be a whole number of Hz within {SAMPLE_RATES}, "
                               f"got {sample_rate!r}")
    return int(rate)


def mono_samples(samples: object, layout: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Float32 mono in [-1, 1] from float, int16 or int32 audio, 1-D or 2-D in either layout.

    Float samples beyond MAX_AMPLITUDE are refused (not audio at that scale); NaN and infinities are
    left for the caller to count and silence.

    A 2-D chunk's channel axis is the one with at most MAX_CHANNELS entries; when both are that
    small, the `layout` (axis, channels) of an earlier chunk decides, and with none the chunk is
    refused rather than misread. The channels are averaged, or where they cancel (one the other in
    opposite phase) the chunk's loudest is taken (`downmix`). Returns the samples and the layout to remember.
    """
    array = np.asarray(samples)
    if array.dtype.kind == "f":
        if array.size and (peak := finite_peak(array)) > MAX_AMPLITUDE:
            raise StreamInputError(out_of_range(peak))
        array = array.astype(np.float32, copy=False)
    elif array.dtype in INTEGER_SCALES:
        array = array.astype(np.float32) / np.float32(INTEGER_SCALES[array.dtype])
    else:
        raise StreamInputError(f"audio samples must be float in [-1, 1], int16 or int32, got {array.dtype}; "
                               "convert them to float32")
    if array.ndim == 1:
        return array, layout
    if array.ndim != 2:
        raise StreamInputError(f"audio must be (N,), (N, channels) or (channels, N), got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, np.float32), layout
    axes = channel_axes(array.shape)
    if len(axes) == 2 and layout is not None and array.shape[layout[0]] == layout[1]:
        axes = [layout[0]]
    if len(axes) != 1:
        reason = "both axes" if axes else "neither axis"
        raise StreamInputError(f"audio of shape {array.shape} is ambiguous: {reason} could be the channels "
                               f"(at most {MAX_CHANNELS}); push a longer chunk first or down-mix it yourself")
    return downmix(np.moveaxis(array, axes[0], 0)), (axes[0], array.shape[axes[0]])


def check_frame(frame: object) -> np.ndarray:
    """A uint8 (H, W, 3) frame, at least 2x2."""
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 2:
        raise StreamInputError(f"a frame must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
    return array
