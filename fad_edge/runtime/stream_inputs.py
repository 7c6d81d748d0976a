"""What a live stream accepts: frames, audio samples and rates, and timestamps, each checked at the call.

Every refusal is a `StreamInputError` (a FadEdgeError and a ValueError) naming the value and what
to do, raised before the stream's state changes, so the stream stays usable after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fad_edge.constants import INPUT_SAMPLE_RATES
from fad_edge.data.inputs import (
    MAX_AMPLITUDE,
    MAX_CHANNELS,
    cancelling_loudest,
    channel_axes,
    finite_peak,
    out_of_range,
)
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


@dataclass(frozen=True)
class AudioLayout:
    """How a stream's multi-channel chunks were read, for the chunks after them."""

    axis: int  # the channel axis of (N, C) or (C, N)
    channels: int
    taken: int | None = None  # the channel heard alone since a chunk's channels cancelled


def mono_samples(samples: object, layout: AudioLayout | None = None) -> tuple[np.ndarray, AudioLayout | None]:
    """Float32 mono in [-1, 1] from float, int16 or int32 audio, 1-D or 2-D in either layout.

    Float samples beyond MAX_AMPLITUDE are refused (not audio at that scale); NaN and infinities are
    left for the caller to count and silence.

    A 2-D chunk's channel axis is the one with at most MAX_CHANNELS entries; when both are that
    small, the `layout` of an earlier chunk decides, and with none the chunk is refused rather than
    misread. The channels are averaged, or where they cancel (one the other in opposite phase) one
    channel is heard alone: the loudest of the first such chunk, then that one for every later chunk
    that cancels, so near-equal channels never swap (and flip the wave's sign) between chunks.
    Returns the samples and the layout to remember.
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
    if len(axes) == 2 and layout is not None and array.shape[layout.axis] == layout.channels:
        axes = [layout.axis]
    if len(axes) != 1:
        reason = "both axes" if axes else "neither axis"
        raise StreamInputError(f"audio of shape {array.shape} is ambiguous: {reason} could be the channels "
                               f"(at most {MAX_CHANNELS}); push a longer chunk first or down-mix it yourself")
    channels = np.moveaxis(array, axes[0], 0)
    same = layout is not None and (layout.axis, layout.channels) == (axes[0], channels.shape[0])
    taken = layout.taken if same and layout is not None else None
    loudest = cancelling_loudest(channels)
    if loudest is None:
        return channels.mean(axis=0), AudioLayout(axes[0], channels.shape[0], taken)
    taken = loudest if taken is None else taken
    return np.ascontiguousarray(channels[taken]), AudioLayout(axes[0], channels.shape[0], taken)


def check_frame(frame: object) -> np.ndarray:
    """A uint8 (H, W, 3) frame, at least 2x2."""
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 2:
        raise StreamInputError(f"a frame must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
    return array
