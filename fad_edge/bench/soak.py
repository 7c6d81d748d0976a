"""Soak benchmark for ListenerStream: many simulated minutes of hostile live input; memory, latency, counters.

    python -m fad_edge.bench.soak --export engines/small --precision int8 --minutes 30 --speed 4 \\
        --out bench/results/soak_stream.json

It feeds a synthetic speaker (looped) the way capture threads would, with every fault the stream
must survive:
- video at 30 fps with +-4 ms timestamp jitter; frames dropped (3%), delivered late after a later one
  (1%), garbage (1%: noise, black, odd sizes such as 17x23), a few that are not images at all
  (refused), and NaN timestamps now and then (refused);
- audio in 20 ms chunks with jitter, its rate switching between 16, 44.1 and 48 kHz, as float32,
  int16 or stereo int32; NaN and empty chunks; a 3 s microphone dropout every 4 minutes;
- a clock jump every 5 minutes, cycling: both clocks step +1 h (NTP), the video clock steps back
  10^6 s, the audio clock alone jumps 10^6 s, both step back 30 s.

Time: the feeder sleeps until each input's simulated capture time; `--speed S` runs the simulated
clock S times faster than the wall clock (1 = real time). The stream's dead-audio timeout runs on
the simulated clock. Latency and compute are measured per clip on the wall clock, so they are honest
at any speed while the model keeps up (compute per clip well under 267 ms / S; the report gives the
feeder's worst lag behind its schedule). Memory is the process RSS, sampled every simulated minute;
growth is counted from the end of the first minute (everything warm) to the end.

Without --export it runs the export folder engines/small (`fad-edge export --out engines/small --int8`).
The report checks: memory growth <= 20 MB, p99 <= 2x p50, and that every clip is accounted for
(8 slots per clip = frames + repeated + padded; clips made = delivered + counted drops).
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fad_edge.atomic import atomic_write_bytes
from fad_edge.bench.timing import cpu_features, cpu_name
from fad_edge.constants import CLIP_LEN, FPS, SAMPLE_RATE
from fad_edge.errors import FadEdgeError, StreamInputError
from fad_edge.json_report import json_report_bytes
from fad_edge.runtime.stream import ClipMotion, ListenerStream

if TYPE_CHECKING:
    from fad_edge.runtime.base import ClipRunner

RATES = (16_000, 44_100, 48_000)
JUMPS = ((3600.0, 3600.0), (-1e6, 0.0), (0.0, 1e6), (-30.0, -30.0))  # (video, audio) clock steps, in turn
TARGETS = {"memory_growth_mb": 20.0, "p99_over_p50": 2.0, "unexplained_lost_clips": 0}


@dataclass
class SoakConfig:
    minutes: float = 30.0  # simulated
    speed: float = 1.0  # simulated seconds per wall second
    seed: int = 0
    jitter: float = 0.004  # seconds, either way
    frame_drop: float = 0.03
    frame_late: float = 0.01
    frame_garbage: float = 0.01
    not_an_image: float = 0.002
    nan_timestamp: float = 0.001
    audio_chunk: float = 0.02  # seconds
    rate_every: float = 5.0  # minutes between sample-rate switches
    dropout_every: float = 4.0  # minutes between microphone dropouts
    dropout_seconds: float = 3.0
    jump_every: float = 5.0  # minutes between clock jumps
    audio_timeout: float = 1.0  # the stream's dead-audio timeout, simulated seconds


class SimulatedClock:
    """Simulated seconds since `start()`, running `speed` times faster than the wall clock."""

    def __init__(self, speed: float) -> None:
        self.speed, self.origin = speed, time.perf_counter()

    def start(self) -> None:
        self.origin = time.perf_counter()

    def __call__(self) -> float:
        return (time.perf_counter() - self.origin) * self.speed


class Record:
    """Per-clip and per-push figures in arrays sized up front, so that measuring does not grow the memory measured."""

    def __init__(self, seconds: float) -> None:
        self.clips = np.zeros((int(seconds * FPS / CLIP_LEN * 1.2) + 64, 4))  # index, latency, compute, ahead
        self.pushes = np.zeros(int(seconds * FPS * 1.2) + 64)  # push_video's duration
        self.n_clips = self.n_pushes = self.overflow = 0
        self._lock = threading.Lock()  # clips arrive on the stream's callback thread

    def clip(self, clip: ClipMotion) -> None:
        with self._lock:
            if self.n_clips < len(self.clips):
                self.clips[self.n_clips] = (clip.index, clip.latency, clip.compute, clip.ahead)
                self.n_clips += 1
            else:
                self.overflow += 1

    def push(self, seconds: float) -> None:
        if self.n_pushes < len(self.pushes):
            self.pushes[self.n_pushes] = seconds
            self.n_pushes += 1


def rss_mb() -> float:
    """Resident memory of this process now (peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource  # not on Windows, which has no /proc either

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    import onnxruntime

    return {"cpu": cpu_name(), "cpu_features": cpu_features(), "cores": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
            "load_average_at_start": list(os.getloadavg())}


class Speaker:
    """A synthetic speaker's frames and audio at every input rate, looped, and the faults to add."""

    def __init__(self, config: SoakConfig, image_size: int) -> None:
        from fad_edge.data.audio_features import resample_audio
        from fad_edge.data.synthetic import SyntheticConfig, generate_session

        session = generate_session(config.seed, SyntheticConfig(seconds=10.0, image_size=2 * image_size))
        self.frames = session.frames
        self.audio = {rate: resample_audio(session.audio, SAMPLE_RATE, rate) for rate in RATES}
        self.rng = np.random.default_rng(config.seed)

    def frame(self, k: int) -> np.ndarray:
        return self.frames[k % len(self.frames)]

    def garbage(self) -> np.ndarray:
        kind = int(self.rng.integers(3))
        if kind == 0:
            return self.rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
        if kind == 1:
            return np.zeros((480, 640, 3), np.uint8)
        return self.rng.integers(0, 256, (2, 1000, 3), dtype=np.uint8)

    def chunk(self, start: float, seconds: float, rate: int, index: int) -> np.ndarray:
        source = self.audio[rate]
        first = int(round(start * rate))
        samples = np.take(source, np.arange(first, first + int(round(seconds * rate))), mode="wrap")
        if index % 7 == 3:
            return (samples * 32767).astype(np.int16)
        if index % 11 == 5:
            return (np.stack([samples, samples], axis=1) * 2**31 * 0.99).astype(np.int32)
        return samples


def run_soak(runner: ClipRunner, config: SoakConfig, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Feed `runner`'s stream for config.minutes of simulated time; the report as a dict."""
    speaker = Speaker(config, runner.config.image_size)
    rng = np.random.default_rng(config.seed + 1)
    record = Record(config.minutes * 60)
    clock = SimulatedClock(config.speed)
    feeder = {"frames_pushed": 0, "frames_dropped": 0, "frames_late": 0, "frames_garbage": 0, "refused": 0,
              "audio_chunks": 0, "audio_nan_chunks": 0, "audio_empty_chunks": 0, "dropouts": 0, "clock_jumps": 0}
    memory: list[tuple[float, float]] = []
    loads: list[float] = []  # the machine's 1-minute load average, each simulated minute
    behind = 0.0
    total = config.minutes * 60
    video_offset, audio_offset = 1000.0, 1000.0
    frame_k, audio_j, jumps_done, late_frame = 0, 0, 0, None
    stream = ListenerStream(runner, on_clip=record.clip, keep_clips=0, clock=clock, audio_timeout=config.audio_timeout)
    clock.start()
    try:
        while True:
            t_frame, t_audio = frame_k / FPS, (audio_j + 1) * config.audio_chunk  # a chunk is pushed once complete
            t = min(t_frame, t_audio)
            if t >= total:
                break
            wait = (t - clock()) / config.speed
            if wait > 0:
                time.sleep(wait)
            behind = max(behind, -wait * config.speed)
            # Both clocks step together, 0.1 s past each mark so that the jump lands inside a clip.
            if int((t - 0.1) // (config.jump_every * 60)) > jumps_done:
                jumps_done += 1
                step = JUMPS[(jumps_done - 1) % len(JUMPS)]
                video_offset, audio_offset = video_offset + step[0], audio_offset + step[1]
                feeder["clock_jumps"] += 1
            minute = int(t // 60)
            if len(memory) <= minute:
                memory.append((t, rss_mb()))
                loads.append(round(os.getloadavg()[0], 2))
                say(f"minute {minute:3d}/{config.minutes:g}: {record.n_clips} clips, RSS {memory[-1][1]:.1f} MB")
            if t_frame <= t_audio:
                _push_frame(stream, speaker, rng, config, feeder, record, frame_k, video_offset, late_frame)
                late_frame = (frame_k, video_offset) if rng.random() < config.frame_late else None
                frame_k += 1
            else:
                _push_audio(stream, speaker, rng, config, feeder, audio_j, audio_offset)
                audio_j += 1
        memory.append((total, rss_mb()))
    finally:
        stream.close()
    wall = clock() / config.speed
    result = _report(stream, config, feeder, record, memory, behind, wall)
    result["machine"]["load_average_per_minute"] = loads
    return result


def _push_frame(stream: ListenerStream, speaker: Speaker, rng: np.random.Generator, config: SoakConfig,
                feeder: dict[str, int], record: Record, k: int, offset: float,
                late: tuple[int, float] | None) -> None:
    stamp = offset + k / FPS + rng.uniform(-config.jitter, config.jitter)
    if rng.random() < config.nan_timestamp:
        _refused(feeder, lambda: stream.push_video(speaker.frame(k), float("nan")))
    if rng.random() < config.not_an_image:
        _refused(feeder, lambda: stream.push_video(np.zeros((8, 8), np.float32), stamp))
    if rng.random() < config.frame_drop:
        feeder["frames_dropped"] += 1
        return
    garbage = rng.random() < config.frame_garbage
    frame = speaker.garbage() if garbage else speaker.frame(k)
    feeder["frames_garbage"] += garbage
    started = time.perf_counter()
    stream.push_video(frame, stamp)
    record.push(time.perf_counter() - started)
    feeder["frames_pushed"] += 1
    if late is not None:  # the previous frame, delivered again after this one
        stream.push_video(speaker.frame(late[0]), late[1] + late[0] / FPS)
        feeder["frames_late"] += 1
        feeder["frames_pushed"] += 1


def _push_audio(stream: ListenerStream, speaker: Speaker, rng: np.random.Generator, config: SoakConfig,
                feeder: dict[str, int], j: int, offset: float) -> None:
    start = j * config.audio_chunk

    def unplugged(chunk: int) -> bool:  # the last dropout_seconds of every dropout_every minutes
        period = config.dropout_every * 60
        return period > 0 and (chunk * config.audio_chunk) % period >= period - config.dropout_seconds

    if unplugged(j):
        feeder["dropouts"] += not unplugged(j - 1)
        return
    rate = RATES[int(start // (config.rate_every * 60)) % len(RATES)]
    samples = speaker.chunk(start, config.audio_chunk, rate, j)
    if rng.random() < 0.001:
        samples = np.full(len(samples), np.nan, np.float32)
        feeder["audio_nan_chunks"] += 1
    if rng.random() < 0.001:
        stream.push_audio(np.zeros(0, np.float32), rate, offset + start)
        feeder["audio_empty_chunks"] += 1
    if rng.random() < config.nan_timestamp:
        _refused(feeder, lambda: stream.push_audio(samples, rate, float("inf")))
    stream.push_audio(samples, rate, offset + start + rng.uniform(-config.jitter, config.jitter))
    feeder["audio_chunks"] += 1


def _refused(feeder: dict[str, int], push: Callable[[], None]) -> None:
    try:
        push()
    except StreamInputError:
        feeder["refused"] += 1
    else:
        raise AssertionError("the stream accepted input it must refuse")


def _report(stream: ListenerStream, config: SoakConfig, feeder: dict[str, int], record: Record,
            memory: list[tuple[float, float]], behind: float, wall: float) -> dict[str, Any]:
    stats = stream.stats()
    clips = record.clips[: record.n_clips]
    if not len(clips):
        raise FadEdgeError(f"no clip came out of the stream in {config.minutes:g} simulated minutes "
                           f"({stats.frames} frames accepted); nothing to report")
    latency, compute = clips[:, 1] * 1000, clips[:, 2] * 1000
    # What the stream adds to the model's time once a clip is complete (waiting, hand-over); the
    # frames encoded ahead were computed before the latency started.
    overhead = latency - (compute - clips[:, 3] * 1000)
    pushes = record.pushes[: record.n_pushes] * 1000
    # From the end of the first minute, everything warm; a run of a minute or less has no such sample.
    warm = memory[1][1] if len(memory) > 2 else None
    growth = None if warm is None else memory[-1][1] - warm
    steady = latency[1:] if len(latency) > 1 else latency
    p50, p99 = float(np.percentile(steady, 50)), float(np.percentile(steady, 99))
    slots = stats.frames + stats.frames_repeated + stats.frames_padded
    accounting = {
        "slots_minus_8_per_clip": slots - 8 * stats.clips,
        "frames_pushed_minus_accepted_and_skipped": feeder["frames_pushed"] - stats.frames - stats.frames_skipped,
        "clips_made_minus_delivered_and_dropped": stats.clips - record.n_clips - record.overflow - stats.clips_dropped,
        "clips_delivered_out_of_order": int(np.sum(np.diff(clips[:, 0]) <= 0)),
    }
    unexplained = sum(abs(v) for v in accounting.values())
    result = {
        "machine": machine() | {"load_average_at_end": list(os.getloadavg())},
        "config": asdict(config),
        "simulated_seconds": config.minutes * 60,
        "wall_seconds": wall,
        "feeder_worst_lag_simulated_ms": behind * 1000,
        "clips": stats.clips,
        "latency_ms": {"p50": p50, "p99": p99, "max": float(steady.max()), "first_clip": float(latency[0]),
                       "first_8_clips_median": float(np.median(latency[:8])),
                       "p99_over_p50": p99 / p50, "first_over_p50": float(latency[0]) / p50},
        "stream_overhead_ms": {"p50": float(np.percentile(overhead, 50)), "p99": float(np.percentile(overhead, 99)),
                               "max": float(overhead.max())},
        "compute_ms": {"p50": float(np.percentile(compute, 50)), "p99": float(np.percentile(compute, 99)),
                       "max": float(compute.max()), "first_clip": float(compute[0]),
                       "share_of_wall": float(compute.sum() / 1000 / wall)},
        "push_video_ms": {"p50": float(np.percentile(pushes, 50)), "p99": float(np.percentile(pushes, 99)),
                          "max": float(pushes.max())},
        "memory_mb": {"rss_after_first_minute": warm, "rss_at_end": memory[-1][1], "growth": growth,
                      "max_growth": None if warm is None else max(m for _, m in memory[1:]) - warm,
                      "per_minute": [round(m, 2) for _, m in memory]},
        "stream_counters": asdict(stats),
        "feeder_counters": feeder,
        "accounting": accounting,
        "targets": TARGETS,
        "passed": {"memory": None if growth is None else growth <= TARGETS["memory_growth_mb"],  # None: not measured
                   "p99_over_p50": p99 / p50 <= TARGETS["p99_over_p50"],
                   "no_unexplained_lost_clips": unexplained == 0},
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, default=Path("engines/small"), help="export folder (fad-edge export)")
    parser.add_argument("--precision", default="int8", choices=["fp32", "int8", "fp16"])
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--minutes", type=float, default=SoakConfig.minutes, help="simulated minutes")
    parser.add_argument("--speed", type=float, default=SoakConfig.speed, help="simulated seconds per wall second")
    parser.add_argument("--seed", type=int, default=SoakConfig.seed)
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    args = parser.parse_args()
    from fad_edge.runtime.select import open_runner

    try:
        runner = open_runner(args.export, "ort", args.precision, threads=args.threads)
    except FadEdgeError as error:
        raise SystemExit(f"error: {error}") from None
    config = SoakConfig(minutes=args.minutes, speed=args.speed, seed=args.seed)
    try:
        result = run_soak(runner, config, say=lambda line: print(line, flush=True))
    except FadEdgeError as error:
        raise SystemExit(f"error: {error}") from None
    finally:
        close = getattr(runner, "close", None)  # part of the runner contract; older runners may lack it
        if callable(close):
            close()
    result["export"] = {"folder": str(args.export), "precision": args.precision, "threads": args.threads,
                        "preset": runner.config.preset}
    atomic_write_bytes(args.out, json_report_bytes(result))
    latency, memory = result["latency_ms"], result["memory_mb"]
    growth = "not measured (a minute or less)" if memory["growth"] is None else f"{memory['growth']:+.1f} MB"
    print(f"{result['clips']} clips in {result['wall_seconds']:.0f} s; latency p50 {latency['p50']:.1f} ms, "
          f"p99 {latency['p99']:.1f} ms (x{latency['p99_over_p50']:.2f}); RSS growth {growth}")
    print(f"passed: {result['passed']}; report: {args.out}")


if __name__ == "__main__":
    main()
