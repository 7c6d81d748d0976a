"""bench/speaker_reading.py: each factor's r is read off the speaker's coefficients through the speaker basis."""

import numpy as np
from helpers import bench_script

from fad_edge.constants import EXPRESSION
from fad_edge.data.synthetic import SPEAKER_FACTORS, speaker_basis


def _coefficients(factors: np.ndarray) -> np.ndarray:
    out = np.zeros((len(factors), 56), np.float32)
    out[:, EXPRESSION] = factors @ speaker_basis().T
    return out


def test_each_factor_is_scored_on_its_own():
    probe = bench_script("speaker_reading")
    rng = np.random.default_rng(0)
    true = rng.standard_normal((500, len(SPEAKER_FACTORS)))
    predicted = true.copy()
    predicted[:, 1] = rng.standard_normal(500)  # the brow missed
    predicted[:, 2] *= -1  # the blink read upside down
    predicted[:, 3] = 0  # the mouth, which is not scored, missed
    r = probe.factor_r(_coefficients(predicted), _coefficients(true))
    assert set(r) == {"smile", "brow", "blink"}
    assert r["smile"] > 0.999 and abs(r["brow"]) < 0.15 and r["blink"] < -0.999
