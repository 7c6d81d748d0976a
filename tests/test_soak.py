"""The soak benchmark's harness, on a FakeRunner and a few simulated seconds: every fault fed, every clip accounted."""

from __future__ import annotations

import json

from fakes import FakeRunner

from fad_edge.bench.soak import SoakConfig, run_soak


def test_a_short_soak_feeds_every_fault_and_accounts_for_every_clip():
    config = SoakConfig(minutes=0.2, speed=20.0, rate_every=0.05, dropout_every=0.1, dropout_seconds=1.5,
                        jump_every=0.04, frame_garbage=0.05, not_an_image=0.02, nan_timestamp=0.02)
    result = run_soak(FakeRunner(), config)
    json.dumps(result)  # the report is plain JSON
    assert all(value == 0 for value in result["accounting"].values()), result["accounting"]
    counters, feeder = result["stream_counters"], result["feeder_counters"]
    assert counters["clips"] >= 12 * 30 // 8 - 10 and result["passed"]["no_unexplained_lost_clips"]
    assert counters["clock_jumps_video"] >= 2 and counters["clock_jumps_audio"] >= 1 and counters["audio_dead"] >= 1
    assert counters["timestamps_refused"] >= 1 and feeder["refused"] >= 2 and feeder["frames_garbage"] >= 1
    assert counters["frames_skipped"] >= feeder["frames_late"] > 0 and counters["frames_repeated"] > 0
    assert counters["frames_padded"] > 0  # jumps land inside clips, which are sealed as partial clips
    assert result["latency_ms"]["p50"] > 0 and result["memory_mb"]["per_minute"]
    # Growth counts from the end of the first minute: a 12 s run has no such sample, and says so.
    assert result["memory_mb"]["growth"] is None and result["passed"]["memory"] is None

