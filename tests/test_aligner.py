"""ClipAligner without threads or a model: slots from timestamps, audio placement, and hostile input."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fad_edge.constants import CLIP_LEN, SAMPLE_RATE
from fad_edge.errors import FadEdgeError, StreamInputError
from fad_edge.runtime.aligner import (
    AlignerConfig,
    ClipAligner,
    ReadyClip,
    audio_needed,
    audio_seconds_needed,
    slot_sample,
)
from fad_edge.runtime.stream_inputs import AudioLayout, check_rate, mono_samples


def frame(k: int) -> np.ndarray:
    """A stand-in frame that says which one it is (the aligner never looks inside frames)."""
    return np.array([k])


def ids(clips: list[ReadyClip]) -> list[int]:
    return [int(f) for clip in clips for f in clip.frames[: clip.count, 0]]


def drain(aligner: ClipAligner, now: float = 0.0, closing: bool = False) -> list[ReadyClip]:
    if closing:
        aligner.finish()
    clips = []
    while (clip := aligner.take_ready(now, closing)) is not None:
        clips.append(clip)
    return clips


def placed(clips: list[ReadyClip]) -> dict[int, float]:
    """Absolute 16 kHz sample index -> value, as the clips saw their audio."""
    out: dict[int, float] = {}
    for clip in clips:
        out.update(zip(range(clip.audio_offset, clip.audio_offset + len(clip.audio)), clip.audio.tolist()))
    return out


def test_jittered_input_gives_every_frame_its_slot_and_every_sample_its_place():
    rng = np.random.default_rng(0)
    audio = rng.uniform(-1, 1, 3 * SAMPLE_RATE).astype(np.float32)
    aligner, clips, position, k = ClipAligner(), [], 0, 0
    while k < 90 or position < len(audio):
        if k < 90 and (position >= len(audio) or rng.random() < 0.5):
            aligner.push_frame(frame(k), 100.0 + k / 30 + (rng.uniform(-0.012, 0.012) if k else 0.0), now=0.0)
            k += 1
        else:
            size = int(rng.integers(1, 3000))
            aligner.push_audio(audio[position : position + size], SAMPLE_RATE,
                               100.0 + position / SAMPLE_RATE + rng.uniform(-0.004, 0.004), now=0.0)
            position += size
        clips += drain(aligner)
    clips += drain(aligner, closing=True)
    assert ids(clips) == list(range(90)) and [clip.index for clip in clips] == list(range(12))
    assert clips[-1].count == 2 and aligner.counts["frames_padded"] == 6
    assert not aligner.counts["frames_repeated"] and not aligner.counts["frames_skipped"]
    np.testing.assert_allclose(np.concatenate([c.times for c in clips]), 100.0 + np.arange(90) / 30)
    samples = placed(clips)
    index = np.array([i for i in samples if i < len(audio)])
    np.testing.assert_array_equal(np.array([samples[i] for i in index]), audio[index])  # laid end to end, exactly
    assert clips[0].new_segment and not any(clip.new_segment for clip in clips[1:])


def test_missing_frames_are_repeated_and_late_ones_skipped():
    aligner = ClipAligner()
    aligner.push_audio(np.zeros(SAMPLE_RATE * 2, np.float32), SAMPLE_RATE, 0.0, now=0.0)
    for k in range(24):
        if k not in (10, 11, 12):
            aligner.push_frame(frame(k), k / 30, now=0.0)
        if k == 20:
            aligner.push_frame(frame(99), 5 / 30, now=0.0)  # a late duplicate
            aligner.push_frame(frame(98), 20 / 30 + 0.01, now=0.0)  # jitter into a filled slot
    got = ids(drain(aligner))
    assert got == list(range(10)) + [9, 9, 9] + list(range(13, 24))
    assert aligner.counts["frames_repeated"] == 3 and aligner.counts["frames_skipped"] == 2


def test_an_audio_gap_is_silence_and_an_overlap_is_dropped():
    aligner = ClipAligner()
    first, second, third = (np.full(n, v, np.float32) for n, v in ((16000, 0.1), (8000, 0.2), (8000, 0.3)))
    aligner.push_audio(first, SAMPLE_RATE, 0.0, now=0.0)
    aligner.push_audio(second, SAMPLE_RATE, 1.5, now=0.0)  # 0.5 s after the first ended: a gap
    aligner.push_audio(third, SAMPLE_RATE, 1.75, now=0.0)  # starts 0.25 s before the second ended: overlap
    for k in range(75):
        aligner.push_frame(frame(k), k / 30, now=0.0)
    samples = placed(drain(aligner, closing=True))
    assert samples[15999] == pytest.approx(0.1) and samples[16000] == samples[23999] == 0.0
    assert samples[24000] == pytest.approx(0.2) and samples[31999] == pytest.approx(0.2)
    assert samples[32000] == pytest.approx(0.3) and samples[35999] == pytest.approx(0.3) and 36000 not in samples
    assert aligner.counts["audio_samples_filled"] == 8000 and aligner.counts["audio_samples_dropped"] == 4000


def test_sample_rate_changes_are_resampled_in_place():
    aligner, t = ClipAligner(), 0.0
    for rate in (44100, 16000, 48000):
        tone = np.sin(2 * np.pi * 440 * (t + np.arange(rate) / rate)).astype(np.float32)
        for start in range(0, rate, 1000):  # 1 s in chunks
            aligner.push_audio(tone[start : start + 1000], rate, t + start / rate, now=0.0)
        t += 1.0
    for k in range(90):
        aligner.push_frame(frame(k), k / 30, now=0.0)
    samples = placed(drain(aligner, closing=True))
    index = np.array([i for i in samples if all(abs(i - edge) > 300 for edge in (0, 16000, 32000, 48000))])
    expected = np.sin(2 * np.pi * 440 * index / SAMPLE_RATE)
    assert np.abs(np.array([samples[i] for i in index]) - expected).max() < 0.02
    assert aligner.counts["audio_samples_filled"] == aligner.counts["audio_samples_dropped"] == 0


@pytest.mark.parametrize("jump", [1e6, -1e6, 5.0, -3.0])
def test_a_clock_jump_starts_a_new_segment_instead_of_filling_it(jump):
    aligner = ClipAligner()
    aligner.push_audio(np.full(SAMPLE_RATE, 0.5, np.float32), SAMPLE_RATE, 100.0, now=0.0)
    for k in range(12):
        aligner.push_frame(frame(k), 100.0 + k / 30, now=0.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    aligner.push_frame(frame(12), 100.0 + jump, now=0.0)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 1_000_000 and len(aligner._slots) == 17  # 12 frames, 4 padding, the new frame
    tone = np.full(SAMPLE_RATE, 0.25, np.float32)
    aligner.push_audio(tone, SAMPLE_RATE, 100.0 + jump, now=0.0)
    for k in range(13, 24):
        aligner.push_frame(frame(k), 100.0 + jump + (k - 12) / 30, now=0.0)
    clips = drain(aligner)
    assert [clip.index for clip in clips] == [0, 1, 2] and [clip.count for clip in clips] == [8, 4, 8]
    assert ids(clips) == list(range(20)) and clips[2].new_segment and not clips[1].new_segment
    assert clips[2].times[0] == pytest.approx(100.0 + jump)
    samples = placed(clips)
    assert samples[slot_sample(16) - 1] == pytest.approx(0.5) and samples[slot_sample(16)] == pytest.approx(0.25)
    assert samples[slot_sample(12) - 1] == pytest.approx(0.5)  # the old segment kept its audio
    # The new segment hears nothing of the old one: its first windows reach before its anchor, where a
    # session's start hears silence.
    assert clips[2].audio_offset == slot_sample(16) and np.all(clips[2].audio == np.float32(0.25))
    assert aligner.counts["clock_jumps_video"] == 1 and aligner.counts["frames_padded"] == 4
    assert aligner.counts["frames_repeated"] == 0 and aligner.counts["clock_jumps_audio"] == 0


def test_an_audio_clock_jump_never_allocates_the_gap():
    aligner = ClipAligner()
    aligner.push_audio(np.full(8000, 0.1, np.float32), SAMPLE_RATE, 0.0, now=0.0)
    tracemalloc.start()
    aligner.push_audio(np.full(8000, 0.2, np.float32), SAMPLE_RATE, 1e6, now=0.0)
    grown = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    aligner.push_audio(np.full(8000, 0.3, np.float32), SAMPLE_RATE, 1e6 + 0.5, now=0.0)  # on the new clock
    assert grown < 1_000_000 and aligner.buffered_audio() == 24000
    assert aligner.counts["clock_jumps_audio"] == 1 and aligner.counts["audio_samples_filled"] == 0
    for k in range(45):
        aligner.push_frame(frame(k), k / 30, now=0.0)
    samples = placed(drain(aligner))
    assert samples[7999] == pytest.approx(0.1) and samples[8000] == pytest.approx(0.2)
    assert samples[16000] == pytest.approx(0.3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1.7e18, "soon", None])
def test_a_bad_timestamp_is_refused_and_changes_nothing(bad):
    aligner = ClipAligner()
    with pytest.raises(StreamInputError, match="timestamp"):
        aligner.push_frame(frame(0), bad, now=0.0)  # as the first input
    for k in range(10):
        aligner.push_frame(frame(k), 5.0 + k / 30, now=0.0)
    with pytest.raises(StreamInputError):
        aligner.push_frame(frame(99), bad, now=0.0)  # and later
    if bad is not None:
        with pytest.raises(ValueError):  # a StreamInputError is also a ValueError and a FadEdgeError
            aligner.push_audio(np.zeros(100, np.float32), SAMPLE_RATE, bad, now=0.0)
    for k in range(10, 16):
        aligner.push_frame(frame(k), 5.0 + k / 30, now=0.0)
    aligner.push_audio(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, 5.0, now=0.0)
    assert ids(drain(aligner)) == list(range(16)) and aligner.buffered_audio() < SAMPLE_RATE
    assert sum(aligner.counts[k] for k in ("frames_skipped", "frames_repeated", "clock_jumps_video")) == 0
    assert issubclass(StreamInputError, FadEdgeError)


def test_integer_audio_is_scaled_and_other_dtypes_are_refused():
    assert mono_samples(np.array([-32768, 16384], np.int16))[0].tolist() == [-1.0, 0.5]
    assert mono_samples(np.array([-(2**31), 2**30], np.int32))[0].tolist() == [-1.0, 0.5]
    floats, _ = mono_samples(np.array([0.25, -0.5]))  # float64
    assert floats.dtype == np.float32 and floats.tolist() == [0.25, -0.5]
    for bad in (np.zeros(4, np.uint8), np.zeros(4, bool), np.zeros(4, np.int64), np.array([0.1], object),
                np.zeros(4, np.complex64)):
        with pytest.raises(StreamInputError, match="float32"):
            mono_samples(bad)


def test_two_dimensional_audio_is_down_mixed_on_its_channel_axis():
    rng = np.random.default_rng(1)
    stereo = rng.uniform(-1, 1, (480, 2)).astype(np.float32)
    expected = stereo.mean(axis=1)
    last, layout = mono_samples(stereo)
    first, _ = mono_samples(np.ascontiguousarray(stereo.T))
    np.testing.assert_allclose(last, expected, rtol=1e-6)
    np.testing.assert_allclose(first, expected, rtol=1e-6)
    assert layout == AudioLayout(1, 2)
    small = stereo[:5]  # (5, 2): either axis could be the channels
    with pytest.raises(StreamInputError, match="ambiguous"):
        mono_samples(small)
    np.testing.assert_allclose(mono_samples(small, layout)[0], expected[:5], rtol=1e-6)  # earlier chunks decide
    with pytest.raises(StreamInputError, match="ambiguous"):
        mono_samples(np.zeros((20, 12), np.float32))
    with pytest.raises(StreamInputError):
        mono_samples(np.zeros((2, 3, 100), np.float32))
    aligner = ClipAligner()
    aligner.push_audio(np.zeros((0, 2), np.float32), SAMPLE_RATE, None, now=0.0)
    assert aligner.counts["audio_chunks_empty"] == 1


def test_int16_stereo_in_opposite_phase_is_heard_not_averaged_to_silence():
    tone = (8000 * np.sin(np.arange(960) / 5)).astype(np.int16)
    inverted = np.stack([tone, -tone], axis=1)  # (N, 2) int16, a miswired microphone
    mono, layout = mono_samples(inverted)
    assert layout == AudioLayout(1, 2, taken=0)
    np.testing.assert_allclose(mono, tone / 32768, atol=1e-6)


def test_the_channel_heard_alone_stays_the_same_from_chunk_to_chunk():
    # Near-equal channels in opposite phase, the louder one swapping: each chunk alone would take its
    # louder channel and flip the wave's sign at every other chunk boundary.
    tone = np.sin(np.arange(4800) / 5).astype(np.float32) * 0.5
    layout, heard = None, []
    for k, gain in enumerate([1.01, 0.99, 1.01, 0.99]):
        chunk = tone[k * 1200:(k + 1) * 1200]
        mono, layout = mono_samples(np.stack([chunk * gain, -chunk], axis=1), layout)
        heard.append(mono)
    np.testing.assert_allclose(np.concatenate(heard), tone * np.repeat([1.01, 0.99, 1.01, 0.99], 1200), atol=1e-6)
    assert layout == AudioLayout(1, 2, taken=0)
    mono, layout = mono_samples(np.stack([tone[:1200], tone[:1200]], axis=1), layout)  # in phase: averaged
    np.testing.assert_allclose(mono, tone[:1200], atol=1e-6)
    assert layout == AudioLayout(1, 2, taken=0)  # remembered for the next chunk that cancels


def test_sample_rates_must_be_whole_and_plausible():
    assert check_rate(44100.0) == 44100 and check_rate(np.int64(8000)) == 8000
    for bad in (0, -16000, 44100.5, float("nan"), 10**9, "fast", None):
        with pytest.raises(StreamInputError, match="sample rate"):
            check_rate(bad)


def test_dead_audio_gives_silence_after_the_timeout_and_audio_coming_back_is_placed():
    aligner = ClipAligner(AlignerConfig(audio_timeout=0.5))
    aligner.push_audio(np.full(1000, 0.5, np.float32), SAMPLE_RATE, 0.0, now=0.0)
    for k in range(8):
        aligner.push_frame(frame(k), k / 30, now=k / 30)
    assert aligner.take_ready(now=0.4) is None  # waiting for the audio
    first = aligner.take_ready(now=0.6)  # the microphone is gone: silence
    assert first is not None and aligner.counts["audio_dead"] == 1
    for k in range(8, 16):
        aligner.push_frame(frame(k), k / 30, now=0.6)
    assert aligner.take_ready(now=0.6) is not None  # still dead: no new wait
    aligner.push_audio(np.full(8000, 0.25, np.float32), SAMPLE_RATE, 16 / 30, now=0.7)  # back
    for k in range(16, 24):
        aligner.push_frame(frame(k), k / 30, now=0.7)
    third = aligner.take_ready(now=0.7)
    assert third is not None and aligner.counts["audio_dead"] == 1
    start = np.flatnonzero(third.audio == 0.25)[0] + third.audio_offset
    assert abs(start - slot_sample(16)) <= SAMPLE_RATE // 30  # within a frame of where it belongs
    assert aligner.counts["audio_samples_filled"] > 0


def test_video_far_ahead_of_absent_audio_does_not_wait_for_ever():
    aligner = ClipAligner(AlignerConfig(audio_timeout=None, max_pending_clips=3))
    for k in range(3 * CLIP_LEN - 1):
        aligner.push_frame(frame(k), k / 30, now=0.0)
    assert aligner.take_ready(now=1e9) is None and aligner.complete_clips() == 0
    aligner.push_frame(frame(23), 23 / 30, now=0.0)
    clip = aligner.take_ready(now=0.0)
    assert clip is not None and len(clip.audio) > 0 and not clip.audio.any()
    assert aligner.counts["audio_dead"] == 1


def test_any_timestamp_sequence_keeps_work_and_memory_bounded():
    rng = np.random.default_rng(3)
    config = AlignerConfig(max_jump=1.0, audio_timeout=0.2, max_audio_seconds=3.0)
    aligner, t_video, t_audio, now, taken = ClipAligner(config), 0.0, 0.0, 0.0, 0
    choices = [1 / 30, 0.0, -0.01, 0.9, -0.9, 1e6, -1e6, 1e9, float("nan"), float("inf")]
    for step in range(3000):
        now += 0.01
        if rng.random() < 0.6:
            t_video = t_video + choices[int(rng.integers(len(choices)))] if rng.random() < 0.1 else t_video + 1 / 30
            try:
                aligner.push_frame(frame(step), t_video, now)
            except StreamInputError:
                t_video = 0.0 if not np.isfinite(t_video) else t_video
        else:
            jump = choices[int(rng.integers(len(choices)))] if rng.random() < 0.1 else 0.0
            rate = int(rng.choice([8000, 16000, 44100]))
            size = int(rng.integers(0, 2000))
            try:
                aligner.push_audio(rng.uniform(-1, 1, size).astype(np.float32), rate, t_audio + jump, now)
                t_audio += jump + size / rate
            except StreamInputError:
                pass
        while (clip := aligner.take_ready(now)) is not None:
            assert clip.index == taken and clip.frames.shape[0] == CLIP_LEN
            assert len(clip.audio) <= audio_needed(0) + 2 * 512
            taken += 1
        assert len(aligner._slots) <= config.max_jump * 30 + 2 * CLIP_LEN
        assert aligner.buffered_audio() <= config.max_audio_seconds * SAMPLE_RATE
    assert taken > 100 and aligner.counts["clock_jumps_video"] > 0 and aligner.counts["clock_jumps_audio"] > 0


def test_placed_frames_are_the_next_clips_own_from_where_asked():
    aligner = ClipAligner()
    for k in range(11):
        aligner.push_frame(frame(k), k / 30, 0.0)
    assert [int(f[0]) for f in aligner.placed_frames(0)] == list(range(8))  # the next clip's, not beyond
    assert [int(f[0]) for f in aligner.placed_frames(5)] == [5, 6, 7]
    assert aligner.placed_frames(8) == []
    aligner.push_audio(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, 0.0, 0.0)
    assert aligner.take_ready(0.0) is not None
    assert [int(f[0]) for f in aligner.placed_frames(1)] == [9, 10]  # clip 1's frames placed so far


def test_placed_audio_covers_frames_with_their_video_and_all_their_samples_but_never_the_last():
    from fad_edge.data.audio_features import log_mel
    from fad_edge.runtime.aligner import frame_audio_needed

    rng = np.random.default_rng(0)
    audio = rng.standard_normal(SAMPLE_RATE).astype(np.float32)
    aligner = ClipAligner()
    for k in range(5):
        aligner.push_frame(frame(k), k / 30, 0.0)
    assert aligner.placed_audio(0) is None  # no audio yet
    aligner.push_audio(audio[: frame_audio_needed(2) + 1], SAMPLE_RATE, 0.0, 0.0)
    placed = aligner.placed_audio(0)
    assert placed is not None and (placed.start, placed.stop, placed.new_segment) == (0, 3, True)
    aligner.push_audio(audio[frame_audio_needed(2) + 1 :], SAMPLE_RATE, None, 0.0)
    placed = aligner.placed_audio(3)
    assert placed is not None and (placed.start, placed.stop) == (3, 5)  # as far as the video is placed
    for k in range(5, 8):
        aligner.push_frame(frame(k), k / 30, 0.0)
    placed = aligner.placed_audio(0)
    assert placed is not None and placed.stop == CLIP_LEN - 1  # the last frame waits for the clip
    clip = aligner.take_ready(0.0)
    assert clip is not None
    heard = log_mel(placed.audio, 7, 64, first_frame=0, offset=placed.audio_offset)
    whole = log_mel(clip.audio, CLIP_LEN, 64, first_frame=0, offset=clip.audio_offset)
    np.testing.assert_allclose(heard, whole[: len(heard)], rtol=0, atol=1e-6)  # the same mel as the clip's


@pytest.mark.parametrize("step", [1000.0, -10.0])
def test_audio_pushed_late_across_a_video_clock_jump_keeps_its_place(step):
    """A shared clock steps at t = 3 s while the microphone's chunks arrive 100 ms after capture: the chunks
    captured before the step and pushed after it are the old segment's, and the new clock's audio stays aligned."""
    aligner, clips = ClipAligner(), []
    clock = lambda t: t + (step if t >= 3.0 else 0.0)  # noqa: E731
    video = [(k / 30, "video", k / 30) for k in range(240)]
    audio = [(j / 50 + 0.1, "audio", j / 50) for j in range(400)]  # 20 ms chunks, pushed 100 ms late
    for now, kind, t in sorted(video + audio):
        if kind == "video":
            aligner.push_frame(frame(int(round(t * 30))), clock(t), now)
        else:  # each sample's value is its own capture time
            aligner.push_audio((t + np.arange(320) / SAMPLE_RATE).astype(np.float32), SAMPLE_RATE, clock(t), now)
        clips.extend(drain(aligner, now))
    after = [clip for clip in clips if clip.new_segment and clip.index > 0]
    assert len(after) == 1 and aligner.counts["clock_jumps_video"] == 1 and aligner.counts["clock_jumps_audio"] == 0
    for clip in clips:
        if clip.index >= after[0].index and clip.count == CLIP_LEN:
            first = int(round((clip.times[0] - (step if clip.times[0] - step >= 3.0 - 1e-6 else 0.0)) * 30))
            heard = clip.audio[slot_sample(clip.index * CLIP_LEN) - clip.audio_offset]
            # The new segment's slot 0 is frame `first`: its audio must be that frame's, within a sample or two.
            assert abs(heard - first / 30) < 2 / SAMPLE_RATE, (clip.index, heard, first / 30)
    assert aligner.counts["audio_samples_dropped"] > 0  # the late old-clock audio


def test_timestamps_in_milliseconds_are_refused_from_the_third_jumping_frame():
    aligner = ClipAligner()
    aligner.push_frame(frame(0), 5000.0, now=0.0)
    aligner.push_frame(frame(1), 5033.3, now=0.0)  # a jump: a clock step can happen
    aligner.push_frame(frame(2), 5066.7, now=0.0)  # two in a row
    with pytest.raises(StreamInputError, match="must be seconds"):
        aligner.push_frame(frame(3), 5100.0, now=0.0)
    aligner.push_frame(frame(3), 5066.7 + 1 / 30, now=0.0)  # seconds again: accepted
    assert aligner.counts["clock_jumps_video"] == 2 and aligner.counts["frames"] == 4


@pytest.mark.parametrize("setting", [{"max_pending_clips": -1}, {"max_pending_clips": 0}, {"max_pending_clips": 1.5},
                                     {"max_audio_seconds": 0}, {"max_audio_seconds": -5}, {"max_jump": 0},
                                     {"max_jump": float("nan")}, {"audio_timeout": 0}, {"audio_timeout": "1"},
                                     {"max_pending_clips": 64}])  # 17 s of waiting frames against 10 s of audio
def test_timing_settings_that_cannot_work_are_refused(setting):
    with pytest.raises(StreamInputError, match=next(iter(setting))):
        AlignerConfig(**setting)


def test_float_audio_far_beyond_full_scale_is_refused_not_misread():
    aligner = ClipAligner()
    with pytest.raises(StreamInputError, match="within \\[-1, 1\\].*32768"):
        aligner.push_audio(np.full(100, 20000.0, np.float32), SAMPLE_RATE, 0.0, now=0.0)  # int16 values as float
    chunk = np.zeros(100, np.float32)
    chunk[5] = 1e20
    with pytest.raises(StreamInputError, match="1e\\+20"):
        aligner.push_audio(chunk, SAMPLE_RATE, 0.0, now=0.0)
    aligner.push_audio(np.full(100, 1.5, np.float32), SAMPLE_RATE, 0.0, now=0.0)  # a hot signal is still audio
    assert aligner.buffered_audio() == 100


def test_a_new_segments_frames_heard_ahead_start_at_its_anchor():
    """What a stream encodes ahead for a segment's first frames is what its clip will hear: no old audio."""
    aligner = ClipAligner()
    aligner.push_audio(np.full(SAMPLE_RATE, 0.5, np.float32), SAMPLE_RATE, 0.0, now=0.0)
    for k in range(8):
        aligner.push_frame(frame(k), k / 30, now=0.0)
    assert aligner.take_ready(0.0) is not None
    aligner.push_frame(frame(8), 50.0, now=0.0)  # the jump
    aligner.push_audio(np.full(SAMPLE_RATE, 0.25, np.float32), SAMPLE_RATE, 50.0, now=0.0)
    for k in range(9, 14):
        aligner.push_frame(frame(k), 50.0 + (k - 8) / 30, now=0.0)
    placed = aligner.placed_audio(0)
    assert placed is not None and placed.new_segment and placed.stop == 6
    assert placed.audio_offset == slot_sample(8) and np.all(placed.audio == np.float32(0.25))


def test_waiting_clips_keep_their_audio_at_the_smallest_audio_cap_allowed():
    """A stalled model: every frame the stream lets wait, with the microphone 0.9 s ahead of the camera. The cap
    forgets only audio no waiting clip needs; each clip hears its own samples."""
    pending = 8
    aligner = ClipAligner(AlignerConfig(audio_timeout=None, max_pending_clips=pending,
                                        max_audio_seconds=audio_seconds_needed(pending)))
    frames, lead = (pending + 1) * CLIP_LEN, int(0.9 * SAMPLE_RATE)
    pushed = 0
    for k in range(frames):
        until = slot_sample(k + 1) + lead
        times = (np.arange(pushed, until) / SAMPLE_RATE).astype(np.float32)  # each sample's value is its time
        aligner.push_audio(times, SAMPLE_RATE, pushed / SAMPLE_RATE, now=0.0)
        pushed = until
        aligner.push_frame(frame(k), k / 30, now=0.0)
    clips = drain(aligner)
    assert len(clips) == pending + 1 and aligner.counts["audio_samples_dropped"] == 0
    for clip in clips:
        first = slot_sample(clip.index * CLIP_LEN)
        assert clip.audio[first - clip.audio_offset] == pytest.approx(first / SAMPLE_RATE)
