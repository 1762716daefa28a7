"""The default step size and the divergence rule (docs/THEORY.md "Step size"; ntk_ngd.trajectory).

Every fixed-kernel registry method at every damping, infinite and finite width: the default step never raises
the linearised MSE loss (the closed form is checked against a plain matrix-power iteration of the same kernel),
real training at width 1024 decreases the loss, a step that grows the loss 1000-fold is flagged at the right step,
the indefinite damped block-tridiagonal kernel warns and is marked (its λ_min checked against the dense
reference), and every method's ``lr_rule`` names its rule and the reason.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ntk_ngd as nn
from ntk_ngd import reference
from ntk_ngd.trajectory import DIVERGENCE_FACTOR, INDEFINITE_TOL, first_divergence

DAMPINGS = (0.0, 1e-6, 1e-3, 1e-2, 1e-1)
#: rounding allowance for "never increases": a loss computed from residuals of size ~1 in float64
ROUNDING = 1e-12


def _fixed_kernel_methods(finite: bool):
    """Registry methods with a fixed kernel (the step rule reads its spectrum), with their example options."""
    out = []
    for spec in nn.methods.registered():
        if spec.needs_residual or spec.random or (spec.finite_width_only and not finite):
            continue
        out.append((spec.name, dict(spec.example_options)))
    return out


def _mse_problem(out_dim, in_dim=6):
    net = nn.mlp(depth=3, width=24, in_dim=in_dim, out_dim=out_dim, activation="erf")
    X, Y = nn.datasets.synthetic(n=10, in_dim=in_dim, out_dim=out_dim, seed=3)
    return net, net.init(seed=1), X, Y


@pytest.fixture(scope="module")
def mse_problem():
    return _mse_problem(2)


@pytest.fixture(scope="module")
def scalar_problem():
    """One output, D + 1 > N: every infinite-width limit exists (unit_wise's needs both)."""
    return _mse_problem(1, in_dim=12)


def _run_default(net, X, Y, name, opts, damping, params):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = nn.simulate(net, X, Y, method=name, params=params, steps=8, damping=damping, **opts)
    indefinite_warnings = [w for w in caught if "indefinite" in str(w.message)]
    return run, indefinite_warnings


def _power_iteration_losses(K, r0, lr, steps):
    """0.5·||(I − ηK)^t r0||²/N by repeated multiplication (independent of the eigendecomposition)."""
    n = r0.shape[0]
    rows = K.shape[0]
    r = r0.reshape(rows, -1)
    out = [0.5 * np.sum(r**2) / n]
    A = np.eye(rows) - lr * K
    for _ in range(steps):
        r = A @ r
        out.append(0.5 * np.sum(r**2) / n)
    return np.array(out)


@pytest.mark.parametrize("finite", [False, True], ids=["inf", "finite"])
@pytest.mark.parametrize("damping", DAMPINGS)
def test_default_step_never_increases_the_linearised_loss(mse_problem, scalar_problem, finite, damping):
    net, params, X, Y = mse_problem if finite else scalar_problem
    for name, opts in _fixed_kernel_methods(finite):
        run, warned = _run_default(net, X, Y, name, opts, damping, params if finite else None)
        r0 = (np.zeros_like(Y) if not finite else np.asarray(net.apply(params, X))) - Y
        by_hand = _power_iteration_losses(run.kernel, r0, run.lr, 8)
        np.testing.assert_allclose(run.train_loss, by_hand, rtol=1e-9, atol=1e-14, err_msg=name)
        assert run.lr_rule.split(":")[0] in ("1/alpha", "1/lambda_max"), (name, run.lr_rule)
        if run.indefinite:  # no step decreases the loss along a negative direction: warned and marked, not hidden
            assert warned and run.lambda_min < 0 and run.predicted_divergent, (name, damping)
            assert "INDEFINITE" in run.lr_rule
            continue
        assert not warned, (name, damping)
        assert not run.predicted_divergent, (name, damping, run.spectral_radius)
        assert np.all(np.diff(run.train_loss) <= ROUNDING * run.train_loss[0]), (name, damping, run.train_loss)
        assert not run.diverged


def test_indefinite_flag_agrees_with_the_dense_kernel(mse_problem):
    """``indefinite`` is a measured property: it matches the sign of λ_min of the dense P×P kernel
    J(G + ρI)⁻¹Jᵀ/N for every fixed-kernel method and damping (finite width)."""
    net, params, X, Y = mse_problem
    seen = 0
    for name, opts in _fixed_kernel_methods(True):
        for damping in (1e-3, 1e-2, 1e-1):
            run, _ = _run_default(net, X, Y, name, opts, damping, params)
            K, _ = reference.preconditioned_kernel(net, params, X, name, damping, **opts)
            lam = np.linalg.eigvalsh(0.5 * (K + K.T))
            assert run.indefinite == bool(lam[0] < -INDEFINITE_TOL * lam[-1]), (name, damping, lam[[0, -1]])
            seen += run.indefinite
    assert seen >= 1  # the block-tridiagonal band is indefinite somewhere on this grid (the recorded finding)


def test_indefinite_block_tridiagonal_kernel_warns_and_is_marked(mse_problem):
    """docs/THEORY.md#finding-indefinite-damped-kernel, on this file's problem: at ρ = 1e-2 the band G_tri + ρI
    makes J(G_tri + ρI)⁻¹Jᵀ indefinite (dense reference); the default rule warns once, naming λ_min, and marks."""
    net, params, X, Y = mse_problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = nn.simulate(net, X, Y, method="block_tridiag", params=params, steps=3, damping=1e-2)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and messages[0].startswith("block_tridiag: the kernel is indefinite at damping 0.01 "
                                                         "(lambda_min = -"), messages
    K, _ = reference.preconditioned_kernel(net, params, X, "block_tridiag", 1e-2)
    lam_min = np.linalg.eigvalsh(0.5 * (K + K.T))[0]
    assert lam_min < 0 and abs(run.lambda_min - lam_min) <= 1e-8 * abs(lam_min)
    assert run.indefinite and run.predicted_divergent and "INDEFINITE" in run.lr_rule


def test_divergence_flagged_at_the_first_step_beyond_the_factor(mse_problem):
    """gd at 10/λ_max multiplies the top residual component by −9 a step: the loss passes 100× its initial
    value within a few steps; diverged_at is that step, computed here by a plain matrix-power iteration."""
    net, params, X, Y = mse_problem
    base = nn.simulate(net, X, Y, method="gd", steps=1)
    lr = 10.0 / base.lambda_max
    run = nn.simulate(net, X, Y, method="gd", steps=12, lr=lr)
    by_hand = _power_iteration_losses(run.kernel, -np.asarray(Y), lr, 12)
    expected = int(np.flatnonzero(by_hand > DIVERGENCE_FACTOR * by_hand[0])[0])
    assert by_hand[-1] > 1000 * by_hand[0]
    assert run.diverged and run.diverged_at == expected and run.predicted_divergent
    calm = nn.simulate(net, X, Y, method="gd", steps=12)  # decreases: never flagged
    assert not calm.diverged and not calm.predicted_divergent and calm.monotone
    assert first_divergence([1.0, 0.5, DIVERGENCE_FACTOR * 0.999]) is None


def test_real_training_divergence_stops_and_keeps_the_data(mse_problem):
    net, params, X, Y = mse_problem
    run = nn.train(net, params, X, Y, method="exact", steps=6, lr=40.0, damping=1e-3)
    assert run.diverged
    t = run.diverged_at
    assert np.all(np.isfinite(run.train_loss[:t])) and np.all(np.isnan(run.train_loss[t:]))
    assert np.all(run.train_loss[:t] <= DIVERGENCE_FACTOR * run.train_loss[0])


@pytest.fixture(scope="module")
def wide_problem():
    net = nn.mlp(depth=3, width=1024, in_dim=4, out_dim=2, activation="erf")
    X, Y = nn.datasets.synthetic(n=8, in_dim=4, out_dim=2, seed=5)
    return net, net.init(seed=2), X, Y


@pytest.mark.parametrize("damping", DAMPINGS)
def test_real_training_at_width_1024_decreases(wide_problem, damping):
    net, params, X, Y = wide_problem
    for name, opts in _fixed_kernel_methods(True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            run = nn.train(net, params, X, Y, method=name, steps=3, damping=damping, **opts)
        if run.indefinite:
            continue  # no decreasing step exists (test above); the run is marked
        assert not run.diverged, (name, damping, run.train_loss)
        assert run.train_loss[1] < run.train_loss[0] and run.final_loss < run.train_loss[0], (name, damping,
                                                                                              run.train_loss)
        assert run.lr_rule.endswith("(at the initial parameters)")


def test_every_method_names_its_rule_and_reason(mse_problem):
    net, params, X, Y = mse_problem
    for spec in nn.methods.registered():
        opts = dict(spec.example_options)
        run = nn.train(net, params, X, Y, method=spec.name, steps=1, damping=1e-3, **opts)
        rule, _, reason = run.lr_rule.partition(": ")
        assert rule in ("1/alpha", "1/lambda_max", "min_n ||u_n||^2", "1"), (spec.name, run.lr_rule)
        assert reason.strip(), (spec.name, run.lr_rule)
        if spec.step_rule == "1/alpha":
            assert ("isotropic" in reason) == (rule == "1/alpha"), (spec.name, run.lr_rule)


def test_isotropic_kernels_keep_the_one_step_rule(mse_problem):
    """At ρ = 0 exact NGD is isotropic (claim 1): η = 1/α from the theory, zero loss after one step."""
    net, params, X, Y = mse_problem
    run = nn.simulate(net, X, Y, method="exact", params=params, steps=2)
    assert run.lr_rule.startswith("1/alpha: isotropic (theory alpha = 1,") and abs(run.lr - 1) < 1e-12
    assert run.train_loss[1] <= 1e-20 + 1e-12 * run.train_loss[0]
