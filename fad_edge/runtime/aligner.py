"""Frame slots and audio samples from timestamps: the thread-free core of ListenerStream.

`ClipAligner` places frames and audio chunks on one timeline and hands out clips of 8 frames with
the 16 kHz audio their mel windows need. It knows nothing of threads or models: the caller passes
`now` (any monotonic clock, used only for the dead-audio timeout) and may drive it from a test.

Timing rules (the user documentation is in `fad_edge.runtime.stream`):
- A segment maps input time to slots: slot = segment_slot + round((t - segment_origin) * 30). A late
  frame (slot already filled) is skipped; a gap is filled by repeating the last frame.
- A frame more than `max_jump` seconds from the next expected slot, either way (an NTP step, a
  switch between wall and monotonic clocks, a long camera stall), starts a new segment instead of
  being filled: the clip in progress is sealed as a partial clip, the frame starts the next clip, the
  audio is re-anchored there, and the model's context starts afresh (its first frames' mel windows hear
  silence before the anchor, as a session's start does, not the old segment's tail). Work and memory per call are
  therefore bounded by `max_jump` whatever the timestamps. A third frame in a row that would jump is
  refused (StreamInputError): such timestamps are in the wrong unit, milliseconds say.
- Audio chunks are laid end to end; a timestamp only detects a gap (filled with silence) or an
  overlap (dropped) of more than one frame, so jitter never shifts audio against video. An audio
  timestamp more than `max_jump` from where the audio has got to is taken as its clock jumping:
  the chunk is laid end to end and later chunks are read on the shifted clock (counted). Except
  after a video jump: a chunk stamped on the old clock, just before the jump, is audio captured
  before it and pushed late (a microphone lags the camera); its clips are sealed, so it is dropped
  (counted), and the new clock's audio keeps its place against the video.
- A clip whose frames are complete waits for its audio until `audio_timeout` seconds pass without
  any audio, or until `max_pending_clips` clips wait: the audio is then dead (or too late) and the
  clip gets silence, as do later clips until a chunk arrives (counted).
- At most `max_audio_seconds` of audio is kept (the oldest is forgotten, counted): a setting too small
  for the `max_pending_clips` clips that may wait plus a second of microphone lead is refused, since
  it would forget audio that waiting clips have not heard (`audio_seconds_needed`).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from fad_edge.constants import CLIP_LEN, FPS, MELS_PER_FRAME, N_FFT, SAMPLE_RATE
from fad_edge.data.audio_features import mel_centres
from fad_edge.errors import StreamInputError
from fad_edge.runtime.stream_inputs import AudioLayout, check_rate, check_time, mono_samples

# A clock jump is an event; frames that each jump are timestamps in the wrong unit (or a broken clock):
# refused from the third in a row, instead of a segment and a context reset per frame.
MAX_JUMPS_IN_A_ROW = 3


@dataclass(frozen=True)
class AlignerConfig:
    max_jump: float = 2.0  # seconds; a timestamp further than this from the expected one is a clock jump
    audio_timeout: float | None = 1.0  # seconds without audio before waiting clips get silence (None: no timeout)
    max_pending_clips: int = 4  # clips of pushed frames that may wait for audio or for the model
    max_audio_seconds: float = 10.0  # audio ahead of the video kept at most (a stalled camera); oldest dropped

    def __post_init__(self) -> None:
        """Refuse settings that would hang a push, call every frame a jump or forget the audio a clip needs."""
        _check_seconds("max_jump", self.max_jump, above=2 / FPS)
        _check_seconds("max_audio_seconds", self.max_audio_seconds, above=2 * CLIP_LEN / FPS)
        if self.audio_timeout is not None:
            _check_seconds("audio_timeout", self.audio_timeout, above=0.0)
        pending = self.max_pending_clips
        if isinstance(pending, bool) or not isinstance(pending, int) or pending < 1:
            raise StreamInputError(f"max_pending_clips must be a whole number of clips, 1 or more, got {pending!r}")
        needed = audio_seconds_needed(pending)
        if self.max_audio_seconds < needed:
            raise StreamInputError(
                f"max_audio_seconds ({self.max_audio_seconds:g}) must hold the audio of the "
                f"max_pending_clips={pending} clips that may wait, and a second of microphone lead: "
                f"at least {needed:.2f}")


# A microphone may run this far ahead of the camera without its audio counting against the waiting clips'.
MICROPHONE_LEAD_SECONDS = 1.0


def audio_seconds_needed(max_pending_clips: int) -> float:
    """The audio the aligner must keep for its waiting frames: up to max_pending_clips + 1 clips of them wait
    (the stream's push blocks beyond), one more clip's windows reach past them, plus the microphone's lead.
    A cap below this drops audio that waiting clips have not heard yet: they would get silence."""
    return (max_pending_clips + 2) * CLIP_LEN / FPS + 2 * N_FFT / SAMPLE_RATE + MICROPHONE_LEAD_SECONDS


def _check_seconds(name: str, value: object, above: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= above:
        raise StreamInputError(f"{name} must be a number of seconds above {above:.3g}, got {value!r}")


@dataclass
class ReadyClip:
    index: int  # clip number since the stream started; its first frame is slot index * 8
    frames: np.ndarray  # (8, ...) frames; a partial clip repeats its last frame
    count: int  # real frames: fewer than 8 for the clip sealed at a clock jump or at the end
    times: np.ndarray  # (count,) grid time of each frame on the input clock, seconds
    audio: np.ndarray  # 16 kHz samples covering the clip's mel windows; outside them is silence
    audio_offset: int  # absolute sample index of audio[0]
    new_segment: bool  # the first clip of the stream or after a clock jump: context starts afresh


def slot_sample(slot: int) -> int:
    """The 16 kHz sample at which video slot `slot` starts."""
    return int(round(slot * SAMPLE_RATE / FPS))


def frame_audio_needed(slot: int) -> int:
    """Absolute 16 kHz sample index the last mel window of video slot `slot` reaches."""
    return int(mel_centres(1, (slot + 1) * MELS_PER_FRAME - 1)[0]) + N_FFT // 2


def frame_audio_start(slot: int) -> int:
    """Absolute 16 kHz sample index where the first mel window of video slot `slot` starts."""
    return int(mel_centres(1, slot * MELS_PER_FRAME)[0]) - N_FFT // 2


def audio_needed(clip: int) -> int:
    """Absolute 16 kHz sample index the clip's last mel window reaches."""
    return frame_audio_needed((clip + 1) * CLIP_LEN - 1)


@dataclass
class PlacedAudio:
    """Frames start..stop-1 of the next clip, whose video is placed and whose audio is all there."""

    start: int
    stop: int
    audio: np.ndarray  # 16 kHz samples their mel windows read
    audio_offset: int  # absolute sample index of audio[0]
    new_segment: bool  # the clip starts a segment: its mel history starts from silence


class ClipAligner:
    """See the module docstring. Not thread-safe: the caller holds one lock around every call."""

    def __init__(self, config: AlignerConfig | None = None) -> None:
        self.config = config or AlignerConfig()
        self.counts: collections.Counter[str] = collections.Counter()
        self._slots: list[tuple[np.ndarray, float, bool]] = []  # from slot taken * 8: frame, grid time, pushed?
        self._pushed = 0  # frames in _slots that were pushed (not repeats or padding)
        self._last_frame: np.ndarray | None = None
        self._next_slot = self._taken = self._sealed = 0  # clips below _sealed are ready with whatever audio
        self._partial: dict[int, int] = {}  # real frames of sealed partial clips
        self._segment_starts = {0}
        self._origin: float | None = None  # input time of slot _segment_slot
        self._segment_slot = 0
        self._audio = np.zeros(0, np.float32)  # 16 kHz samples from absolute index _audio_offset
        self._audio_offset = 0
        self._audio_clock = 0.0  # timeline seconds of input audio placed (slot k is at k / 30)
        self._audio_shift = 0.0  # added to audio timestamps after an audio clock jump
        # After a video clock jump: (offset, end) of the segment before it, whose timeline seconds are t + offset
        # and which ended at `end`. Audio stamped on that clock and pushed late is that segment's, not a jump.
        self._before_jump: tuple[float, float] | None = None
        self._jumps_in_a_row = 0  # frames in a row that each started a segment
        self._resamplers: dict[int, Any] = {}
        self._layout: AudioLayout | None = None
        self._last_audio_at: float | None = None
        self._audio_dead = False

    # -- input -------------------------------------------------------------------------------
    def push_frame(self, frame: np.ndarray, t: float, now: float) -> None:
        t = check_time(t, "frame")
        if self._last_audio_at is None:
            self._last_audio_at = now  # the audio timeout runs from the stream's first input
        if self._origin is None:
            self._origin = t
        position = self._segment_slot + (t - self._origin) * FPS
        if abs(position - self._next_slot) > self.config.max_jump * FPS:
            if self._jumps_in_a_row + 1 >= MAX_JUMPS_IN_A_ROW:
                raise StreamInputError(
                    f"{MAX_JUMPS_IN_A_ROW} frames in a row were each more than max_jump ({self.config.max_jump:g} s) "
                    f"from where the video had got to (this one at t={t!r}): frame timestamps must be seconds, "
                    "about 1/30 apart (milliseconds divided by 1000)")
            self._jumps_in_a_row += 1
            self._new_segment(t)
            position = self._next_slot
        else:
            self._jumps_in_a_row = 0
        slot = int(round(position))
        if slot < self._next_slot:
            self.counts["frames_skipped"] += 1
            return
        fill = frame if self._last_frame is None else self._last_frame
        while self._next_slot < slot:  # a gap, at most max_jump long: repeat the last frame
            self._append(fill, pushed=False)
            self.counts["frames_repeated"] += 1
        self._append(frame, pushed=True)
        self.counts["frames"] += 1

    def push_audio(self, samples: object, sample_rate: object, t: float | None, now: float) -> None:
        rate = check_rate(sample_rate)
        t = None if t is None else check_time(t, "audio")
        mono, self._layout = mono_samples(samples, self._layout)
        if mono.size == 0:
            self.counts["audio_chunks_empty"] += 1
            return
        self._last_audio_at = now
        if not np.all(np.isfinite(mono)):
            self.counts["audio_chunks_invalid"] += 1
            mono = np.zeros_like(mono)
        if t is not None:  # compare in input time, before any resampler holds samples back
            if self._origin is None:
                self._origin = t - self._audio_clock
            gap = self._segment_slot / FPS + (t + self._audio_shift - self._origin) - self._audio_clock
            if abs(gap) > self.config.max_jump and self._before_the_jump(t, len(mono) / rate):
                self.counts["audio_samples_dropped"] += len(mono) * SAMPLE_RATE // rate  # its clips are sealed
                return
            if abs(gap) <= self.config.max_jump:
                self._before_jump = None  # audio on the new clock has come: no late audio follows it
            if abs(gap) > self.config.max_jump:
                self._audio_shift -= gap
                self.counts["clock_jumps_audio"] += 1
                gap = 0.0
            step = int(round(gap * rate))
            if step > rate // FPS:  # a real gap: silence
                mono = np.concatenate([np.zeros(step, np.float32), mono])
                self.counts["audio_samples_filled"] += step * SAMPLE_RATE // rate
            elif -step > rate // FPS:  # a real overlap (or audio before the start): drop it
                cut = min(-step, len(mono))
                mono = mono[cut:]
                self.counts["audio_samples_dropped"] += cut * SAMPLE_RATE // rate
        if mono.size:
            self._audio_dead = False
            self._audio_clock += len(mono) / rate
            self._append_audio(self._resample(mono, rate))

    def finish(self) -> None:
        """No more input: what the resamplers hold joins the buffer."""
        self._append_audio(self._flush_resamplers())

    # -- output ------------------------------------------------------------------------------
    @property
    def taken(self) -> int:
        """Clips handed out so far."""
        return self._taken

    def backlog(self) -> int:
        """Clips complete in frames and not taken."""
        return len(self._slots) // CLIP_LEN

    def buffered_frames(self) -> int:
        """Pushed frames held (repeats share their frame's memory and are not counted)."""
        return self._pushed

    def buffered_audio(self) -> int:
        return len(self._audio)

    def complete_clips(self) -> int:
        """How many clips since the start have had all their input: taken ones plus those ready now."""
        k = self._taken
        while k < self._taken + self.backlog() and (k < self._sealed or self._has_audio(k)):
            k += 1
        return k

    def placed_frames(self, start: int) -> list[np.ndarray]:
        """Frames `start` onwards of the next clip to be taken that are already placed (at most 8 - start).

        A placed frame never changes, whatever comes later (gaps and jumps only append), so a stream
        may encode it while the clip's later frames and audio are still awaited.
        """
        return [frame for frame, _, _ in self._slots[start:CLIP_LEN]]

    def placed_audio(self, start: int) -> PlacedAudio | None:
        """The audio of the next clip's frames from `start` on, for those whose video is placed and whose
        samples have all arrived; None if there are none. Never the clip's last frame: its mel windows
        reach past the clip's end, into audio that a clock jump may still replace. Samples up to the
        clip's last frame are final once placed: later input only appends (or, when the audio runs
        `max_audio_seconds` ahead of a stalled camera, drops the oldest, which these frames have heard).
        """
        first_slot = self._taken * CLIP_LEN
        end = self._audio_offset + len(self._audio)
        stop = start
        while stop < min(len(self._slots), CLIP_LEN - 1) and frame_audio_needed(first_slot + stop) < end:
            stop += 1
        if stop <= start:
            return None
        begin = max(self._audio_start(self._taken, first_slot + start) - self._audio_offset, 0)
        until = max(frame_audio_needed(first_slot + stop - 1) + 1 - self._audio_offset, 0)
        return PlacedAudio(start, stop, self._audio[begin:until].copy(), self._audio_offset + begin,
                           self._taken in self._segment_starts)

    def take_ready(self, now: float, closing: bool = False) -> ReadyClip | None:
        """The next clip if its frames and audio are there (or the audio is dead), else None.

        `closing`: no more input will come; the last partial clip is padded and all clips are taken.
        """
        k = self._taken
        if len(self._slots) < CLIP_LEN and not (closing and self._slots):
            return None
        if not closing and k >= self._sealed and not self._has_audio(k):
            if not self._audio_late(now):
                return None
            if not self._audio_dead:
                self.counts["audio_dead"] += 1
                self._audio_dead = True
            self._append_audio(self._flush_resamplers())
            self._extend_silence(audio_needed(k) + 1)
            self._audio_clock = max(self._audio_clock, (self._audio_offset + len(self._audio)) / SAMPLE_RATE)
        taken, self._slots = self._slots[:CLIP_LEN], self._slots[CLIP_LEN:]
        self._pushed -= sum(pushed for _, _, pushed in taken)
        self.counts["frames_padded"] += CLIP_LEN - len(taken)
        count = self._partial.pop(k, len(taken))
        frames = np.stack([frame for frame, _, _ in taken] + [taken[-1][0]] * (CLIP_LEN - len(taken)))
        first = self._audio_start(k, k * CLIP_LEN)
        start, end = max(first - self._audio_offset, 0), max(audio_needed(k) + 1 - self._audio_offset, 0)
        clip = ReadyClip(k, frames, count, np.array([time for _, time, _ in taken[:count]]),
                         self._audio[start:end].copy(), self._audio_offset + start, k in self._segment_starts)
        self._segment_starts.discard(k)
        self._taken += 1
        keep_from = audio_needed(k) - 2 * N_FFT  # later clips' mel windows start after this
        if keep_from > self._audio_offset:
            cut = min(keep_from - self._audio_offset, len(self._audio))
            self._audio, self._audio_offset = self._audio[cut:], self._audio_offset + cut
        return clip

    # -- internals ---------------------------------------------------------------------------
    def _audio_start(self, clip: int, slot: int) -> int:
        """The first sample that slot `slot` of clip `clip` hears: its first mel window's start, but never
        before the anchor of a segment's first clip. There the context starts afresh, as at a session's
        start, where the windows reaching before sample 0 hear silence; behind the anchor lies the old
        segment's audio."""
        start = frame_audio_start(slot)
        return max(start, slot_sample(clip * CLIP_LEN)) if clip in self._segment_starts else start

    def _append(self, frame: np.ndarray, pushed: bool) -> None:
        assert self._origin is not None
        self._slots.append((frame, self._origin + (self._next_slot - self._segment_slot) / FPS, pushed))
        self._pushed += pushed
        self._last_frame = frame
        self._next_slot += 1

    def _new_segment(self, t: float) -> None:
        """Seal the clip in progress, start the next clip at input time t and re-anchor the audio there."""
        self.counts["clock_jumps_video"] += 1
        start = -(-self._next_slot // CLIP_LEN) * CLIP_LEN
        if start > self._next_slot and self._last_frame is not None:
            self._partial[start // CLIP_LEN - 1] = CLIP_LEN - (start - self._next_slot)
            while self._next_slot < start:
                self._append(self._last_frame, pushed=False)
                self.counts["frames_padded"] += 1
        assert self._origin is not None
        self._before_jump = (self._segment_slot / FPS - self._origin + self._audio_shift, start / FPS)
        self._sealed, self._segment_slot, self._origin = start // CLIP_LEN, start, t
        self._segment_starts.add(self._sealed)
        anchor = slot_sample(start)
        self._append_audio(self._flush_resamplers())
        end = self._audio_offset + len(self._audio)
        if end > anchor:  # audio placed past the last frame of the old segment is forgotten
            keep = max(anchor - self._audio_offset, 0)
            self.counts["audio_samples_dropped"] += len(self._audio) - keep
            self._audio = self._audio[:keep]
            self._audio_offset = anchor if keep == 0 else self._audio_offset
        self._extend_silence(anchor)
        self._audio_clock = start / FPS

    def _before_the_jump(self, t: float, seconds: float) -> bool:
        """Whether a chunk stamped t (lasting `seconds`) lies, on the clock before the last video jump, just before
        that jump: audio captured before it and pushed after it (microphones lag cameras)."""
        if self._before_jump is None:
            return False
        offset, end = self._before_jump
        return end - self.config.max_jump - seconds <= t + offset <= end + 1 / FPS

    def _has_audio(self, clip: int) -> bool:
        return self._audio_offset + len(self._audio) > audio_needed(clip)

    def _audio_late(self, now: float) -> bool:
        timeout = self.config.audio_timeout
        silent_for = now - (self._last_audio_at if self._last_audio_at is not None else now)
        return (self._audio_dead or self.backlog() >= self.config.max_pending_clips
                or (timeout is not None and silent_for >= timeout))

    def _extend_silence(self, to: int) -> None:
        """Silence up to absolute sample `to`; a long stretch moves the buffer instead of allocating it."""
        end = self._audio_offset + len(self._audio)
        if to <= end:
            return
        self.counts["audio_samples_filled"] += to - end
        if to - end > self.config.max_audio_seconds * SAMPLE_RATE:
            self.counts["audio_samples_dropped"] += len(self._audio)
            self._audio, self._audio_offset = np.zeros(0, np.float32), to
        else:
            self._audio = np.concatenate([self._audio, np.zeros(to - end, np.float32)])

    def _append_audio(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        self._audio = np.concatenate([self._audio, samples])
        excess = len(self._audio) - int(self.config.max_audio_seconds * SAMPLE_RATE)
        if excess > 0:  # audio far ahead of the video (a stalled camera): forget the oldest
            self._audio, self._audio_offset = self._audio[excess:], self._audio_offset + excess
            self.counts["audio_samples_dropped"] += excess

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """To 16 kHz with one streaming resampler per input rate; a rate change flushes the old one."""
        flushed = self._flush_resamplers(keep=rate)
        if rate == SAMPLE_RATE:
            return np.concatenate([flushed, samples])
        stream = self._resamplers.setdefault(rate, soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32"))
        return np.concatenate([flushed, stream.resample_chunk(samples).astype(np.float32)])

    def _flush_resamplers(self, keep: int | None = None) -> np.ndarray:
        """The samples resamplers still hold, from all but the `keep` rate."""
        out = [np.zeros(0, np.float32)]
        for rate in [r for r in self._resamplers if r != keep]:
            tail = self._resamplers.pop(rate).resample_chunk(np.zeros(0, np.float32), last=True)
            out.append(tail.astype(np.float32))
        return np.concatenate(out)
