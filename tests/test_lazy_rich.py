"""Helpers of figure `lazy_rich`: trained and linearised trajectories agree to second order in the step, and the
10 % contour / contour-distance arithmetic on curves whose answer is known in closed form."""
from __future__ import annotations

import numpy as np
import pytest

from ntk_ngd import datasets, methods
from ntk_ngd.experiments.lazy_rich._measure import contour_distance, log_crossing, rule_step, trained_vs_linearised
from ntk_ngd.networks import mlp


@pytest.mark.parametrize("method", ["exact", "kfac"])
def test_trained_minus_linearised_is_second_order_in_the_step(method):
    """Both runs start at f = 0 with the same Jacobian, so f_M(t) − f_lin(t) is the second-order Taylor term of the
    network in Δθ = O(η): D(η) = aη² + bη³ + …, and halving η halves D(η)/η: ratio 2·(1 + (b/a)·η/2 + …).
    Error model: at η = 0.02/α and 0.01/α over k = 2 steps the relative next-order term (b/a)·η/2 is ≲ k·η·α·(a few)
    ≈ 4 %; float64 roundoff on D ~ 1e-5 is ~1e-11 relative. Band: 2 ± 10 %."""
    X, Y = datasets.synthetic(6, 8, seed=0)  # N ≤ in_dim: K-FAC isotropic (kfac_input_rank)
    net = mlp(depth=2, width=64, in_dim=8)
    params = net.init(0)
    spec = methods.get(method)
    lr, rule, pred = rule_step(spec, {"depth": 2, "widths": [64], "in_dim": 8}, X, Y)  # 1/α, α from the theory
    assert pred.isotropic and lr == pytest.approx(1.0 / pred.alpha), rule
    d1 = trained_vs_linearised(net, params, X, Y, spec, 0.02 * lr, 2)
    d2 = trained_vs_linearised(net, params, X, Y, spec, 0.01 * lr, 2)
    ratio = (d1 / 0.02) / (d2 / 0.01)
    assert 1.8 <= ratio <= 2.2, (d1, d2, ratio)


def test_log_crossing_of_a_power_law():
    """D = 0.2·(M/16)^{-1/2} on M = 16..1024 crosses 0.1 at M = 64 exactly (log-log interpolation is exact on a
    power law); all below / the last point above are censored; a diverged point before the crossing gives the
    geometric midpoint of its bracket."""
    widths = np.array([16, 32, 64, 128, 256, 512, 1024], float)
    log_d = np.log(0.2 * (widths / 16) ** -0.5)
    assert np.exp(log_crossing(widths, log_d)) == pytest.approx(64.0, rel=1e-12)
    assert log_crossing(widths, log_d - 2.0) == -np.inf
    assert log_crossing(widths, log_d + 5.0) == np.inf
    diverged = np.array([np.inf, np.log(0.05), -4.0, -5.0, -6.0, -7.0, -8.0])
    assert np.exp(log_crossing(widths, diverged)) == pytest.approx(np.sqrt(16 * 32), rel=1e-12)
    with pytest.raises(ValueError, match="one log D per width"):
        log_crossing(widths, log_d[:3])


def test_contour_distance_with_censoring():
    """Inside-grid pairs give |difference|; one contour beyond the grid gives the lower bound from the edge; both
    beyond the same edge give nothing; opposite edges give the whole grid."""
    lo, hi = np.log(16.0), np.log(4096.0)
    a = np.log([32.0, 100.0, 64.0])
    b = np.log([64.0, 100.0, 64.0])
    assert contour_distance(a, b, lo, hi) == (pytest.approx(np.log(2.0)), 3)
    dist, n = contour_distance([np.log(64.0), -np.inf], [-np.inf, -np.inf], lo, hi)
    assert (dist, n) == (pytest.approx(np.log(4.0)), 1)
    assert contour_distance([np.inf], [-np.inf], lo, hi) == (pytest.approx(hi - lo), 1)
    dist, n = contour_distance([-np.inf], [-np.inf], lo, hi)
    assert n == 0 and np.isnan(dist)
