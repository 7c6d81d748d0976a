"""ListenerStream: listener motion from a live speaker, clip by clip, for robot and avatar software.

Feed it from any threads:
- `push_video(frame, t)`: a uint8 (H, W, 3) frame of any size, RGB or BGR as set by `color`, with its
  capture time t in seconds. Frames go on a 30 fps grid: slot = round((t - t0) * 30). A late frame
  whose slot is filled is skipped; a gap is filled by repeating the last frame. Both are counted.
- `push_audio(samples, sample_rate, t=None)`: a chunk of any length and rate (resampled to 16 kHz as
  it streams). Samples are float in [-1, 1] (any float dtype), int16 (scaled by 1/2^15) or int32
  (1/2^31); other dtypes are refused. Mono (N,), or 2-D in either layout, (N, C) or (C, N): the
  channel axis is the one with at most 8 entries and is averaged (where the channels cancel, one is heard
  alone: the loudest of the first such chunk, the same one after it); a chunk whose two axes could both
  be channels follows the layout of earlier chunks, or is refused. t is the time of the first sample;
  None means "right after the previous chunk". Chunks are laid end to end and t only detects a gap
  (filled with silence) or an overlap (dropped) longer than a frame, so jitter never shifts audio
  against video. Empty chunks are ignored; NaN or infinite samples become silence. All counted.

Bad input (a frame that is not uint8 (H, W, 3), a refused dtype or layout, float audio beyond
[-16, 16], a timestamp that is NaN, infinite or beyond 1e10 s, as nanoseconds would be, or a third
frame in a row that jumps, as milliseconds would) raises StreamInputError (a FadEdgeError and a
ValueError) at the call, before anything changes: the stream stays usable. So do timing settings
that cannot work (`AlignerConfig`).

Clock jumps: a timestamp more than `max_jump` seconds (default 2) from where its input has got to
is a jump (an NTP step, a clock switch, a long stall) and is never filled frame by frame. A video
jump starts a new segment: the clip in progress is emitted as a partial clip, the frame starts the
next clip, the audio is re-anchored to it and the model's context starts afresh (its first frames hear
silence before the anchor, as at a session's start, not the old segment's tail). An audio jump lays
the chunk end to end and reads later chunks on the shifted clock; but audio stamped on the old clock
just before a video jump, pushed after it (microphones lag cameras), belongs to the sealed clips
and is dropped, so the new clock's audio keeps its place. All counted; the work and memory of any
call stay bounded whatever the timestamps.

Dead audio: a clip whose frames are complete waits for its audio until `audio_timeout` seconds
(default 1) pass without any audio, or until `max_pending_clips` clips (default 4, 1.07 s of video)
wait. It then gets silence, as do later clips until audio returns (counted), so a camera thread only
ever waits when the model is slower than real time, and then for about one clip's compute.

Output: a worker thread encodes each clip's 8 new frames (earlier frames' features are kept for
`context_clips`), each frame's video as soon as the frame is placed and its audio as soon as that
has arrived too (the clip's last frame when the clip is complete), runs ELNet and emits a
`ClipMotion` (8, 56) to `clips()` and to `on_clip`. `on_clip` runs on its own thread from a queue
of `callback_queue` clips: a slow callback never blocks the stream; when the queue is full the
oldest waiting clip is dropped and counted; an exception from it is counted and the first is logged
(`logging`). `close()` may be called from `on_clip`. If the worker fails, `push_*`, `close()` and
`clips()` (once the clips made before are read) raise its error. The runner is warmed up in the
constructor, so the first clip's latency is an ordinary one.

Memory is bounded for any run length: the frames of unfinished clips, the audio they still need (at
most `max_audio_seconds` in all; older audio is forgotten and counted, and a cap too small for the
clips that may wait is refused, `aligner.audio_seconds_needed`) and fixed windows of
latencies and unread clips (`keep_clips`, 0 for none when `on_clip` is all you use). See
`fad_edge.runtime.aligner` for the timing rules in full.

Latency is measured from the moment a clip's last input arrived (its 8th frame, or the audio its
last mel window needs, 16 ms past its end) to its motion, any wait behind earlier clips included;
`compute` is the model's time alone, the frames encoded ahead included. `stats()` gives their p50/p99
over the last 1000 clips.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from fad_edge.constants import CLIP_LEN
from fad_edge.data.inputs import resize_frames
from fad_edge.errors import DataError, StreamInputError
from fad_edge.runtime.aligner import AlignerConfig, ClipAligner, PlacedAudio, ReadyClip
from fad_edge.runtime.callback_queue import CallbackQueue
from fad_edge.runtime.clip_encoder import ClipEncoder
from fad_edge.runtime.face import Box, FaceCropper
from fad_edge.runtime.stream_inputs import check_frame, check_time
from fad_edge.runtime.stream_stats import ClipMotion, StreamMeter, StreamStats
from fad_edge.sampling import DEFAULT_SAMPLER

if TYPE_CHECKING:
    from fad_edge.runtime.base import ClipRunner

# A stream's calls are small (one clip, or a frame ahead), and between them the CPU idles: waking a
# thread pool costs more than a second core gives. On the 2-core EPYC, with frames encoded ahead,
# one thread answered clips sooner than two (p99: small 8.0 vs 10.3 ms, paper 20.4 vs 22.3 ms;
# `fad-edge bench` measures the stream so) and leaves the other core to the camera and the robot.
STREAM_THREADS = 1
CALLBACK_DRAIN_SECONDS = 5.0  # close() waits this long for queued callbacks, then counts the rest as dropped


class ListenerStream:
    """See the module docstring. Use as a context manager or call `close()` to flush the last clip.

    `encode_ahead=False` encodes each clip's frames only once the clip is complete (the same motion,
    later: for comparison). `owns_runner=True` (what `from_export` passes): the stream closes the
    runner when it stops, on the worker thread that ran it, also when it fails to start. `timing`
    takes AlignerConfig's fields: max_jump, audio_timeout, max_pending_clips, max_audio_seconds.
    `clock` (monotonic seconds) times the dead-audio timeout; a simulation may pass its own.
    """

    def __init__(self, runner: ClipRunner, color: str = "rgb", face: str = "none", box: Box | None = None,
                 on_clip: Callable[[ClipMotion], None] | None = None, carry_motion: bool = False,
                 keep_clips: int = 256, callback_queue: int = 16, clock: Callable[[], float] = time.monotonic,
                 encode_ahead: bool = True, owns_runner: bool = False, **timing: Any) -> None:
        try:
            self._set_up(runner, color, face, box, on_clip, carry_motion, keep_clips, callback_queue, clock,
                         encode_ahead, timing)
        except BaseException:
            if owns_runner:  # no worker has run it: this thread may close it
                _close_runner(runner)
            raise
        # From here the worker thread owns an owned runner: it runs it and closes it when it stops, on
        # that thread, as a thread-bound CUDA context (pycuda's) requires.
        self.owns_runner = owns_runner
        self._worker = threading.Thread(target=self._work, name="listener-stream", daemon=True)
        self._worker.start()
        self._warm.wait()
        if self._error is not None:
            self._worker.join()  # it closes an owned runner before it ends
            self._callbacks.close(0)
            raise RuntimeError(f"the listener stream's warm-up failed: {self._error}") from self._error

    def _set_up(self, runner: ClipRunner, color: str, face: str, box: Box | None,
                on_clip: Callable[[ClipMotion], None] | None, carry_motion: bool, keep_clips: int,
                callback_queue: int, clock: Callable[[], float], encode_ahead: bool, timing: dict[str, Any]) -> None:
        """Everything but the worker: each setting checked here, before a thread runs the runner."""
        if color not in ("rgb", "bgr"):
            raise StreamInputError(f"color must be rgb or bgr, got {color!r}")
        self.runner, self.config, self.color, self.clock = runner, runner.config, color, clock
        try:
            self.cropper = FaceCropper(face, box)
        except ValueError as error:  # an unknown mode or a malformed box: the stream's one input error type
            raise StreamInputError(str(error)) from None
        self.aligner = ClipAligner(AlignerConfig(**timing))
        self.max_pending_clips = self.aligner.config.max_pending_clips
        self.encoder = ClipEncoder(runner, carry_motion)
        self.encode_ahead = encode_ahead
        self._lock = threading.Condition()
        self._crop_lock = threading.Lock()  # the face tracker keeps state between frames
        self._closing = self._closed = False
        self._error: BaseException | None = None
        self._complete_at: dict[int, float] = {}  # clip -> perf_counter when its last input arrived
        self._stamped = 0
        self._output: collections.deque[ClipMotion] = collections.deque(maxlen=keep_clips)
        self._counts: collections.Counter[str] = collections.Counter()
        self._meter = StreamMeter()
        self._callbacks: CallbackQueue[ClipMotion] = CallbackQueue(on_clip, callback_queue, "listener-callbacks")
        self._warm = threading.Event()

    @classmethod
    def from_export(cls, folder: Path, precision: str | None = None, threads: int = STREAM_THREADS,
                    backend: str = "ort", seed: int = 0, sampler: str = DEFAULT_SAMPLER,
                    **options: Any) -> ListenerStream:
        """A stream over a runner it opens and owns: it closes the runner when it stops, on its worker thread.

        `precision`: None is the backend's first (fp32 for "ort", fp16 for "trt", which runs nothing else).

        `sampler`: "mean" (the same motion for the same speaker, every run) or "diverse" (a draw from the
        reactions the model learned; see `fad_edge.sampling`).
        """
        from fad_edge.runtime.select import open_runner

        runner = open_runner(folder, backend, precision, seed=seed, threads=threads, sampler=sampler)
        return cls(runner, owns_runner=True, **options)  # closes the runner itself, also when it fails

    # -- input -------------------------------------------------------------------------------
    def push_video(self, frame: np.ndarray, t: float) -> None:
        frame, t = check_frame(frame), self._checked_time(t, "frame")
        if self.color == "bgr":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        with self._crop_lock:
            try:
                cropped = self.cropper(frame)
            except DataError as error:  # a box outside this frame: the stream's one input error type
                raise StreamInputError(str(error)) from None
            small = resize_frames(cropped[None], self.config.image_size)[0]
        with self._lock:
            self._check_open()
            try:
                self.aligner.push_frame(small, t, self.clock())
            except StreamInputError:  # a timestamp in the wrong unit: well-formed, but refused all the same
                self._counts["timestamps_refused"] += 1
                raise
            self._stamp_complete()
            self._lock.notify_all()
            # Room for the next frame: only when the model is slower than real time does this wait,
            # for about one clip's compute (clips waiting for audio get silence before this fills).
            while self.aligner.buffered_frames() >= (self.max_pending_clips + 1) * CLIP_LEN and self._error is None:
                self._lock.wait(timeout=0.1)

    def push_audio(self, samples: np.ndarray, sample_rate: int, t: float | None = None) -> None:
        t = None if t is None else self._checked_time(t, "audio")
        with self._lock:
            self._check_open()
            self.aligner.push_audio(samples, sample_rate, t, self.clock())
            self._stamp_complete()
            self._lock.notify_all()

    def _checked_time(self, t: float, what: str) -> float:
        try:
            return check_time(t, what)
        except StreamInputError:
            with self._lock:
                self._counts["timestamps_refused"] += 1
            raise

    def _stamp_complete(self) -> None:
        """Under the lock: note when each clip's last input arrived, the start of its latency."""
        now = time.perf_counter()
        for index in range(max(self._stamped, self.aligner.taken), self.aligner.complete_clips()):
            self._complete_at[index] = now
            self._stamped = index + 1

    def _check_open(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the listener stream's worker failed: {self._error}") from self._error
        if self._closing:
            raise RuntimeError("the listener stream is closed")

    # -- output ------------------------------------------------------------------------------
    def clips(self, timeout: float | None = None) -> Iterator[ClipMotion]:
        """Clips as they are made, until the stream is closed and drained (or `timeout` seconds pass with no clip).

        If the worker failed, the clips it made are yielded and then its error is raised, as `push_*` and
        `close()` raise it.
        """
        while True:
            with self._lock:
                # wait_for keeps its deadline across wake-ups: pushes wake this condition too.
                self._lock.wait_for(lambda: bool(self._output) or self._closed, timeout)
                if not self._output:
                    if self._error is not None:
                        raise RuntimeError(f"the listener stream's worker failed: {self._error}") from self._error
                    return
                item = self._output.popleft()
            yield item

    def stats(self) -> StreamStats:
        with self._lock:
            counts = self._counts + self.aligner.counts
            counts.update(callback_errors=self._callbacks.errors, clips_dropped=self._callbacks.dropped)
            return self._meter.stats(counts)

    def close(self) -> None:
        """Flush the last (partial) clip, deliver the queued callbacks and stop; close an owned runner."""
        with self._lock:
            if not self._closing:
                self.aligner.finish()
                self._closing = True
            self._lock.notify_all()
        self._worker.join()  # which closed an owned runner on its own thread
        self._callbacks.close(CALLBACK_DRAIN_SECONDS)
        if self._error is not None:
            raise RuntimeError(f"the listener stream's worker failed: {self._error}") from self._error

    def __enter__(self) -> ListenerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker ------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._serve()
        finally:
            if self.owns_runner:
                self._close_owned_runner()

    def _serve(self) -> None:
        try:
            self.encoder.warm_up()  # here, not in the caller: a TensorRT context belongs to this thread
        except BaseException as error:
            self._fail(error)
        finally:
            self._warm.set()
        try:
            while self._error is None and (task := self._next_task()) is not None:
                if isinstance(task, _Ahead):
                    if task.frames is not None:
                        self.encoder.encode_ahead(task.clip, task.frames)
                    if task.audio is not None:
                        self.encoder.encode_audio_ahead(task.clip, task.audio)
                    continue
                clip, ready = task
                started = time.perf_counter()
                motion = self.encoder(clip)
                self._emit(clip, motion, ready, started, self.encoder.ahead_seconds)
        except BaseException as error:  # surfaced to the caller on its next push or close
            self._fail(error)

    def _next_task(self) -> tuple[ReadyClip, float] | _Ahead | None:
        """The next ready clip; else the next clip's placed input not yet encoded; None once closed and drained."""
        with self._lock:
            while True:
                clip = self.aligner.take_ready(self.clock(), closing=self._closing)
                if clip is not None:
                    self._stamped = max(self._stamped, clip.index + 1)
                    self._lock.notify_all()
                    return clip, self._complete_at.pop(clip.index, time.perf_counter())
                if self._closing:
                    self._closed = True
                    self._lock.notify_all()
                    return None
                if self.encode_ahead:
                    index = self.aligner.taken
                    placed = self.aligner.placed_frames(self.encoder.encoded_ahead(index))
                    audio = self.aligner.placed_audio(self.encoder.heard_ahead(index))
                    if placed or audio is not None:
                        return _Ahead(index, np.stack(placed) if placed else None, audio)
                # Wake to check the dead-audio timeout while clips wait; pushes wake it at once.
                self._lock.wait(timeout=0.05 if self.aligner.backlog() else 0.5)

    def _emit(self, clip: ReadyClip, motion: np.ndarray, ready: float, started: float, ahead: float) -> None:
        """`ahead`: the model's seconds on this clip's frames before it was taken (encoded ahead)."""
        done = time.perf_counter()
        out = ClipMotion(clip.index, motion, clip.times, done - ready, done - started + ahead, ahead)
        with self._lock:
            self._meter.add(out, clip.new_segment)
            self._counts["clips"] += 1
            if self._output.maxlen:  # keep_clips=0: no clips() buffer, on_clip only
                self._counts["clips_unread_dropped"] += len(self._output) == self._output.maxlen
                self._output.append(out)
            self._lock.notify_all()
        self._callbacks.put(out)

    def _close_owned_runner(self) -> None:
        """Close the runner this stream opened, on the worker's thread; a failure is the stream's error."""
        try:
            _close_runner(self.runner)
        except BaseException as error:
            if self._error is None:
                self._fail(error)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._error = error
            self._closed = True
            self._lock.notify_all()


@dataclass(frozen=True)
class _Ahead:
    """Work for an idle worker: the next clip's placed frames whose video or audio features it lacks."""

    clip: int
    frames: np.ndarray | None  # placed images not yet encoded
    audio: PlacedAudio | None  # frames whose audio has arrived and is not yet encoded


def _close_runner(runner: ClipRunner) -> None:
    close = getattr(runner, "close", None)  # part of the runner contract; older runners may lack it
    if callable(close):
        close()
