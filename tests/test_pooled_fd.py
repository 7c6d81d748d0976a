"""bench/pooled_fd.py: its two terms add up to the evaluation's Frechet distance and tell a bias from a spread."""

import numpy as np
from helpers import bench_script

from fad_edge.metrics import frechet_distance


def test_the_terms_sum_to_the_frechet_distance_and_separate_bias_from_spread():
    study = bench_script("pooled_fd")
    rng = np.random.default_rng(0)
    real = rng.standard_normal((4000, 3))
    real -= real.mean(0)  # so that widening it leaves its mean where it was
    shifted, widened = real + np.array([0.5, 0.0, 0.0]), real * np.array([2.0, 1.0, 1.0])
    for predicted in (shifted, widened):
        terms = study.fd_terms(predicted, real)
        assert np.isclose(terms["means"] + terms["covariances"], frechet_distance(predicted, real), rtol=1e-6)
    bias, spread = study.fd_terms(shifted, real), study.fd_terms(widened, real)
    assert np.isclose(bias["means"], 0.25, rtol=1e-6) and bias["covariances"] < 1e-9
    assert spread["means"] < 1e-9 and np.isclose(spread["covariances"], 1.0, rtol=0.05)  # (2 - 1)^2 on one axis
    assert np.isclose(spread["variance predicted"] / spread["variance real"], 6 / 3, rtol=0.05)
