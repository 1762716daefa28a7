"""The iEF indicator γ(Δθ) = sqrt(ΔθᵀFΔθ)/|Δθᵀ∇L| of figure ief_optimiser: matrix-free (one jvp) against the dense
P×P reference Fisher, its minimum at the exact natural gradient, the closed form of that minimum, the snapshot
wrapper, and one-line errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntk_ngd import datasets, fitting, losses, methods, optim
from ntk_ngd.damping import Damping
from ntk_ngd.experiments.ief_optimiser import PROFILES, _dense, _indicator, _measure
from ntk_ngd.networks import mlp
from ntk_ngd.reference import sym_pinv, unflatten_params
from ntk_ngd.reference.problem import build


@pytest.fixture(scope="module")
def problem():
    """The figure's dense-check problem (Gaussian inputs, 3 classes, N = 6, 4-16-3: J̃ has full row rank 12)."""
    net, params, X, Y = _dense.problem(PROFILES["tiny"]["dense"])
    return net, params, X, Y, build(net, params, X, "cross_entropy", targets=Y)


def _direction(net, params, X, Y, name, rho):
    spec = methods.get(name)
    return optim.direction(net, spec, spec.normalise_options({}, net.depth), losses.get("cross_entropy"), params,
                           jnp.asarray(X), jnp.asarray(Y), Damping.of(rho))


def test_gamma_matches_dense_reference(problem):
    """Random directions, the gradient and the dense NG direction: jvp γ == dense γ to 1e-10 (float64)."""
    net, params, X, Y, p = problem
    F = p.J.T @ p.J / p.n
    rng = np.random.default_rng(0)
    for v in [rng.standard_normal(net.num_params) for _ in range(3)] + [p.grad, sym_pinv(F) @ p.grad]:
        dense = np.sqrt(v @ F @ v) / abs(p.grad @ v)
        mine = _indicator.gamma(net, params, X, Y, _dense._like(params, unflatten_params(net, v)))
        assert abs(mine - dense) <= 1e-10 * dense


def test_dense_agreement_and_its_control():
    out = _dense.dense_agreement(PROFILES["tiny"]["dense"])
    assert out["max_rel_diff"] <= 1e-10
    assert out["max_rel_diff_empirical_fisher"] > 1e-3  # the empirical Fisher is another matrix


def test_exact_ng_direction_minimises_gamma(problem):
    """γ(F⁺∇L) (the package's Gram-form exact direction at ρ = 0) ≤ γ of random directions, the gradient and the
    EF/iEF directions; it equals the dense (∇LᵀF⁺∇L)^{-1/2}."""
    net, params, X, Y, p = problem
    g_ng = _indicator.gamma(net, params, X, Y, _direction(net, params, X, Y, "exact", 0.0))
    F = p.J.T @ p.J / p.n
    assert abs(g_ng - (p.grad @ sym_pinv(F) @ p.grad) ** -0.5) <= 1e-8 * g_ng
    rng = np.random.default_rng(1)
    others = [_dense._like(params, unflatten_params(net, rng.standard_normal(net.num_params))) for _ in range(5)]
    others += [_direction(net, params, X, Y, m, rho) for m, rho in (("gd", 0.0), ("ef", 1e-3), ("ief", 1e-8))]
    for d in others:
        assert _indicator.gamma(net, params, X, Y, d) >= g_ng * (1 - 1e-10)


def test_closed_form_at_full_row_rank(problem):
    """(mean (1 − p_y)/p_y)^{-1/2} == dense γ_NG where J̃ has full row rank N(C−1)."""
    net, params, X, Y, p = problem
    assert np.linalg.matrix_rank(p.J) == p.J.shape[0]
    F = p.J.T @ p.J / p.n
    closed = float(_indicator.ng_closed_form(net, params, jnp.asarray(X), jnp.asarray(Y, float)))
    assert abs(closed - (p.grad @ sym_pinv(F) @ p.grad) ** -0.5) <= 1e-10 * closed


def test_snapshots_leave_training_unchanged():
    X, Y = datasets.digits(n=64, seed=0)
    net = mlp(depth=2, width=8, in_dim=64, out_dim=10)
    store = {}
    plain = fitting.fit(net, net.init(0), X, Y, optax.sgd(1.0), loss="cross_entropy", epochs=1, batch_size=16)
    wrapped = fitting.fit(net, net.init(0), X, Y, _measure.snapshots(optax.sgd(1.0), 2, store), loss="cross_entropy",
                          epochs=1, batch_size=16)
    jax.effects_barrier()
    np.testing.assert_array_equal(plain.train_loss, wrapped.train_loss)
    assert sorted(store) == [0, 2]


def test_bad_input_raises_one_line(problem):
    net, params, X, Y, _ = problem
    good = _direction(net, params, X, Y, "gd", 0.0)
    cases = [(lambda: _indicator.gamma(net, params, X, Y, good[:2]), "update must be a pytree shaped like params"),
             (lambda: _indicator.gamma(net, params, X, Y[:, :2], good), "label|column|classes|shape"),
             (lambda: _indicator.gamma(net, params, X, Y, jax.tree_util.tree_map(lambda a: a * np.nan, good)),
              "non-finite"),
             (lambda: _measure.optimiser(net, "kfac", 0.1, 0.0), "unknown optimiser")]
    for call, text in cases:
        with pytest.raises(ValueError, match=text) as err:
            call()
        assert "\n" not in str(err.value)
