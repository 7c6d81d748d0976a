"""ListenerStream driven by a FakeRunner: threads, callbacks, warm-up, ownership and hostile input, in seconds."""

from __future__ import annotations

import math
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeRunner

from fad_edge.constants import SAMPLE_RATE
from fad_edge.errors import FadEdgeError, StreamInputError
from fad_edge.runtime import stream as stream_module
from fad_edge.runtime.stream import ListenerStream

CHUNK = 16000 // 30


def picture(k: int) -> np.ndarray:
    """A frame whose brightness says which one it is (the fake runner's motion[:, 0] reads it back)."""
    return np.full((40, 30, 3), 20 + k % 200, np.uint8)


def feed(stream: ListenerStream, frames: range, start: float = 0.0, audio: bool = True) -> None:
    """Frames with their audio, which ends a frame later: a clip's last mel window reaches past its end."""
    for k in frames:
        if audio:
            stream.push_audio(np.zeros(CHUNK, np.float32), 16000, start + k / 30)
        stream.push_video(picture(k), start + k / 30)
    if audio:
        stream.push_audio(np.zeros(CHUNK, np.float32), 16000, start + frames.stop / 30)


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def in_thread(work, seconds: float = 10.0) -> None:
    """Run `work` on another thread; fail (instead of hanging) if it does not return in time."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the producer was blocked"


def test_each_frame_meets_its_own_audio_through_the_threads():
    rng = np.random.default_rng(0)
    with ListenerStream(FakeRunner(), color="bgr") as stream:
        for k in range(64):
            loud = 24 <= k < 32
            chunk = (0.5 * np.sin(np.arange(CHUNK) * 0.3) if loud else np.zeros(CHUNK)).astype(np.float32)
            stream.push_audio((chunk * 32767).astype(np.int16), 16000, k / 30 + rng.uniform(-0.004, 0.004))
            stream.push_video(picture(k), k / 30 + rng.uniform(-0.004, 0.004))
    motion = np.concatenate([clip.motion for clip in stream.clips(timeout=0)])
    assert motion.shape == (64, 56)
    np.testing.assert_array_equal(np.round(motion[:, 0] * 255) - 20, np.arange(64))  # every frame in its slot
    quiet, loud = np.r_[motion[:23, 1], motion[33:, 1]], motion[24:32, 1]
    assert loud.min() > quiet.max() + 0.5  # the tone sits under frames 24..31 and nowhere else


@pytest.mark.parametrize("ahead", [True, False])
def test_frames_are_encoded_as_they_arrive_and_the_clip_waits_only_for_its_audio(ahead):
    runner = FakeRunner()
    with ListenerStream(runner, encode_ahead=ahead, audio_timeout=None) as stream:
        warm_up = len(runner.video_batches)
        for k in range(8):
            stream.push_video(picture(k), k / 30)
        assert wait_for(lambda: sum(runner.video_batches[warm_up:]) == 8, 10 if ahead else 0.5) == ahead  # no clip yet
        assert stream.stats().clips == 0
        encoded_before_audio = list(runner.video_batches[warm_up:])
        stream.push_audio(np.zeros(9 * CHUNK, np.float32), 16000, 0.0)
        assert wait_for(lambda: stream.stats().clips == 1)
        clip = next(stream.clips(timeout=0))
    np.testing.assert_array_equal(np.round(clip.motion[:, 0] * 255) - 20, np.arange(8))
    assert sum(encoded_before_audio) == (8 if ahead else 0)
    assert sum(runner.video_batches[warm_up:]) == 8  # each frame's video encoded once either way
    assert clip.latency >= 0 and clip.compute >= clip.ahead and (clip.ahead > 0) == ahead


def test_audio_is_encoded_as_it_arrives_and_gives_the_motion_of_a_clip_encoded_at_once():
    rng = np.random.default_rng(3)
    chunks = [(0.002 * 3 ** (k % 6) * rng.standard_normal(CHUNK)).astype(np.float32) for k in range(17)]
    motions = {}
    for ahead in (True, False):
        runner = FakeRunner()
        with ListenerStream(runner, encode_ahead=ahead, audio_timeout=None) as stream:
            warm_up = len(runner.audio_batches)
            for k in range(16):
                stream.push_audio(chunks[k], 16000)
                stream.push_video(picture(k), k / 30)
            if ahead:  # clip 0 is out; clip 1's frames 8..14 are heard ahead, its last waits for more audio
                assert wait_for(lambda: sum(runner.audio_batches[warm_up:]) == 15)
                assert stream.stats().clips == 1
            stream.push_audio(chunks[16], 16000)
            assert wait_for(lambda: stream.stats().clips == 2)
            motions[ahead] = np.concatenate([clip.motion for clip in stream.clips(timeout=0)])
            assert sum(runner.audio_batches[warm_up:]) == 16  # every frame's audio encoded once
            if ahead:
                assert runner.audio_batches[-1] == 1  # at the clip's end, only its last frame
    np.testing.assert_allclose(motions[True], motions[False], rtol=0, atol=1e-6)
    assert np.ptp(motions[True][:, 1]) > 0.1  # the audio feature is heard, not constant


def test_a_clip_uses_the_features_encoded_ahead_for_it_and_no_others():
    from fad_edge.runtime.aligner import ReadyClip
    from fad_edge.runtime.clip_encoder import ClipEncoder

    runner = FakeRunner()
    encoder = ClipEncoder(runner)
    size = runner.config.image_size

    def ready(index: int) -> ReadyClip:
        frames = np.stack([np.full((size, size, 3), 20 + 8 * index + k, np.uint8) for k in range(8)])
        return ReadyClip(index, frames, 8, np.arange(8) / 30, np.zeros(6000, np.float32), 0, index == 0)

    first = ready(0)
    encoder.encode_ahead(0, first.frames[:3])
    encoder.encode_ahead(0, first.frames[3:5])
    motion = encoder(first)
    assert runner.video_batches == [3, 2, 3] and encoder.ahead_seconds > 0
    np.testing.assert_array_equal(np.round(motion[:, 0] * 255) - 20, np.arange(8))
    encoder.encode_ahead(5, ready(5).frames[:4])  # features of another clip are never used for this one
    motion = encoder(ready(1))
    assert runner.video_batches[-1] == 8 and encoder.ahead_seconds == 0
    np.testing.assert_array_equal(np.round(motion[:, 0] * 255) - 20, np.arange(8, 16))


def test_the_warm_up_runs_at_construction_on_the_worker_and_stays_out_of_the_stats():
    runner = FakeRunner()
    stream = ListenerStream(runner)
    # before any input
    assert min(runner.calls[name] for name in ("encode_video", "encode_audio", "clips_motion")) >= 1
    assert runner.threads == {"listener-stream"}  # where a TensorRT context must live
    assert stream.stats().clips == 0 and math.isnan(stream.stats().latency_p50_ms)
    feed(stream, range(16))
    stream.close()
    stats = stream.stats()
    # (compute may exceed latency: it counts the frames encoded before the clip's last input came)
    assert stats.clips == 2 and stats.first_latency_ms >= 0 and stats.latency_p99_ms > 0 and stats.compute_p50_ms > 0


def test_a_blocking_callback_never_blocks_the_producers(monkeypatch):
    gate, received = threading.Event(), []

    def on_clip(clip):
        gate.wait()
        received.append(clip.index)

    stream = ListenerStream(FakeRunner(), on_clip=on_clip, callback_queue=2)
    in_thread(lambda: feed(stream, range(80)))
    assert wait_for(lambda: stream.stats().clips == 10)
    assert stream.stats().clips_dropped >= 7  # 2 queued and 1 in the callback at most
    monkeypatch.setattr(stream_module, "CALLBACK_DRAIN_SECONDS", 0.2)
    in_thread(stream.close)  # the callback still blocks: close() gives up waiting for it
    gate.set()
    assert wait_for(lambda: len(received) + stream.stats().clips_dropped == 10)  # each clip delivered or counted


def test_dropped_callbacks_keep_the_newest_clips():
    gate, received = threading.Event(), []
    stream = ListenerStream(FakeRunner(), on_clip=lambda clip: (gate.wait(), received.append(clip.index)),
                            callback_queue=2, keep_clips=0)
    feed(stream, range(80))
    assert wait_for(lambda: stream.stats().clips == 10)
    gate.set()
    stream.close()
    assert received[-2:] == [8, 9] and len(received) + stream.stats().clips_dropped == 10
    assert list(stream.clips(timeout=0)) == [] and stream.stats().clips_unread_dropped == 0  # no clips() buffer


def test_video_goes_on_with_silence_when_the_microphone_is_unplugged():
    now = [0.0]
    stream = ListenerStream(FakeRunner(), audio_timeout=0.5, clock=lambda: now[0])
    feed(stream, range(8))  # one clip with its audio, then the microphone is gone
    feed(stream, range(8, 24), audio=False)
    assert wait_for(lambda: stream.stats().clips == 1)
    time.sleep(0.2)
    assert stream.stats().clips == 1  # clips 1 and 2 wait for their audio...
    now[0] = 1.0
    assert wait_for(lambda: stream.stats().clips == 3)  # ...until the timeout, then go on with silence
    stats = stream.stats()
    assert stats.audio_dead == 1 and stats.audio_samples_filled > 0
    stream.close()


def test_push_video_never_waits_for_audio_that_never_comes():
    stream = ListenerStream(FakeRunner(), audio_timeout=None)  # no timeout: video far ahead still gets silence
    in_thread(lambda: feed(stream, range(200), audio=False))
    stream.close()
    stats = stream.stats()
    assert stats.clips == 25 and stats.audio_dead == 1


def test_bad_input_is_refused_at_the_call_and_the_stream_goes_on():
    with ListenerStream(FakeRunner()) as stream:
        for bad in (float("nan"), float("inf")):
            with pytest.raises(StreamInputError, match="timestamp"):
                stream.push_video(picture(0), bad)
            with pytest.raises(ValueError, match="timestamp"):
                stream.push_audio(np.zeros(100, np.float32), 16000, bad)
        with pytest.raises(StreamInputError, match="uint8"):
            stream.push_audio(np.zeros(100, np.uint8), 16000)
        with pytest.raises(StreamInputError, match="ambiguous"):
            stream.push_audio(np.zeros((4, 4), np.float32), 16000)
        with pytest.raises(StreamInputError, match="uint8"):
            stream.push_video(np.zeros((10, 10), np.uint8), 0.0)
        feed(stream, range(16))
    stats = stream.stats()
    assert stats.timestamps_refused == 4 and stats.clips == 2 and stats.frames == 16


def test_frames_stamped_in_milliseconds_are_counted_as_refused_timestamps():
    with ListenerStream(FakeRunner()) as stream:
        stream.push_video(picture(0), 0.0)
        stream.push_video(picture(1), 33.0)  # milliseconds: a jump, then another
        stream.push_video(picture(2), 66.0)
        with pytest.raises(StreamInputError, match="milliseconds"):
            stream.push_video(picture(3), 100.0)
    assert stream.stats().timestamps_refused == 1


def test_a_clock_jump_of_a_million_seconds_costs_nothing():
    # The aligner's tests measure the jump's memory with tracemalloc; here the worker thread runs NumPy
    # meanwhile, and tracemalloc.stop() racing NumPy's allocations in another thread crashes CPython
    # before 3.12.9 (python/cpython#128679). So this test reads what the aligner holds instead: at most the
    # 13 frames pushed and a second of audio, where filling the gap would hold 30 million frames.
    with ListenerStream(FakeRunner()) as stream:
        feed(stream, range(12))
        feed(stream, range(12, 13), start=1e6)
        held_frames, held_audio = stream.aligner.buffered_frames(), stream.aligner.buffered_audio()
        feed(stream, range(13, 28), start=1e6)
    clips = list(stream.clips(timeout=0))
    assert held_frames <= 13 and held_audio <= SAMPLE_RATE and stream.aligner.buffered_frames() == 0
    assert [len(clip.motion) for clip in clips] == [8, 4, 8, 8]
    assert [clip.index for clip in clips] == [0, 1, 2, 3] and clips[2].timestamps[0] == pytest.approx(1e6 + 12 / 30)
    stats = stream.stats()
    assert stats.clock_jumps_video == 1 and stats.frames_padded == 4 and stats.frames_repeated == 0


def fake_select(runner: FakeRunner) -> types.SimpleNamespace:
    """Stands in for fad_edge.runtime.select (whose import would pull in torch) and opens `runner`."""
    return types.SimpleNamespace(open_runner=lambda *args, **kwargs: runner)


def test_close_closes_the_runner_only_when_the_stream_opened_it(monkeypatch):
    opened = FakeRunner()
    monkeypatch.setitem(sys.modules, "fad_edge.runtime.select", fake_select(opened))
    stream = ListenerStream.from_export(Path("engines/any"))
    assert not opened.closed
    stream.close()
    assert opened.closed
    given = FakeRunner()
    ListenerStream(given).close()
    assert not given.closed
    refused = FakeRunner()
    monkeypatch.setitem(sys.modules, "fad_edge.runtime.select", fake_select(refused))
    with pytest.raises(StreamInputError, match="color"):
        ListenerStream.from_export(Path("engines/any"), color="cmyk")
    assert refused.closed  # a stream that failed to start does not leak its runner


class ThreadBoundRunner(FakeRunner):
    """A runner whose context belongs to the thread that ran it, as a pycuda TensorRT runner's does."""

    def __init__(self, fail_warm_up: bool = False) -> None:
        super().__init__()
        self.fail_warm_up = fail_warm_up
        self.closed_on: str | None = None

    def encode_video_batch(self, images: np.ndarray) -> np.ndarray:
        if self.fail_warm_up:
            raise RuntimeError("no CUDA device")
        return super().encode_video_batch(images)

    def close(self) -> None:
        if self.threads and threading.current_thread().name not in self.threads:
            raise FadEdgeError("close this runner from the thread that ran it")
        self.closed_on = threading.current_thread().name
        super().close()


def test_an_owned_runner_is_closed_on_the_thread_that_ran_it(monkeypatch):
    runner = ThreadBoundRunner()
    monkeypatch.setitem(sys.modules, "fad_edge.runtime.select", fake_select(runner))
    with ListenerStream.from_export(Path("engines/any")) as stream:
        feed(stream, range(16))
    assert runner.closed and runner.closed_on == "listener-stream" and stream.stats().clips == 2
    failing = ThreadBoundRunner(fail_warm_up=True)
    monkeypatch.setitem(sys.modules, "fad_edge.runtime.select", fake_select(failing))
    with pytest.raises(RuntimeError, match="warm-up failed: no CUDA device"):
        ListenerStream.from_export(Path("engines/any"))
    assert failing.closed and failing.closed_on == "listener-stream"  # not leaked, and closed where it ran


def test_from_export_leaves_the_precision_to_the_backend_unless_asked(monkeypatch):
    asked: list[object] = []

    def open_runner(folder, backend, precision, **kwargs):
        asked.append((backend, precision))
        return FakeRunner()

    monkeypatch.setitem(sys.modules, "fad_edge.runtime.select", types.SimpleNamespace(open_runner=open_runner))
    ListenerStream.from_export(Path("engines/any"), backend="trt").close()  # trt runs fp16 only: not "fp32"
    ListenerStream.from_export(Path("engines/any"), precision="int8").close()
    assert asked == [("trt", None), ("ort", "int8")]


def test_clips_with_a_timeout_waits_through_pushes_until_the_stream_is_idle():
    stream, received = ListenerStream(FakeRunner()), []

    def produce():
        for k in range(40):  # 5 clips over about 0.6 s: every push wakes the consumer's condition
            feed(stream, range(k, k + 1))
            time.sleep(0.015)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    started = time.monotonic()
    received = [clip.index for clip in stream.clips(timeout=0.5)]
    assert received == [0, 1, 2, 3, 4] and time.monotonic() - started >= 0.5
    producer.join()
    stream.close()


class FailingRunner(FakeRunner):
    """Gives NaN motion for frames after the first clip's (`picture`'s brightness), as damaged weights might."""

    def clips_motion(self, conditions, state, generator):
        motion = super().clips_motion(conditions, state, generator)
        return motion * np.nan if conditions[:, -1, 0].max() > picture(7).mean() / 255 + 1e-6 else motion


def test_a_failed_worker_raises_from_clips_after_the_clips_it_made():
    stream = ListenerStream(FailingRunner())
    feed(stream, range(16))
    assert wait_for(lambda: stream._error is not None)
    clips = stream.clips()
    assert next(clips).index == 0
    with pytest.raises(RuntimeError, match="worker failed.*not finite"):
        next(clips)
    with pytest.raises(RuntimeError, match="not finite"):
        stream.close()


def test_callback_errors_are_logged_once_and_a_systemexit_does_not_end_the_deliveries(caplog):
    calls = []

    def on_clip(clip):
        calls.append(clip.index)
        if len(calls) == 1:
            raise SystemExit
        raise KeyError("motoin")

    with ListenerStream(FakeRunner(), on_clip=on_clip) as stream:
        feed(stream, range(24))
    assert calls == [0, 1, 2] and stream.stats().callback_errors == 3 and stream.stats().clips_dropped == 0
    logged = [record for record in caplog.records if "raised" in record.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None


def test_close_from_the_callback_stops_the_stream_and_closes_its_runner(monkeypatch):
    opened = FakeRunner()
    monkeypatch.setitem(sys.modules, "fad_edge.runtime.select", fake_select(opened))
    errors = []

    def on_clip(clip):
        try:
            stream.close()
        except BaseException as error:  # noqa: BLE001 - recorded for the assertion below
            errors.append(error)

    stream = ListenerStream.from_export(Path("engines/any"), on_clip=on_clip)
    feed(stream, range(8))
    assert wait_for(lambda: opened.closed)
    assert errors == [] and stream.stats().callback_errors == 0
    with pytest.raises(RuntimeError, match="closed"):
        stream.push_video(picture(9), 9 / 30)


def test_a_face_box_is_checked_when_the_stream_is_built_and_against_each_frame():
    for bad in [(float("nan"),) * 4, (0, 0, 0, 0), (1, 2, 3), "10,10,50,50"]:
        with pytest.raises(StreamInputError, match="box"):  # a ValueError too
            ListenerStream(FakeRunner(), face="box", box=bad)
    with pytest.raises(StreamInputError, match="face mode"):
        ListenerStream(FakeRunner(), face="dlib-cnn")
    with ListenerStream(FakeRunner(), face="box", box=(700, 500, 100, 100)) as stream:
        with pytest.raises(StreamInputError, match="outside the 640x480 frame"):
            stream.push_video(np.zeros((480, 640, 3), np.uint8), 0.0)
        stream.push_video(np.zeros((720, 1280, 3), np.uint8), 0.0)  # the box is inside a larger frame
    assert stream.stats().frames == 1
