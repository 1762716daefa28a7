"""The unit-wise kernel has no infinite-width limit (it grows like M; the method is finite_width_only): its
leading order is theory — each per-sample active fraction p_l(x_n) = P_{z ~ N(0, q_l(x_n))}(φ'(z) ≠ 0) by
Gauss–Hermite quadrature at the NNGP variance (``unit_wise.leading_order_fractions``, no kernel involved) — and
is tested here against the finite-width kernels it is the limit of (THEORY.md claim 4).

At width M the unit-wise kernel on the training points is diag(a_n) + I, a_n the number of hidden units with
δ ≠ 0 at x_n. Per hidden unit, φ_M(n) = (Θ_M[n, n] − 1)/ΣM → φ_∞(n) = Σ_l M_l p_l(x_n)/ΣM. For ReLU each unit
of the first hidden layer is active independently with probability p(x_n), so a_n/M is a binomial mean and
err(M) = max_n |φ_M(n) − φ_∞(n)| = O(M^{-1/2}) (deeper layers: the same order, leading order in 1/M).

Error model (width correction, calibrated on other seeds): s(M, seed) = err(M, seed)·√M has an M-free
distribution if the limit and the M^{-1/2} law are right. Its mean c̄ and standard deviation σ come from
calibration seeds (all widths pooled); on disjoint judged seeds the mean of s at *each* width must lie within
c̄ ± 4σ·√(1/J + 1/K) (J judged, K calibration draws). A wrong limit (a bias b in φ_∞) grows s like b√M and an
M^{-1} law shrinks it like M^{-1/2}: both leave the band at the widest M — the negative controls below
(a 5 % error in the limit, p = 0.525 for ReLU, adds 0.025·√4096 = 1.6 to s there).
For a smooth activation φ' ≠ 0 almost everywhere, p = 1 and the finite-width kernel is exactly the limit.
"""
from __future__ import annotations

import numpy as np
import pytest

from ntk_ngd import datasets
from ntk_ngd.function_space import method_kernels
from ntk_ngd.methods import unit_wise
from ntk_ngd.networks import mlp

N, D = 8, 16  # D + 1 ≥ N: every layer-input Gram has full rank (the limit's premise)
WIDTHS = (256, 1024, 4096)
K_SD = 4.0


def _per_unit_fractions(K, sum_width):
    return (np.diag(np.asarray(K)) - 1.0) / sum_width


def _fractions(depth, seeds, activation="relu"):
    """Per width: (φ_∞ (N,) from the quadrature theory, φ_M per seed (S, N) from the finite-width kernels)."""
    X = datasets.sphere(N, D, seed=0)
    out = []
    for M in WIDTHS:
        net = mlp(depth=depth, width=M, in_dim=D, activation=activation)
        total = M * (depth - 1)
        limit = unit_wise.leading_order_fractions(net, X)
        finite = np.array([_per_unit_fractions(method_kernels(net, X, "unit_wise", params=net.init(seed)).train, total)
                           for seed in seeds])
        out.append((limit, finite))
    return out


def _scaled_errors(fractions, bias=0.0):
    """s(M, seed) = √M·max_n |φ_M(n) − (φ_∞(n) + bias)|, (widths, seeds); ``bias`` makes the limit deliberately
    wrong (negative control)."""
    return np.array([np.sqrt(M) * np.max(np.abs(finite - (limit + bias)), axis=1)
                     for M, (limit, finite) in zip(WIDTHS, fractions)])


def _judge(calibration, judged):
    """(per-width judged means, c̄, half-width) of the module docstring's band."""
    c_bar, sigma = float(np.mean(calibration)), float(np.std(calibration, ddof=1))
    half = K_SD * sigma * np.sqrt(1.0 / judged.shape[1] + 1.0 / calibration.size)
    return judged.mean(axis=1), c_bar, half


def _check_limit(depth, cal_seeds, judged_seeds):
    fractions = _fractions(depth, cal_seeds + judged_seeds)
    s = _scaled_errors(fractions)
    cal, judged = s[:, :len(cal_seeds)], s[:, len(cal_seeds):]
    means, c_bar, half = _judge(cal, judged)
    assert np.all(np.abs(means - c_bar) <= half), (means, c_bar, half)
    # negative controls through the same band: the limit off by 5 % (p = 0.525), and an M^-1 law (s·(M0/M)^1/2)
    biased = _scaled_errors(fractions, bias=0.05 * 0.5)[:, len(cal_seeds):]
    assert abs(biased.mean(axis=1)[-1] - c_bar) > half, (biased.mean(axis=1), c_bar, half)
    faster = judged * np.sqrt(WIDTHS[0] / np.asarray(WIDTHS, float))[:, None]
    assert abs(faster.mean(axis=1)[-1] - c_bar) > half, (faster.mean(axis=1), c_bar, half)


def test_active_fraction_quadrature_closed_forms():
    """The quadrature against the fractions derived on paper: ReLU 1/2 at any variance, erf/gelu/sin 1."""
    q = np.array([1e-3, 0.3, 1.0, 7.5])
    for activation, p in (("relu", 0.5), ("erf", 1.0), ("gelu", 1.0), ("sin", 1.0)):
        net = mlp(depth=2, width=8, in_dim=3, activation=activation)
        assert np.max(np.abs(np.asarray(unit_wise.active_fraction(net, q)) - p)) <= 1e-14, activation


def test_relu_limit_matches_finite_width_depth2():
    _check_limit(depth=2, cal_seeds=list(range(8)), judged_seeds=list(range(8, 16)))


@pytest.mark.slow
def test_relu_limit_matches_finite_width_depth3():
    _check_limit(depth=3, cal_seeds=list(range(12)), judged_seeds=list(range(12, 24)))


def test_smooth_activation_limit_is_exact_at_every_width():
    """erf: δ never vanishes, so the finite-width kernel is (ΣM + 1)·I at every width, exactly the limit."""
    s = _scaled_errors(_fractions(3, [0, 1], activation="erf"))
    assert np.max(s / np.sqrt(np.asarray(WIDTHS, float))[:, None]) <= 1e-12


def test_no_infinite_width_kernel_and_depth_one_has_no_fraction():
    """params=None is one ValueError telling to use a finite width (no kernel built from the theory formula);
    depth 1 (no hidden unit) has no active fraction: a ValueError, not a crash."""
    X = datasets.sphere(N, D, seed=0)
    for depth in (1, 2):
        with pytest.raises(ValueError, match="finite width"):
            method_kernels(mlp(depth=depth, width=16, in_dim=D), X, "unit_wise")
    with pytest.raises(ValueError, match="depth >= 2"):
        unit_wise.leading_order_fractions(mlp(depth=1, width=16, in_dim=D), X)
    K = method_kernels(mlp(depth=1, width=16, in_dim=D), X, "unit_wise", params=mlp(depth=1, width=16, in_dim=D).init(0))
    assert np.max(np.abs(np.asarray(K.train) - np.eye(N))) <= 1e-10  # depth 1: the readout unit alone gives I
