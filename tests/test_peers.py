"""The package's factored K-FAC against kfac-jax, an independent implementation (ntk_ngd.peers; skipped when the
optional extra ``[peers]`` is not installed, as in CI).

With the conventions of ntk_ngd/peers.py matched (augmented inputs with σ_b, weight-0.5 squared error, exact GGN,
common readout, π-split damping, no curvature average), the two must give the same direction: float64 rounding
through two d- and m-sized inverses at ρ ≥ 1e-3 (condition ≲ 1e3) gives ≲ 1e-12, so TOL = 1e-10. The control
changes one named convention (the package's default damping rule, √ρ on each factor) and must then differ by more
than the tolerance.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_ngd as nn
from ntk_ngd import peers
from ntk_ngd.factored import minibatch

pytest.importorskip("kfac_jax", reason="kfac-jax is the optional extra [peers]")

TOL = 1e-10
LR = 0.1


def _problem(depth, bias, loss, n=48, c=3):
    net = nn.mlp(depth=depth, width=12, in_dim=6, out_dim=c, activation="erf", bias=bias)
    rng = np.random.default_rng(depth + 10 * bias)
    X = jnp.asarray(rng.standard_normal((n, 6)))
    Y = jnp.asarray(rng.standard_normal((n, c)))
    if loss == "cross_entropy":
        Y = jax.nn.one_hot(jnp.argmax(Y, axis=1), c)
    return net, net.init(depth), X, Y


def _kfac_jax_run(net, params, batches, loss, rho, inv_every=1):
    """Parameters after each kfac-jax step (stax layout) and the first step's direction."""
    opt = peers.optimizer(net, loss, inv_every=inv_every)
    aug = peers.augmented_params(net, params)
    key = jax.random.PRNGKey(0)
    state = opt.init([jnp.array(a, copy=True) for a in aug], key, batches[0])
    out = []
    for t, batch in enumerate(batches):
        aug, state, _ = opt.step([jnp.array(a, copy=True) for a in aug], state, key, batch=batch,
                                 learning_rate=jnp.asarray(LR), momentum=jnp.asarray(0.0),
                                 damping=jnp.asarray(rho), global_step_int=t)
        out.append(peers.stax_params(net, aug))
    return out


def _ours_run(net, params, batches, loss, rho, inv_every=1, split="pi"):
    tx = minibatch.natural_gradient(net, "kfac", rho, loss, decay=0.0, inv_every=inv_every,
                                    kfac_readout="common", factored_damping=split)
    state, out = tx.init(params), []
    for batch in batches:
        upd, state = tx.update(params, state, params, batch=batch)
        params = jax.tree_util.tree_map(lambda p, u: p - LR * u, params, upd)
        out.append(params)
    return out


def _rel(a, b):
    fa, fb = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)]) for t in (a, b))
    return float(np.linalg.norm(fa - fb) / np.linalg.norm(fb))


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("depth,bias", [(1, True), (2, False), (3, True)])
@pytest.mark.parametrize("rho", [1e-3, 1e-1])
def test_one_step_equals_kfac_jax(loss, depth, bias, rho):
    net, params, X, Y = _problem(depth, bias, loss)
    theirs = _kfac_jax_run(net, params, [(X, Y)], loss, rho)[0]
    ours = _ours_run(net, params, [(X, Y)], loss, rho)[0]
    step = jax.tree_util.tree_map(lambda a, b: a - b, theirs, params)
    assert _rel(jax.tree_util.tree_map(lambda a, b: a - b, ours, params), step) <= TOL
    control = _ours_run(net, params, [(X, Y)], loss, rho, split="rule")[0]  # the package's default damping rule
    assert _rel(jax.tree_util.tree_map(lambda a, b: a - b, control, params), step) > TOL


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_amortised_training_equals_kfac_jax(loss):
    """Six mini-batches, inverses every 3 steps on both sides: the parameters after every step agree."""
    net, params, X, Y = _problem(3, True, loss, n=96)
    batches = [(X[16 * i:16 * (i + 1)], Y[16 * i:16 * (i + 1)]) for i in range(6)]
    theirs = _kfac_jax_run(net, params, batches, loss, 1e-2, inv_every=3)
    ours = _ours_run(net, params, batches, loss, 1e-2, inv_every=3)
    assert max(_rel(a, b) for a, b in zip(ours, theirs)) <= TOL
    every_step = _ours_run(net, params, batches, loss, 1e-2, inv_every=1)  # control: a different schedule
    assert _rel(every_step[-1], theirs[-1]) > TOL


def test_peer_errors_are_one_line():
    net = nn.mlp(depth=2, width=4, in_dim=3, out_dim=2)
    for call, match in [(lambda: peers.optimizer(net, "hinge"), "loss"),
                        (lambda: peers.optimizer(net, inv_every=0), "inv_every"),
                        (lambda: peers.optimizer(net, curvature_ema=1.0), r"curvature_ema must be in \[0, 1\)"),
                        (lambda: peers.optimizer(net, estimation_mode="exact"), "estimation_mode")]:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)


def test_augmented_params_round_trip():
    for bias in (True, False):
        net = nn.mlp(depth=3, width=5, in_dim=4, out_dim=2, bias=bias)
        params = net.init(1)
        back = peers.stax_params(net, peers.augmented_params(net, params))
        assert _rel(back, params) == 0.0
        X = jnp.asarray(np.random.default_rng(0).standard_normal((7, 4)))
        f = peers.augmented_apply(net, peers.augmented_params(net, params), X, register=False)
        np.testing.assert_allclose(f, net.apply(params, X), rtol=1e-13, atol=1e-13)
