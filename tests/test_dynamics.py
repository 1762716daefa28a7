"""Function-space dynamics (THEORY.md claim 8): closed forms vs stepping, one-step convergence
of isotropic methods, EF/iEF/SF trajectories, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

import ntk_ngd as nn
from ntk_ngd.dynamics import simulate
from ntk_ngd.function_space import method_kernels
from conftest import sphere_inputs as sphere



@pytest.fixture(scope="module")
def problem():
    net = nn.mlp(depth=3, width=48, in_dim=10, out_dim=2)
    X, X_test = sphere(8, 10, 0), sphere(4, 10, 1)
    Y = np.random.default_rng(2).standard_normal((8, 2))
    return net, X, Y, X_test


def step_by_step(K, K_test, r0, f0_test, lr, steps):
    """Plain iteration r ← r − ηKr, f' ← f' − ηK'r (the definition, no eigendecomposition)."""
    r, f = r0.copy(), f0_test.copy()
    rs, fs = [r.copy()], [f.copy()]
    for _ in range(steps):
        f = f - lr * K_test @ r
        r = r - lr * K @ r
        rs.append(r.copy())
        fs.append(f.copy())
    return np.array(rs), np.array(fs)


@pytest.mark.parametrize("params_seed", [None, 3])
@pytest.mark.parametrize("method", ["gd", "block_diag", "kfac"])
def test_closed_form_equals_iteration(problem, method, params_seed):
    net, X, Y, X_test = problem
    params = None if params_seed is None else net.init(params_seed)
    lr, steps = 0.7, 12
    res = simulate(net, X, Y, method, params=params, lr=lr / (48 if method == "kfac" else 1), steps=steps,
                   X_test=X_test, damping=1e-3)
    kern = method_kernels(net, X, method, params=params, damping=1e-3, X_test=X_test)
    K, K_test = np.asarray(kern.train), np.asarray(kern.test)
    f0 = np.zeros_like(Y) if params is None else np.asarray(net.apply(params, X))
    f0_test = np.zeros((4, 2)) if params is None else np.asarray(net.apply(params, X_test))
    if K.shape[0] == 8:  # output-diagonal: kernel acts on each output column
        rs, fs = step_by_step(K, K_test, f0 - Y, f0_test, res.lr, steps)
    else:
        rs, fs = step_by_step(K, K_test, (f0 - Y).reshape(-1), f0_test.reshape(-1), res.lr, steps)
    rs, fs = rs.reshape(steps + 1, 8, 2), fs.reshape(steps + 1, 4, 2)
    np.testing.assert_allclose(res.train_pred - Y, rs, atol=1e-10 * np.abs(rs).max())
    np.testing.assert_allclose(res.test_pred, fs, atol=1e-10 * np.abs(fs).max())


def test_continuous_time_equals_matrix_exponential(problem):
    net, X, Y, X_test = problem
    res = simulate(net, X, Y, "block_tridiag", lr=0.25, steps=6, X_test=X_test, damping=1e-2, time="continuous")
    kern = method_kernels(net, X, "block_tridiag", damping=1e-2, X_test=X_test)
    K, K_test = np.asarray(kern.train), np.asarray(kern.test)
    r0 = -Y
    for i, tau in enumerate(res.times):
        expected = scipy.linalg.expm(-tau * K) @ r0
        np.testing.assert_allclose(res.train_pred[i] - Y, expected, atol=1e-10)
        # f_τ(x') = −Θ_G(x', X) ∫_0^τ e^{−sΘ_G} ds r0, the integral by the block-matrix exponential trick
        n = K.shape[0]
        block = np.zeros((2 * n, 2 * n))
        block[:n, :n], block[:n, n:] = -K, np.eye(n)
        integral = scipy.linalg.expm(tau * block)[:n, n:]
        np.testing.assert_allclose(res.test_pred[i], -K_test @ integral @ r0, atol=1e-10)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_isotropic_methods_converge_in_one_step(depth):
    """η = 1/α_theory (α from THEORY.md: 1, L, ceil(L/3), N(L−1)+1) gives loss ≤ 1e-20·loss_0
    after one step; gradient descent at its best step does not."""
    n = 10
    net = nn.mlp(depth=depth, width=64, in_dim=16)
    X, Y = nn.datasets.synthetic(n, 16, seed=depth)
    alphas = {"exact": 1, "block_diag": depth, "block_tridiag": math.ceil(depth / 3), "kfac": n * (depth - 1) + 1}
    for params in (None, net.init(0)):
        for method, alpha in alphas.items():
            res = simulate(net, X, Y, method, params=params, lr=1.0 / alpha, steps=1)
            assert res.train_loss[1] <= 1e-20 * res.train_loss[0], (method, res.train_loss)
        gd = simulate(net, X, Y, "gd", params=params, steps=1)
        assert gd.train_loss[1] > 1e-3 * gd.train_loss[0]


def test_default_lr_is_inverse_alpha(problem):
    net, X, Y, _ = problem
    res = simulate(net, X, Y, "block_diag", steps=1)
    assert res.lr_rule.startswith("1/alpha") and abs(res.lr - 1 / 3) <= 1e-12


def test_ief_matches_exact_and_ef_does_not():
    """C = 1: iEF's training-point trajectory equals exact NGD's (same η); EF's first step is −η/r,
    with its largest |step| at the smallest |r|."""
    net = nn.mlp(depth=3, width=32, in_dim=12)
    X, Y = nn.datasets.synthetic(8, 12, seed=4)
    params = net.init(1)
    lr = 0.4
    exact = simulate(net, X, Y, "exact", params=params, lr=lr, steps=6)
    ief = simulate(net, X, Y, "ief", params=params, lr=lr, steps=6)
    np.testing.assert_allclose(ief.train_pred, exact.train_pred, atol=1e-10)
    ef = simulate(net, X, Y, "ef", params=params, lr=1e-3, steps=1)
    r0 = exact.train_pred[0] - Y
    step = ef.train_pred[1] - ef.train_pred[0]
    np.testing.assert_allclose(step, -1e-3 / r0, rtol=1e-8)
    assert np.argmax(np.abs(step)) == np.argmin(np.abs(r0))
    assert np.max(np.abs(ef.train_pred[1] - Y - (exact.train_pred[1] - Y))) > 1e-3


def test_residual_method_steps_agree_with_kernels_and_dense_reference(problem):
    """The finite step form (``Method.step``) that the scan uses == −Θ_G u from the method's kernel == J(x')Δθ of
    the dense parameter-space reference (explicit Jacobian and P×P Fisher)."""
    net, X, Y, X_test = problem
    params = net.init(0)
    r = (np.asarray(net.apply(params, X)) - Y)
    for method, damping in (("ef", 1e-2), ("ief", 0.0), ("ief", 1e-2)):
        kern = method_kernels(net, X, method, params=params, damping=damping, residual=r, X_test=X_test)
        traj = simulate(net, X, Y, method, params=params, lr=1.0, steps=1, X_test=X_test, damping=damping)
        step, step_test = traj.train_pred[1] - traj.train_pred[0], traj.test_pred[1] - traj.test_pred[0]
        np.testing.assert_allclose(step.ravel(), -np.asarray(kern.train) @ r.reshape(-1), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(step_test.ravel(), -np.asarray(kern.test) @ r.reshape(-1), rtol=1e-8, atol=1e-12)
        ref, ref_test = nn.dense.function_step(net, params, X, Y, method, lr=1.0, damping=damping, X_test=X_test)
        np.testing.assert_allclose(step, np.asarray(ref), rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(step_test, np.asarray(ref_test), rtol=1e-7, atol=1e-10)


def test_sf_step_is_residual_over_mean_squared_noise():
    """THEORY.md claim 7: C = 1, SF's step is −η r ⊘ mean_s(ε²) with ε the step's draws (methods/sf.py:
    ε ~ N(0, 1) from jax.random.fold_in(PRNGKey(seed), step))."""
    import jax

    net = nn.mlp(depth=2, width=32, in_dim=12)
    X, Y = nn.datasets.synthetic(8, 12, seed=5)
    res = simulate(net, X, Y, "sf", lr=0.5, steps=2, samples=4, seed=7)
    r = -Y
    for t in range(2):
        eps = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(7), t), (4, 8, 1)))
        step = res.train_pred[t + 1] - res.train_pred[t]
        np.testing.assert_allclose(step, -0.5 * r / np.mean(eps**2, axis=0), rtol=1e-8)
        r = r + step


def test_divergence_is_reported_not_raised(problem):
    net, X, Y, _ = problem
    res = simulate(net, X, Y, "exact", lr=5.0, steps=30)
    assert res.diverged and res.diverged_at is not None and res.diverged_at <= 30
    ok = simulate(net, X, Y, "exact", lr=1.0, steps=3)
    assert not ok.diverged and ok.steps_to(1e-6) == 1


def test_bad_input(problem):
    net, X, Y, X_test = problem
    with pytest.raises(ValueError, match="steps must be >= 0"):
        simulate(net, X, Y, "exact", steps=-1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        simulate(net, X, Y, "exact", lr=0.0)
    with pytest.raises(ValueError, match="Y has 3 columns but the network expects 2"):
        simulate(net, X, np.ones((8, 3)), "exact")
    with pytest.raises(ValueError, match="Y has 7 rows but 8 were expected"):
        simulate(net, X, np.ones((7, 2)), "exact")
    with pytest.raises(ValueError, match="X_test has 3 columns but the network expects 10"):
        simulate(net, X, Y, "exact", X_test=np.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown method"):
        simulate(net, X, Y, "adam")
    with pytest.raises(ValueError, match="only time='discrete'"):
        simulate(net, X, Y, "ef", time="continuous")
    with pytest.raises(ValueError, match="unknown time"):
        simulate(net, X, Y, "exact", time="imaginary")
