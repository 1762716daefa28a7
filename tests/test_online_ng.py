"""The online natural gradient (ntk_ngd.factored.online; Bernacchia, Lengyel & Hennequin 2018) against the closed
forms of ntk_ngd.deep_linear (numpy, no jax, no K-FAC code): on a deep linear network with exact moments one update
is the paper's per-layer form (block-diagonal / L), it is the Moore–Penrose natural gradient exactly where the
derivation says so (L = 1; balanced scaled-orthogonal layers on whitened inputs) and not elsewhere (same first-order
change of the end-to-end map, a different split, a larger norm); with a bias it is the dense block-diagonal Fisher
pseudo-inverse / L. The package's parameters map to the closed form's layers as W_i = (σ_w/√M_{i−1}) θ_iᵀ."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
import pytest

from ntk_ngd import deep_linear as dl
from ntk_ngd.factored.online import online_natural_gradient, online_ngd
from ntk_ngd.fitting import fit
from ntk_ngd.networks import mlp

from ntk_ngd.experiments.online_ng._measure import to_params  # θ_i = W_iᵀ/c_i, c_i = σ_w/√M_{i−1}

TOL = 1e-10


def _net(layers, bias=False, w_std=1.0):
    widths = [w.shape[0] for w in layers[:-1]]
    return mlp(depth=len(layers), width=widths, in_dim=layers[0].shape[1], out_dim=layers[-1].shape[0],
               activation="linear", bias=bias, w_std=w_std)


def to_layers(net, tree):
    """The inverse map, applied to parameters or to an update: W_i = c_i θ_iᵀ."""
    return [net.w_std / np.sqrt(np.shape(tree[2 * l][0])[0]) * np.asarray(tree[2 * l][0]).T for l in range(net.depth)]


def _mse(net, params, X, Y):
    return 0.5 * jnp.sum((net.apply(params, X) - Y) ** 2) / X.shape[0]


def _steps(tx, net, params, X, Y, count):
    """``count`` updates of ``tx`` on the full batch, returning [(params before, update)]."""
    @jax.jit
    def step(params, state):
        u, state = tx.update(jax.grad(lambda p: _mse(net, p, X, Y))(params), state, params, batch=(X, Y))
        return u, state, optax.apply_updates(params, jax.tree_util.tree_map(lambda v: -0.1 * v, u))

    state, out = tx.init(params), []
    for _ in range(count):
        u, state, new = step(params, state)
        out.append((params, u))
        params = new
    return out


def _rel(a, b):
    return max(np.linalg.norm(x - y) for x, y in zip(a, b)) / max(np.linalg.norm(y) for y in b)


def _closed(method, layers, X, Y):
    G = dl.end_to_end_gradient(dl.end_to_end_map(layers), X, Y)
    return method(layers, G, dl.input_covariance(X))


# (in_dim, widths, out_dim): square, wide hidden layers, rectangular in/out; depths 2-4
SHAPES = [(4, [4], 4), (3, [6, 5], 2), (5, [5, 5, 5], 5), (2, [7, 6, 8], 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(map(str, [s[0], *s[1], s[2]])))
def test_exact_moments_equal_paper_natural_gradient(shape):
    """decay 0, full batch, whitened Fisher, ρ = 0: every update is (1/L) W_{>i}⁺(GS⁻¹)(W_{<i}S)⁺ at the current
    weights (two steps: the state carries nothing stale); σ_w = 1.7 so the √fan_in and σ_w scales are exercised."""
    din, widths, cout = shape
    X, Y = dl.make_regression(din, cout, 24, cond=30.0, seed=1)
    layers = dl.random_weights(din, widths, cout, seed=2)
    net = _net(layers, w_std=1.7)
    params = to_params(net, layers)
    assert np.allclose(np.asarray(net.apply(params, X)), X @ dl.end_to_end_map(layers).T, atol=1e-12)
    for p, u in _steps(online_natural_gradient(net, decay=0.0, damping=0.0), net, params, X, Y, 2):
        ours, ref = to_layers(net, u), _closed(dl.paper_natural_gradient, to_layers(net, p), X, Y)
        assert _rel(ours, ref) <= TOL


def test_stale_moments_are_not_the_closed_form():
    """Negative control of the test above (a broken condition): with decay 0.5 the second update uses half of the
    first step's moments, and differs from the closed form at the new weights by far more than the tolerance."""
    X, Y = dl.make_regression(3, 2, 24, cond=30.0, seed=1)
    layers = dl.random_weights(3, [6, 5], 2, seed=2)
    net = _net(layers)
    (p0, u0), (p1, u1) = _steps(online_natural_gradient(net, decay=0.5, damping=0.0), net, to_params(net, layers),
                                X, Y, 2)
    assert _rel(to_layers(net, u0), _closed(dl.paper_natural_gradient, to_layers(net, p0), X, Y)) <= TOL
    assert _rel(to_layers(net, u1), _closed(dl.paper_natural_gradient, to_layers(net, p1), X, Y)) > 1e-4


def _scaled_orthogonal(dim, depth, scale, seed):
    rng = np.random.default_rng(seed)
    return [scale * np.linalg.qr(rng.standard_normal((dim, dim)))[0] for _ in range(depth)]


@pytest.mark.parametrize("case", ["depth1", "balanced"])
def test_equals_moore_penrose_where_the_derivation_says(case):
    """F⁻ = A♯A♯ᵀ is F⁺ for L = 1 (any Σ_x, rectangular) and for balanced scaled-orthogonal layers W_i = s·O_i on
    whitened inputs (Σ_x = I): then the online update is the Moore–Penrose natural gradient."""
    if case == "depth1":
        X, Y = dl.make_regression(4, 3, 30, cond=100.0, seed=3)
        layers = dl.random_weights(4, [], 3, seed=4)
    else:
        X, Y = dl.make_regression(4, 4, 30, cond=1.0, seed=3)
        layers = _scaled_orthogonal(4, 3, 1.3, seed=4)
        assert np.allclose(dl.input_covariance(X), np.eye(4), atol=1e-12)
    net = _net(layers)
    ((p, u),) = _steps(online_natural_gradient(net, decay=0.0, damping=0.0), net, to_params(net, layers), X, Y, 1)
    assert _rel(to_layers(net, u), _closed(dl.natural_gradient, to_layers(net, p), X, Y)) <= TOL


def test_general_weights_differ_from_moore_penrose():
    """Negative control (general weights, L = 3, cond Σ_x = 10): the online update is still the paper form, changes
    the end-to-end map to first order exactly as the Moore–Penrose one (both by E: every width ≥ max(C, D)), but
    splits it differently (relative difference ≥ 0.05; 0.35 measured) with a larger norm (Δ_MP is minimum-norm)."""
    X, Y = dl.make_regression(4, 3, 30, cond=10.0, seed=5)
    layers = dl.random_weights(4, [5, 6], 3, seed=6)
    net = _net(layers)
    ((p, u),) = _steps(online_natural_gradient(net, decay=0.0, damping=0.0), net, to_params(net, layers), X, Y, 1)
    ours, mp = to_layers(net, u), _closed(dl.natural_gradient, layers, X, Y)
    E = dl.end_to_end_map(layers) - dl.least_squares_map(X, Y)
    assert _rel(ours, _closed(dl.paper_natural_gradient, layers, X, Y)) <= TOL
    assert np.linalg.norm(dl.end_to_end_change(layers, ours) - E) <= TOL * np.linalg.norm(E)
    assert np.linalg.norm(dl.end_to_end_change(layers, mp) - E) <= TOL * np.linalg.norm(E)
    assert _rel(ours, mp) >= 0.05
    assert dl.parameter_norm(mp) < dl.parameter_norm(ours)


def test_bias_is_an_input_column_of_the_block_diagonal_fisher():
    """With a bias every layer's input is [σ_w h/√fan_in, σ_b] and (the backward signal of a linear net being the
    same for every sample) the Fisher block of (W_l, b_l) is exactly A_l ⊗ G_l: the update equals the dense
    block-diagonal Fisher pseudo-inverse / L, J_l from jax.jacobian, pinv in numpy."""
    net = mlp(depth=3, width=[5, 4], in_dim=3, out_dim=2, activation="linear", bias=True, b_std=0.5)
    params = net.init(7)
    X, Y = dl.make_regression(3, 2, 20, cond=10.0, seed=8)
    ((_, u),) = _steps(online_natural_gradient(net, decay=0.0, damping=0.0), net, params, X, Y, 1)
    flat, unravel = ravel_pytree(params)
    J = np.asarray(jax.jacobian(lambda v: net.apply(unravel(v), X).reshape(-1))(flat))  # (N·C, P)
    g = np.asarray(ravel_pytree(jax.grad(lambda p: _mse(net, p, X, Y))(params))[0])
    ours, start = np.asarray(ravel_pytree(u)[0]), 0
    for count in net.layer_param_counts:
        block = slice(start, start + count)
        F = J[:, block].T @ J[:, block] / X.shape[0]
        ref = np.linalg.pinv(F, rcond=1e-10, hermitian=True) @ g[block] / net.depth
        assert np.linalg.norm(ours[block] - ref) <= TOL * np.linalg.norm(ref)
        start += count


def test_fit_follows_the_exact_recurrence():
    """nn.fit + online_ngd, full batch, exact moments, square invertible layers: the loss curve is the closed-form
    recurrence W' = (I − (η/L)EW⁻¹)^L W (deep_linear.predicted_loss, form="exact"); depth 1: exactly (1 − η)^{2t}."""
    X, Y = dl.make_regression(3, 3, 16, cond=100.0, seed=9)
    for depth in (1, 2):
        layers = dl.random_weights(3, [3] * (depth - 1), 3, seed=10)
        net = _net(layers)
        traj = fit(net, to_params(net, layers), X, Y, online_ngd(net, 0.2, decay=0.0, damping=0.0), epochs=6,
                   batch_size=16, eval_every=1)
        pred = dl.predicted_loss(layers, X, Y, 0.2, 6, form="exact")
        assert np.max(np.abs(traj.train_loss - pred) / pred) <= 1e-9
    excess = pred - dl.mse_loss(dl.least_squares_map(X, Y), X, Y)
    assert not np.allclose(excess[1:] / excess[:-1], 0.8 ** 2, rtol=1e-6)  # depth 2: the O(η²) term is visible


def test_online_ngd_trains_a_float32_relu_autoencoder():
    """The nonlinear use (the lead's autoencoder figure): sampled Fisher, T_inv = 3, float32 parameters and data,
    momentum; the step stays float32 and the loss falls."""
    net = mlp(depth=4, width=[8, 3, 8], in_dim=12, out_dim=12, activation="relu", bias=True)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), net.init(0))
    X = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    tx = online_ngd(net, 0.05, momentum=0.9, damping=1e-2, fisher="sampled", inv_every=3)
    traj = fit(net, params, X, X, tx, epochs=4, batch_size=16)
    assert traj.params[0][0].dtype == jnp.float32
    assert traj.train_loss[-1] < 0.8 * traj.train_loss[0]


@pytest.mark.parametrize("bad, match", [
    ({"decay": 1.0}, "decay must be in"), ({"decay": -0.1}, "decay must be"), ({"damping": -1.0}, "damping"),
    ({"fisher": "true"}, "fisher"), ({"inv_every": 0}, "inv_every"), ({"loss": "hinge"}, "loss"),
])
def test_bad_input_one_line(bad, match):
    net = mlp(depth=2, width=3, in_dim=2, out_dim=1, activation="linear", bias=False)
    with pytest.raises(ValueError, match=match) as err:
        online_natural_gradient(net, **bad)
    assert "\n" not in str(err.value)


def test_bad_net_and_momentum_one_line():
    with pytest.raises(ValueError, match="needs an ntk_ngd Network"):
        online_natural_gradient("mlp")
    net = mlp(depth=2, width=3, in_dim=2, out_dim=1, activation="linear", bias=False)
    with pytest.raises(ValueError, match="momentum must be in"):
        online_ngd(net, 0.1, momentum=1.0)
