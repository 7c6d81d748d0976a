"""ListenerStream: listener motion from a live speaker, clip by clip, for robot and avatar software.

Feed it from any threads:
- `push_video(frame, t)`: one frame of any size, uint8 (H, W, 3), RGB or BGR as set by `color`,
  with its capture time t in seconds. Frames are placed on a 30 fps grid from the first time seen:
  frame slot k = round((t - t0) * 30). A late frame whose slot is already filled is skipped; a gap is
  filled by repeating the last frame. Both are counted in `stats()`. Frames may change size: each
  is cropped and resized on its own.
- `push_audio(samples, sample_rate, t=None)`: a mono chunk of any length and rate (resampled to
  16 kHz by a streaming resampler). t is the time of its first sample; None means "right after the
  previous chunk". Chunks are laid end to end; t is used only to detect a real gap (filled with
  silence) or overlap (dropped), more than one video frame long, so timestamp jitter never shifts
  audio against video. Empty chunks are ignored; chunks with NaN or infinite samples are replaced
  by silence of the same length. Both are counted.

Whenever the 8 frames of a clip and the audio they need (up to 16 ms past the clip's end, for the
last mel window) have arrived, a worker thread encodes those 8 frames only (earlier frames'
features are kept for `context_clips`), runs ELNet, and emits a `ClipMotion` (8, 56) through the
`on_clip` callback (called in the worker thread) and through `clips()`. A caller pushing faster
than clips are computed waits, at most about one clip's compute, so memory stays bounded: only the
frames of unfinished clips, the audio they still need (at most `max_audio_seconds`: audio far
ahead of a stalled camera is forgotten, oldest first, and counted) and a fixed window of latencies
and unread clips are kept.

With `carry_motion`, each clip's sampling starts from the previous clip's last frame instead of the
mean motion (as SDEdit does), which reduces the jump at clip boundaries; `stats()` reports the
mean boundary jump either way.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fad_edge.constants import CLIP_LEN, FPS, MELS_PER_FRAME, N_FFT, SAMPLE_RATE
from fad_edge.data.audio_features import frame_windows, log_mel, mel_centres
from fad_edge.runtime.base import ClipRunner
from fad_edge.runtime.face import Box, FaceCropper
from fad_edge.data.inputs import images_from_frames, resize_frames


@dataclass
class ClipMotion:
    index: int  # clip number since the stream started
    motion: np.ndarray  # (8, 56) de-normalized FLAME coefficients (fewer rows for a final partial clip)
    timestamps: np.ndarray  # capture time of each frame, seconds
    latency: float  # seconds from the clip's last input arriving to its motion


@dataclass
class StreamStats:
    clips: int
    frames: int
    frames_repeated: int
    frames_skipped: int
    audio_chunks_empty: int
    audio_chunks_invalid: int
    audio_samples_dropped: int
    latency_p50_ms: float
    latency_p99_ms: float
    callback_errors: int
    boundary_jump: float  # mean L2 between the last frame of a clip and the first of the next
    within_clip_step: float  # mean L2 between consecutive frames inside clips, for comparison


class ListenerStream:
    """See the module docstring. Use as a context manager or call `close()` to flush the last clip."""

    def __init__(self, runner: ClipRunner, color: str = "rgb", face: str = "none", box: Box | None = None,
                 on_clip: Callable[[ClipMotion], None] | None = None, carry_motion: bool = False,
                 max_pending_clips: int = 4, keep_clips: int = 256, max_audio_seconds: float = 10.0) -> None:
        if color not in ("rgb", "bgr"):
            raise ValueError(f"color must be rgb or bgr, got {color!r}")
        self.runner, self.config = runner, runner.config
        self.color, self.on_clip, self.carry_motion = color, on_clip, carry_motion
        self.cropper = FaceCropper(face, box)
        self.max_pending_clips = max_pending_clips
        self.max_audio_seconds = max_audio_seconds
        self._lock = threading.Condition()
        self._origin: float | None = None
        self._frames: list[np.ndarray] = []  # model-size frames from slot _clip * 8 on
        self._times: list[float] = []
        self._next_slot = 0
        self._audio = np.zeros(0, np.float32)  # 16 kHz samples from absolute index _audio_offset
        self._audio_offset = 0
        self._audio_clock = 0.0  # seconds of input audio placed so far, from the origin
        self._resamplers: dict[int, object] = {}
        self._closing = False
        self._closed = False
        self._ready_at: dict[int, float] = {}
        self._output: collections.deque[ClipMotion] = collections.deque(maxlen=keep_clips)
        self._latencies: collections.deque[float] = collections.deque(maxlen=1000)
        self._counts = collections.Counter()
        self._jump_sum, self._jump_count, self._step_sum, self._step_count = 0.0, 0, 0.0, 0
        # Worker-only state.
        self._clip = 0
        self._generator = np.random.default_rng(runner.seed)
        self._mel_history = np.zeros((0, self.config.n_mels), np.float32)
        self._features = np.zeros((self.config.context_clips * CLIP_LEN, self.config.condition_dim), np.float32)
        self._previous: np.ndarray | None = None
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._work, name="listener-stream", daemon=True)
        self._worker.start()

    @classmethod
    def from_export(cls, folder: Path, precision: str = "fp32", threads: int = 2, backend: str = "ort",
                    seed: int = 0, **options) -> "ListenerStream":
        from fad_edge.runtime.select import open_runner

        return cls(open_runner(folder, backend, precision, seed=seed, threads=threads), **options)

    # -- input -------------------------------------------------------------------------------
    def push_video(self, frame: np.ndarray, t: float) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) < 2:
            raise ValueError(f"a frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if self.color == "bgr":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        small = resize_frames(self.cropper(frame)[None], self.config.image_size)[0]
        with self._lock:
            self._check_open()
            if self._origin is None:
                self._origin = float(t)
            slot = int(round((float(t) - self._origin) * FPS))
            if slot < self._next_slot:
                self._counts["frames_skipped"] += 1
                return
            self._wait_for_room()
            while self._next_slot < slot:  # a gap: repeat the last frame (or this one at the start)
                self._append_frame(self._frames[-1] if self._frames else small)
                self._counts["frames_repeated"] += 1
            self._append_frame(small)
            self._counts["frames"] += 1
            self._lock.notify_all()

    def push_audio(self, samples: np.ndarray, sample_rate: int, t: float | None = None) -> None:
        samples = np.asarray(samples, np.float32)
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        if samples.ndim != 1 or sample_rate <= 0:
            raise ValueError(f"audio must be mono (N,) with a positive rate, got {samples.shape} at {sample_rate}")
        with self._lock:
            self._check_open()
            if samples.size == 0:
                self._counts["audio_chunks_empty"] += 1
                return
            if not np.all(np.isfinite(samples)):
                self._counts["audio_chunks_invalid"] += 1
                samples = np.zeros_like(samples)
            if self._origin is None:
                self._origin = float(t) if t is not None else 0.0
            if t is not None:  # compare in input time, before any resampler holds samples back
                gap = int(round((float(t) - self._origin - self._audio_clock) * sample_rate))
                if gap > sample_rate // FPS:  # a real gap: silence
                    samples = np.concatenate([np.zeros(gap, np.float32), samples])
                elif -gap > sample_rate // FPS:  # a real overlap (or audio before the start): drop it
                    samples = samples[min(-gap, len(samples)):]
            self._audio_clock += len(samples) / sample_rate
            self._audio = np.concatenate([self._audio, self._resample(samples, int(sample_rate))])
            excess = len(self._audio) - int(self.max_audio_seconds * SAMPLE_RATE)
            if excess > 0:  # audio far ahead of the video (a stalled camera): forget the oldest
                self._audio, self._audio_offset = self._audio[excess:], self._audio_offset + excess
                self._counts["audio_samples_dropped"] += excess
            self._lock.notify_all()

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """To 16 kHz with one streaming resampler per input rate; a rate change flushes the old one."""
        flushed = self._flush_resamplers(keep=rate)
        if rate == SAMPLE_RATE:
            return np.concatenate([flushed, samples])
        import soxr

        stream = self._resamplers.setdefault(rate, soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32"))
        return np.concatenate([flushed, stream.resample_chunk(samples).astype(np.float32)])  # type: ignore[attr-defined]

    def _flush_resamplers(self, keep: int | None = None) -> np.ndarray:
        """The samples resamplers still hold, from all but the `keep` rate."""
        out = [np.zeros(0, np.float32)]
        for rate in [r for r in self._resamplers if r != keep]:
            out.append(self._resamplers.pop(rate).resample_chunk(np.zeros(0, np.float32), last=True).astype(np.float32))  # type: ignore[attr-defined]
        return np.concatenate(out)

    def _append_frame(self, frame: np.ndarray) -> None:
        self._frames.append(frame)
        self._times.append(self._origin + self._next_slot / FPS if self._origin is not None else 0.0)
        self._next_slot += 1

    def _wait_for_room(self) -> None:
        while len(self._frames) >= (self.max_pending_clips + 1) * CLIP_LEN and self._error is None:
            self._lock.wait(timeout=1.0)

    def _check_open(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the listener stream's worker failed: {self._error}") from self._error
        if self._closing:
            raise RuntimeError("the listener stream is closed")

    # -- output ------------------------------------------------------------------------------
    def clips(self, timeout: float | None = None) -> Iterator[ClipMotion]:
        """Clips as they are made, until the stream is closed and drained (or `timeout` passes idle)."""
        while True:
            with self._lock:
                if not self._output and not self._closed:
                    self._lock.wait(timeout=timeout)
                if self._output:
                    item = self._output.popleft()
                elif self._closed or timeout is not None:
                    return
                else:
                    continue
            yield item

    def stats(self) -> StreamStats:
        with self._lock:
            latencies = np.array(self._latencies) * 1000 if self._latencies else np.array([np.nan])
            return StreamStats(
                clips=self._counts["clips"], frames=self._counts["frames"],
                frames_repeated=self._counts["frames_repeated"], frames_skipped=self._counts["frames_skipped"],
                audio_chunks_empty=self._counts["audio_chunks_empty"],
                audio_chunks_invalid=self._counts["audio_chunks_invalid"],
                audio_samples_dropped=self._counts["audio_samples_dropped"],
                callback_errors=self._counts["callback_errors"],
                latency_p50_ms=float(np.percentile(latencies, 50)), latency_p99_ms=float(np.percentile(latencies, 99)),
                boundary_jump=self._jump_sum / max(self._jump_count, 1),
                within_clip_step=self._step_sum / max(self._step_count, 1),
            )

    def close(self) -> None:
        """Flush the last (partial) clip, padding audio with silence and frames by repetition, and stop."""
        with self._lock:
            if not self._closing:
                self._audio = np.concatenate([self._audio, self._flush_resamplers()])
            self._closing = True
            self._lock.notify_all()
        self._worker.join()
        if self._error is not None:
            raise RuntimeError(f"the listener stream's worker failed: {self._error}") from self._error

    def __enter__(self) -> "ListenerStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- worker ------------------------------------------------------------------------------
    def _audio_needed(self, clip: int) -> int:
        """Absolute 16 kHz sample index the clip's last mel window reaches."""
        last_mel = (clip + 1) * CLIP_LEN * MELS_PER_FRAME - 1
        return int(mel_centres(1, last_mel)[0]) + N_FFT // 2

    def _take_ready(self) -> tuple[np.ndarray, np.ndarray, list[float], int] | None:
        """Under the lock: the next clip's frames and audio, or None to keep waiting."""
        full = len(self._frames) >= CLIP_LEN
        has_audio = self._audio_offset + len(self._audio) > self._audio_needed(self._clip)
        if not (full and has_audio) and not (self._closing and self._frames):
            return None
        count = min(CLIP_LEN, len(self._frames))
        frames = np.stack(self._frames[:count] + [self._frames[count - 1]] * (CLIP_LEN - count))
        times = self._times[:count]
        audio, offset = self._audio.copy(), self._audio_offset
        del self._frames[:count], self._times[:count]
        # Keep only the audio later mel windows can reach.
        keep_from = self._audio_needed(self._clip) - 2 * N_FFT
        if keep_from > self._audio_offset:
            cut = min(keep_from - self._audio_offset, len(self._audio))
            self._audio, self._audio_offset = self._audio[cut:], self._audio_offset + cut
        self._lock.notify_all()
        return frames, audio, times, offset

    def _warm_up(self) -> None:
        """One throwaway clip through every graph, so the first real clip's latency is not the runtime's set-up."""
        config, runner = self.config, self.runner
        images = np.zeros((CLIP_LEN, 3, config.image_size, config.image_size), np.float32)
        mel = np.zeros((CLIP_LEN, 1, config.audio_window, config.n_mels), np.float32)
        runner.encode(images, mel)
        condition = np.zeros((1, config.condition_frames, config.condition_dim), np.float32)
        state = np.zeros((1, CLIP_LEN, config.n_coeffs), np.float32)
        runner.clips_motion(condition, state, np.random.default_rng(0))  # not the stream's noise

    def _work(self) -> None:
        try:
            self._warm_up()
            while True:
                with self._lock:
                    taken = self._take_ready()
                    while taken is None:
                        if self._closing and not self._frames:
                            self._closed = True
                            self._lock.notify_all()
                            return
                        self._lock.wait(timeout=0.5)
                        taken = self._take_ready()
                ready = time.perf_counter()
                self._emit(self._run_clip(*taken[:2], offset=taken[3]), taken[2], ready)
        except BaseException as error:  # surfaced to the caller on its next push or close
            with self._lock:
                self._error = error
                self._closed = True
                self._lock.notify_all()

    def _run_clip(self, frames: np.ndarray, audio: np.ndarray, offset: int) -> np.ndarray:
        config, runner = self.config, self.runner
        mel = log_mel(audio, CLIP_LEN, config.n_mels, first_frame=self._clip * CLIP_LEN, offset=offset)
        windows = frame_windows(mel, config.audio_window_frames, self._mel_history)
        self._mel_history = mel[-(config.audio_window_frames * MELS_PER_FRAME):]
        features = runner.encode(images_from_frames(frames), windows)
        condition = np.concatenate([self._features, features])[None]
        self._features = condition[0, CLIP_LEN:] if config.context_clips else self._features
        guess = None
        if self.carry_motion and self._previous is not None:
            guess = np.repeat(((self._previous[-1] - runner.mean) / runner.std)[None, None], CLIP_LEN, axis=1)
        state = runner.initial_state(1, self._generator, guess)
        return runner.clips_motion(condition.astype(np.float32), state, self._generator)[0]

    def _emit(self, motion: np.ndarray, times: list[float], ready: float) -> None:
        motion = motion[: len(times)]
        clip = ClipMotion(self._clip, motion, np.asarray(times), time.perf_counter() - ready)
        with self._lock:
            if self._previous is not None and len(motion):
                self._jump_sum += float(np.linalg.norm(motion[0] - self._previous[-1]))
                self._jump_count += 1
            if len(motion) > 1:
                self._step_sum += float(np.linalg.norm(np.diff(motion, axis=0), axis=1).sum())
                self._step_count += len(motion) - 1
            self._previous = motion
            self._latencies.append(clip.latency)
            self._counts["clips"] += 1
            self._output.append(clip)
            self._lock.notify_all()
        self._clip += 1
        if self.on_clip is not None:
            try:
                self.on_clip(clip)
            except Exception:  # the caller's callback must not stop the stream; counted instead
                with self._lock:
                    self._counts["callback_errors"] += 1
