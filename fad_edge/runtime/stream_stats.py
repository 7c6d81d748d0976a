"""What a ListenerStream reports: each clip's motion and timing, and the stream's counters and percentiles.

Latency runs from the moment a clip's last input arrived to its motion, any wait behind earlier clips
included; compute is the model's time alone. Percentiles cover the last `window` clips, so a long
run's figures describe its recent behaviour and memory stays fixed. The boundary jump (L2 between a
clip's last frame and the next clip's first) is taken within segments only: across a clock jump the
speaker's input itself jumps.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass
class ClipMotion:
    index: int  # clip number since the stream started
    motion: np.ndarray  # (8, 56) de-normalized FLAME coefficients (fewer rows for a partial clip)
    timestamps: np.ndarray  # time of each frame's slot on the input clock, seconds
    latency: float  # seconds from the clip's last input arriving to its motion
    compute: float = 0.0  # seconds the model took for this clip
    ahead: float = 0.0  # the part of `compute` spent before the clip's last input came (frames encoded ahead)


@dataclass
class StreamStats:
    clips: int
    frames: int
    frames_repeated: int  # gaps filled
    frames_skipped: int  # late frames
    frames_padded: int  # repeats completing a clip cut short by a clock jump or by close()
    audio_chunks_empty: int
    audio_chunks_invalid: int  # NaN or infinite samples, replaced by silence
    audio_samples_dropped: int  # 16 kHz samples: overlaps, audio far ahead of the video, audio past a jump
    audio_samples_filled: int  # 16 kHz samples of silence: gaps and dead audio
    audio_dead: int  # times the audio stopped and clips went on with silence
    clock_jumps_video: int  # new segments
    clock_jumps_audio: int
    timestamps_refused: int  # not finite, out of range, or one more frame in a row that jumps
    callback_errors: int
    clips_dropped: int  # by the full callback queue, or still queued when close() stopped waiting
    clips_unread_dropped: int  # pushed out of clips()'s buffer unread (expected when only on_clip is used)
    latency_p50_ms: float
    latency_p99_ms: float
    compute_p50_ms: float
    compute_p99_ms: float
    first_latency_ms: float
    boundary_jump: float  # mean L2 between the last frame of a clip and the first of the next
    within_clip_step: float  # mean L2 between consecutive frames inside clips, for comparison


COUNTERS = tuple(field.name for field in dataclasses.fields(StreamStats) if field.type == "int")


class StreamMeter:
    """Timing windows and motion smoothness, fed one clip at a time; the caller serializes calls."""

    def __init__(self, window: int = 1000) -> None:
        self.latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.computes: collections.deque[float] = collections.deque(maxlen=window)
        self.first_latency = math.nan
        self._last: np.ndarray | None = None
        self._jumps = [0.0, 0.0]  # sum, count
        self._steps = [0.0, 0.0]

    def add(self, clip: ClipMotion, new_segment: bool) -> None:
        motion = clip.motion
        if self._last is not None and len(motion) and not new_segment:
            self._jumps[0] += float(np.linalg.norm(motion[0] - self._last[-1]))
            self._jumps[1] += 1
        if len(motion) > 1:
            self._steps[0] += float(np.linalg.norm(np.diff(motion, axis=0), axis=1).sum())
            self._steps[1] += len(motion) - 1
        self._last = motion if len(motion) else self._last
        if math.isnan(self.first_latency):
            self.first_latency = clip.latency
        self.latencies.append(clip.latency)
        self.computes.append(clip.compute)

    def stats(self, counts: Mapping[str, int]) -> StreamStats:
        latencies, computes = self.latencies, self.computes
        return StreamStats(**{name: counts.get(name, 0) for name in COUNTERS},
                           latency_p50_ms=_percentile(latencies, 50), latency_p99_ms=_percentile(latencies, 99),
                           compute_p50_ms=_percentile(computes, 50), compute_p99_ms=_percentile(computes, 99),
                           first_latency_ms=self.first_latency * 1000,
                           boundary_jump=self._jumps[0] / max(self._jumps[1], 1),
                           within_clip_step=self._steps[0] / max(self._steps[1], 1))


def _percentile(values: collections.deque[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q)) if values else math.nan
