"""Mini-batch training over a dataset (ntk_ngd.fitting.fit).

Independent checks: the full-batch loop of ``nn.train`` (its own loop, the Gram form) for a natural gradient run
through ``fit`` with one batch per epoch in the factored form; a hand-written SGD loop over the documented batch
schedule for optax.sgd. Error model: both sides run the same float64 operations up to summation order (the
permutation reorders the samples inside a full batch), so agreement is ~1e-13 relative; TOL = 1e-10.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ntk_ngd as nn
from ntk_ngd import losses, optim
from ntk_ngd.factored import minibatch

TOL = 1e-10


def problem(loss="mse", n=24, out_dim=3, seed=0):
    net = nn.mlp(depth=2, width=16, in_dim=5, out_dim=out_dim, activation="erf")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    Y = rng.standard_normal((n, out_dim)) if loss == "mse" else rng.integers(0, out_dim, n)
    return net, net.init(seed), X, Y


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("loss", tuple(losses.LOSSES))
def test_full_batch_fit_is_the_train_loop(loss):
    """batch = N, 3 epochs: the factored K-FAC steps of fit == nn.train's 3 Gram-form steps (same lr, damping)."""
    net, params, X, Y = problem(loss)
    lr, rho = 0.5, 1e-2
    tx = optim.ngd(net, lr, "kfac", rho, loss, form="factored")
    run = nn.fit(net, params, X, Y, tx, loss=loss, epochs=3, batch_size=X.shape[0], name="kfac", lr=lr)
    ref = nn.train(net, params, X, Y, "kfac", lr=lr, steps=3, damping=rho, loss=loss, trust_region=None)
    np.testing.assert_array_equal(run.times, [0, 1, 2, 3])
    np.testing.assert_allclose(run.epochs, [0, 1, 2, 3])
    assert np.max(np.abs(run.train_loss - ref.train_loss) / ref.train_loss) <= TOL
    assert np.linalg.norm(flat(run.params) - flat(ref.params)) <= TOL * np.linalg.norm(flat(ref.params))
    assert run.train_loss[-1] < run.train_loss[0]
    assert np.all(np.diff(run.wall_time) >= 0) and run.rel_step_norm.shape == (3,)


def test_sgd_follows_the_documented_batch_schedule():
    """optax.sgd through fit == a hand-written loop: per epoch a permutation from default_rng(seed), ⌊N/B⌋ batches."""
    net, params, X, Y = problem(n=23)
    lr, B, epochs, seed = 0.3, 5, 2, 7
    run = nn.fit(net, params, X, Y, optax.sgd(lr), epochs=epochs, batch_size=B, seed=seed, eval_every=2)
    loss = losses.get("mse")
    grad = jax.grad(lambda p, Xb, Yb: loss.value(net.apply(p, Xb), Yb))
    rng, p, evals = np.random.default_rng(seed), params, [float(loss.value(net.apply(params, X), Y))]
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for b in range(len(X) // B):
            idx = order[b * B:(b + 1) * B]
            p = jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grad(p, jnp.asarray(X[idx]), jnp.asarray(Y[idx])))
    evals.append(float(loss.value(net.apply(p, X), Y)))
    np.testing.assert_array_equal(run.times, [0, 2, 4, 6, 8])  # 4 steps per epoch, evaluated every 2
    assert np.linalg.norm(flat(run.params) - flat(p)) <= TOL * np.linalg.norm(flat(p))
    assert abs(run.train_loss[-1] - evals[-1]) <= TOL * evals[-1]


def test_amortised_kfac_trains_digits_with_a_test_curve():
    """The practitioners' optimiser (EMA decay 0.9, inverses every 5 steps, sampled Fisher) lowers the loss."""
    X, labels = nn.datasets.digits(n=200, seed=0)
    net = nn.mlp(depth=2, width=32, in_dim=X.shape[1], out_dim=10)
    tx = optax.chain(minibatch.natural_gradient(net, "kfac", 1e-2, "cross_entropy", decay=0.9, inv_every=5,
                                                fisher="sampled"), optax.scale_by_learning_rate(0.1))
    run = nn.fit(net, net.init(0), X[:150], labels[:150], tx, loss="cross_entropy", epochs=4, batch_size=32,
                 X_test=X[150:], Y_test=labels[150:], name="kfac (amortised)")
    assert run.diverged_at is None and run.test_loss.shape == run.train_loss.shape == (5,)
    assert run.train_loss[-1] < 0.8 * run.train_loss[0] and run.test_loss[-1] < run.test_loss[0]
    assert run.train_accuracy[-1] > run.train_accuracy[0]


def test_a_diverging_run_stops_says_where_and_keeps_its_data():
    net, params, X, Y = problem()
    with pytest.warns(RuntimeWarning, match=r"stopped at step \d+"):
        run = nn.fit(net, params, X, Y, optax.sgd(1e4), epochs=20, batch_size=8, eval_every=1)
    assert run.diverged and run.diverged_at == len(run.times) - 1 < 60
    assert np.isfinite(run.train_loss[0]) and run.final_loss == run.train_loss[run.diverged_at - 1]
    calm = nn.fit(net, params, X, Y, optax.sgd(1e-2), epochs=2, batch_size=8)  # control: a small step runs through
    assert not calm.diverged


def test_one_line_errors():
    net, params, X, Y = problem()
    tx = optax.sgd(0.1)
    for kwargs, match in (({"batch_size": 25}, r"batch_size = 25 is larger than the data \(N = 24\)"),
                          ({"epochs": 0, "batch_size": 8}, "epochs must be"),
                          ({"eval_every": 0, "batch_size": 8}, "eval_every must be"),
                          ({"X_test": X}, "pass X_test and Y_test together")):
        with pytest.raises(ValueError, match=match):
            nn.fit(net, params, X, Y, tx, **kwargs)
    with pytest.raises(ValueError, match="fit needs targets Y"):
        nn.fit(net, params, X, None, tx)
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        minibatch.natural_gradient(net, "kfac", decay=1.0)
    with pytest.raises(ValueError, match="inv_every"):
        minibatch.natural_gradient(net, "kfac", inv_every=0)


@pytest.mark.parametrize("method", ["kfac", "diag"])
def test_float32_parameters_train_in_float32_with_float64_data(method):
    """float32 parameters and float64 data (the default under x64): the loop and the mini-batch state run in the
    parameters' precision (the first autoencoder run failed inside jax.lax.cond: float64 statistics against the
    float32 state). Independent check: the float32 run is close to the float64 run of the same optimiser."""
    net, params, X, Y = problem()
    tx = optax.chain(minibatch.natural_gradient(net, method, 1e-2, "mse", decay=0.9, inv_every=2),
                     optax.scale_by_learning_rate(0.1))
    p32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), params)
    tr32 = nn.fit(net, p32, X, Y, tx, epochs=3, batch_size=8)
    tr64 = nn.fit(net, params, X, Y, tx, epochs=3, batch_size=8)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(tr32.params))
    assert np.allclose(tr32.train_loss, tr64.train_loss, rtol=1e-4), (tr32.train_loss, tr64.train_loss)
