"""ListenerStream: chunked, jittered live input gives the offline motion; bounded memory; bad input handled."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from fad_edge.data.synthetic import SyntheticConfig, generate_session
from fad_edge.runtime.ort_runner import OrtRunner
from fad_edge.runtime.stream import ListenerStream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session():
    return generate_session(8, SyntheticConfig(seconds=3.0, image_size=48))  # 90 frames: 11 clips and 2 frames


# The feeds below let the video run up to 4 clips ahead of the audio. With the default timing the
# stream would then give a waiting clip silence, at a moment set by how fast the worker thread runs:
# these tests wait for all audio, so their result cannot depend on the machine's load.
WAIT_FOR_AUDIO = {"audio_timeout": None, "max_pending_clips": 16}


def _feed(stream: ListenerStream, frames, audio, rate: int, seed: int, jitter: float = 0.004) -> None:
    """Frames on a jittered 30 fps clock and audio in random chunk sizes, interleaved at random."""
    rng = np.random.default_rng(seed)
    position, next_frame = 0, 0
    while next_frame < len(frames) or position < len(audio):
        if next_frame < len(frames) and (position >= len(audio) or rng.random() < 0.5):
            stream.push_video(frames[next_frame], 100.0 + next_frame / 30 + rng.uniform(-jitter, jitter))
            next_frame += 1
        else:
            size = int(rng.integers(1, 3000))
            stamp = 100.0 + position / rate + rng.uniform(-jitter, jitter)
            stream.push_audio(audio[position : position + size], rate, stamp)
            position += size


def test_chunked_stream_matches_the_offline_runner(tiny_export, session):
    reference = OrtRunner(tiny_export, threads=1, seed=7).run(session.frames, session.audio, 16000)
    received = []
    with ListenerStream(OrtRunner(tiny_export, threads=1, seed=7), on_clip=received.append,
                        **WAIT_FOR_AUDIO) as stream:
        _feed(stream, session.frames, session.audio, 16000, seed=1)
    motion = np.concatenate([clip.motion for clip in received])
    assert [clip.index for clip in received] == list(range(12))
    times = np.concatenate([clip.timestamps for clip in received])
    assert len(times) == 90 and np.all(np.diff(times) > 0)
    assert motion.shape == reference.shape
    assert np.abs(motion - reference).max() <= 1e-4 * np.abs(reference).max()
    stats = stream.stats()
    assert stats.clips == 12 and stats.frames == 90 and stats.frames_skipped == stats.frames_repeated == 0


def test_audio_at_another_rate_is_resampled_as_it_streams(tiny_export, session):
    import librosa

    audio = librosa.resample(session.audio, orig_sr=16000, target_sr=44100)
    reference = OrtRunner(tiny_export, threads=1).run(session.frames, audio, 44100)
    with ListenerStream(OrtRunner(tiny_export, threads=1), **WAIT_FOR_AUDIO) as stream:
        _feed(stream, session.frames, audio, 44100, seed=2)
    motion = np.concatenate([clip.motion for clip in stream.clips(timeout=0)])
    assert stream.stats().audio_dead == 0
    assert motion.shape == reference.shape
    # streaming and one-shot resamplers differ by a few samples' worth at chunk edges
    assert np.abs(motion - reference).max() <= 0.05 * np.abs(reference).max()


def test_late_and_missing_frames_keep_audio_aligned_and_are_counted(tiny_export, session):
    with ListenerStream(OrtRunner(tiny_export, threads=1)) as stream:
        stream.push_audio(session.audio, 16000, 0.0)
        for k in range(40):
            if k == 10:
                continue  # dropped by the camera: repeated
            stream.push_video(session.frames[k], k / 30)
            if k == 20:
                stream.push_video(session.frames[5], 5 / 30)  # late duplicate: skipped
    stats = stream.stats()
    assert stats.frames_repeated == 1 and stats.frames_skipped == 1 and stats.clips == 5


def test_bad_input_is_handled_without_stopping_the_stream(tiny_export, session):
    def failing_callback(clip):
        raise RuntimeError("the caller's bug")

    with ListenerStream(OrtRunner(tiny_export, threads=1), on_clip=failing_callback, color="bgr") as stream:
        stream.push_audio(np.zeros(0, np.float32), 16000, 0.0)  # empty chunk: ignored
        stream.push_audio(np.full(8000, np.nan, np.float32), 16000, 0.0)  # NaN: silence of that length
        stream.push_audio(session.audio[8000:32000], 16000)
        for k in range(24):
            frame = session.frames[k] if k % 2 else np.ascontiguousarray(session.frames[k][:40, :30])  # size changes
            stream.push_video(frame, k / 30)
        with pytest.raises(ValueError, match="uint8"):
            stream.push_video(np.zeros((10, 10), np.uint8), 1.0)
    stats = stream.stats()
    assert stats.audio_chunks_empty == 1 and stats.audio_chunks_invalid == 1
    assert stats.clips == 3 and stats.callback_errors == 3


def test_a_long_stream_keeps_memory_flat_and_loses_no_clip(tiny_export, session):
    frames, audio = session.frames, session.audio
    total = 2400  # 80 s of input, the 3 s session looped
    chunk = 16000 // 30
    count = 0

    def on_clip(_clip):
        nonlocal count
        count += 1

    tracemalloc.start()
    stream = ListenerStream(OrtRunner(tiny_export, threads=1), on_clip=on_clip, carry_motion=True)
    sizes = []
    for k in range(total):
        stream.push_audio(audio[(k % 90) * chunk : (k % 90 + 1) * chunk], 16000)
        stream.push_video(frames[k % 90], k / 30)
        if k in (600, 2399):
            sizes.append(tracemalloc.get_traced_memory()[0])
        assert stream.aligner.buffered_frames() <= (stream.max_pending_clips + 1) * 8
        assert stream.aligner.buffered_audio() <= 2 * 16000  # only what unfinished clips need
    stream.close()
    tracemalloc.stop()
    assert count == math.ceil(total / 8)
    assert sizes[1] - sizes[0] < 2_000_000, sizes  # no growth with run length beyond noise
    stats = stream.stats()
    assert stats.latency_p99_ms > 0 and np.isfinite(stats.boundary_jump)


def test_audio_without_video_is_capped(tiny_export):
    with ListenerStream(OrtRunner(tiny_export, threads=1), max_audio_seconds=3.0) as stream:
        for _ in range(5):
            stream.push_audio(np.zeros(16000, np.float32), 16000)
        assert stream.aligner.buffered_audio() <= 3 * 16000
    assert stream.stats().audio_samples_dropped == 2 * 16000
