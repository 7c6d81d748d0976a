"""bench/nod_events.py: a model's nod at the phrase ends, scored on fakes made from the true nod (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bench_script

from fad_edge.constants import HEAD, N_COEFFS
from fad_edge.data.synthetic import SyntheticConfig, listener_rules


@pytest.fixture(scope="module")
def nod_events():
    return bench_script("nod_events").nod_events


@pytest.fixture(scope="module")
def rules():
    return [listener_rules(seed, SyntheticConfig(seconds=60)) for seed in (1, 2)]


def motion_with_pitch(pitch: np.ndarray) -> np.ndarray:
    motion = np.zeros((len(pitch), N_COEFFS), np.float32)
    motion[:, HEAD.start] = pitch
    return motion


def test_the_true_nod_scores_full_size_on_time_and_never_after_a_rising_end(nod_events, rules):
    result = nod_events([motion_with_pitch(rule.components["nod"]) for rule in rules], rules)
    assert result["falling_ends"] > 5 and result["rising_ends"] > 5
    assert result["amplitude"] == pytest.approx(1.0, abs=0.01)
    assert result["detected"] == 1.0 and result["false"] == 0.0
    assert result["shape_r"] == pytest.approx(1.0) and result["best_shift"] == 0
    assert result["nod_r"] == pytest.approx(1.0)
    # The true mean shape placed at each pause: the lag jitter of these two listeners is all it misses.
    assert 0.6 < result["placed_r"] < 1.0


def test_a_late_half_size_nod_is_seen_as_late_and_half_size(nod_events, rules):
    late = [motion_with_pitch(0.5 * np.roll(rule.components["nod"], 3)) for rule in rules]
    result = nod_events(late, rules)
    assert result["amplitude"] < 0.5
    assert result["best_shift"] == 3


def test_nods_after_every_phrase_end_are_counted_as_false(nod_events, rules):
    both = []
    for rule in rules:
        pitch, peak = rule.components["nod"].copy(), rule.components["nod"].max()
        for frame, rising in rule.pauses:
            nod_start = frame + rule.lags["nod"]
            if rising and nod_start + 20 <= len(pitch):
                pitch[nod_start : nod_start + 20] += peak * np.sin(np.linspace(0, 3 * np.pi, 20))
        both.append(motion_with_pitch(pitch))
    assert nod_events(both, rules)["false"] > 0.8
