"""One suite over the registry (``nn.METHODS``, never a private list): every method, both losses.

For each registered method: it has an independent dense reference (ntk_ngd.reference; the Gram form
vs that reference is tests/test_reference_losses.py), its contract is declared (damping rule, step
rule, options with defaults), its parameter update moves the outputs by exactly its kernel step
(J·Δθ = −η Θ_G u, with J·Δθ from jax.jvp of net.apply — no method code involved), ``train`` and
``simulate`` run and return the one trajectory type, ``predict`` answers (a verdict or an explicit
"theory silent"), and one optax step equals one ``nn.train`` step. A method registered without a
dense reference or a theory answer fails here.
"""
from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np
import optax
import pytest

import ntk_ngd as nn
from ntk_ngd import losses, methods, reference
from ntk_ngd.damping import RULES
from ntk_ngd.methods.base import STEP_RULES
from ntk_ngd.trajectory import DIVERGENCE_FACTOR, Trajectory, first_divergence

LOSSES = tuple(losses.LOSSES)
#: float64 agreement of two Gram-form computations of the same quantity: N·k-sized eigendecompositions
#: (condition numbers ≲ 1e4 here) lose ≲ 1e-12 relative; 1e-8 leaves room and still fails on any real error.
TOL = 1e-8


def problem(loss: str, seed: int = 0):
    """A small finite-width problem: depth 3, widths 6/5, N = 4, C = 2 (MSE) or 3 classes (cross-entropy)."""
    out_dim = 2 if loss == "mse" else 3
    net = nn.mlp(depth=3, width=[6, 5], in_dim=4, out_dim=out_dim, activation="erf")
    params = net.init(seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4, 4))
    Y = rng.standard_normal((4, out_dim)) if loss == "mse" else np.array([0, 2, 1, 2])
    return net, params, X, Y


def options(spec) -> dict:
    return dict(spec.example_options)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


@pytest.fixture(params=methods.METHODS)
def spec(request):
    return methods.get(request.param)


# ---------------------------------------------------------------------------------------------
# the registry is complete
# ---------------------------------------------------------------------------------------------
def test_every_method_has_a_dense_reference():
    assert set(reference.BUILDERS) == set(nn.METHODS)


def test_every_method_declares_its_contract(spec):
    assert spec.damping_rule in RULES and spec.step_rule in STEP_RULES
    assert spec.summary and callable(spec.kernel) and callable(spec.direction) and callable(spec.predict)
    normalised = dict(spec.normalise_options(options(spec), depth=3))
    assert set(normalised) == set(spec.option_names)
    with pytest.raises(ValueError, match=f"method '{spec.name}' takes no option"):
        spec.normalise_options({"no_such_option": 1}, depth=3)
    for loss in LOSSES:
        spec.check_loss(loss)  # every registered method supports both losses (else: a one-line reason)


@pytest.mark.parametrize("loss", LOSSES)
def test_predict_answers(spec, loss):
    """A Prediction with a status for finite and (where it exists) infinite width; never a missing branch."""
    net, params, X, Y = problem(loss)
    for p in (params, None):
        if p is None and spec.finite_width_only:
            with pytest.raises(ValueError, match="finite width"):
                nn.predict(net, X, spec.name, loss=loss, targets=Y, **options(spec))
            continue
        pred = nn.predict(net, X, spec.name, params=p, loss=loss, targets=Y, **options(spec))
        assert pred.method == spec.name and pred.status in ("isotropic", "not isotropic", "silent")
        assert pred.summary().startswith(spec.name)


# ---------------------------------------------------------------------------------------------
# parameter space and function space agree: J·Δθ = −η Θ_G u
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
def test_update_moves_outputs_by_the_kernel_step(spec, loss):
    net, params, X, Y = problem(loss, seed=1)
    lr, damping = 0.3, 1e-3
    delta = nn.training.parameter_update(net, params, X, Y, spec.name, lr=lr, damping=damping, loss=loss,
                                         **options(spec))
    _, moved = jax.jvp(lambda p: net.apply(p, X), (params,), (delta,))  # J·Δθ, independent of the method code
    moved = np.asarray(moved)
    step, _ = nn.function_space.function_step(net, X, spec.name, params=params, damping=damping, loss=loss,
                                              targets=Y, **options(spec))
    if loss == "cross_entropy":  # logits are defined mod 1_C per sample
        moved = moved - moved.mean(axis=1, keepdims=True)
    err = np.max(np.abs(moved - (-lr * step))) / np.max(np.abs(lr * step))
    assert err <= TOL, (spec.name, loss, err)


# ---------------------------------------------------------------------------------------------
# train and simulate run for every method and both losses, with one result type
# ---------------------------------------------------------------------------------------------
TRAJECTORY_FIELDS = {f.name for f in dataclasses.fields(Trajectory)}


@pytest.mark.parametrize("loss", LOSSES)
def test_train_and_simulate_run(spec, loss):
    net, params, X, Y = problem(loss, seed=2)
    opts = options(spec)
    if "samples" in spec.option_names:  # claim 7: the sampled Fisher approaches F as k grows; with k = 1 at ρ = 1e-3
        opts["samples"] = 256            # its step grows this loss 21,000-fold in 2 steps (diverged at 100×)
    runs = [nn.train(net, params, X, Y, spec.name, lr=0.05, steps=2, loss=loss, damping=1e-3, **opts),
            nn.simulate(net, X, Y, spec.name, params=params, lr=0.05, steps=2, loss=loss, damping=1e-3, **opts)]
    if not spec.finite_width_only:
        runs.append(nn.simulate(net, X, Y, spec.name, lr=0.05, steps=2, loss=loss, damping=1e-3, **opts))
    for run in runs:
        assert isinstance(run, Trajectory) and run.method == spec.name and run.loss == loss
        assert run.train_loss.shape == (3,) and run.train_pred.shape == (3, 4, net.out_dim)
        assert np.all(np.isfinite(run.train_loss)) and not run.diverged
        assert {f.name for f in dataclasses.fields(run)} == TRAJECTORY_FIELDS


def test_deep_linear_trajectory_is_the_same_type():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    weights = nn.deep_linear.random_weights(3, [4], 2, seed=0)
    run = nn.deep_linear.train(weights, X, Y, "exact", lr=0.1, steps=2)
    assert isinstance(run, Trajectory) and run.method == "exact" and run.train_loss.shape == (3,)


# ---------------------------------------------------------------------------------------------
# optax: one transformation per method, equal to nn.train, composable, compiled once
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
def test_one_optax_step_equals_one_train_step(spec, loss):
    net, params, X, Y = problem(loss, seed=3)
    targets = Y if loss == "mse" else np.eye(net.out_dim)[Y]
    tx = nn.optim.ngd(net, 0.1, spec.name, damping=1e-3, loss=loss, **options(spec))
    updates, _ = tx.update(None, tx.init(params), params, batch=(X, targets))
    stepped = optax.apply_updates(params, updates)
    trained = nn.train(net, params, X, Y, spec.name, lr=0.1, steps=1, damping=1e-3, loss=loss, **options(spec))
    a, b = flat(stepped), flat(trained.params)
    assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b)), spec.name


def test_optax_chain_with_clipping_and_schedule():
    """clip_by_global_norm after the natural gradient and a schedule: the first two steps by hand."""
    net, params, X, Y = problem("mse", seed=4)
    schedule = optax.exponential_decay(0.5, transition_steps=1, decay_rate=0.5)
    tx = optax.chain(nn.optim.natural_gradient(net, "exact", damping=1e-3), optax.clip_by_global_norm(0.7),
                     optax.scale_by_schedule(lambda t: -schedule(t)))
    state = tx.init(params)
    p = params
    for t in range(2):
        updates, state = tx.update(None, state, p, batch=(X, Y))
        d = nn.optim.natural_gradient(net, "exact", damping=1e-3)
        direction, _ = d.update(None, d.init(p), p, batch=(X, Y))
        v = flat(direction)
        expected = -(0.5 * 0.5**t) * v * min(1.0, 0.7 / np.linalg.norm(v))
        assert np.max(np.abs(flat(updates) - expected)) <= 1e-12 * np.max(np.abs(expected))
        p = optax.apply_updates(p, updates)


def count_traces(monkeypatch, module, name):
    """Count the calls of ``module.name``: inside a jitted function they happen once per trace (compilation)."""
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_train_compiles_its_step_once(monkeypatch):
    """Steps, learning rates and positive dampings are traced: one compilation for a sweep."""
    net, params, X, Y = problem("cross_entropy", seed=5)
    X, Y = np.concatenate([X, X[:1] + 0.5]), np.concatenate([Y, Y[:1]])  # a shape no other test compiles
    traces = count_traces(monkeypatch, nn.optim, "direction")
    for rho in np.logspace(-4, -1, 10):
        nn.train(net, params, X, Y, "kfac", lr=0.1, steps=3, damping=float(rho), loss="cross_entropy")
    assert len(traces) == 1


def test_scan_compiles_once_for_a_damping_sweep(monkeypatch):
    net, params, X, Y = problem("cross_entropy", seed=6)
    X, Y = np.concatenate([X, X[:2] - 0.5]), np.concatenate([Y, Y[:2]])  # a shape no other test compiles
    traces = count_traces(monkeypatch, nn.dynamics, "_step_context")
    for rho in np.logspace(-4, -1, 10):
        nn.simulate(net, X, Y, "exact", lr=0.5, steps=3, damping=float(rho), loss="cross_entropy")
    assert len(traces) == 1


# ---------------------------------------------------------------------------------------------
# one divergence rule, bad input
# ---------------------------------------------------------------------------------------------
def test_divergence_rule_at_its_threshold():
    assert first_divergence([1.0, DIVERGENCE_FACTOR]) is None
    assert first_divergence([1.0, DIVERGENCE_FACTOR * (1 + 1e-12)]) == 1
    assert first_divergence([2.0, 1.0, np.nan, 0.0]) == 2
    assert first_divergence([0.0, 0.0]) is None  # a zero initial loss cannot diverge relative to itself ...
    assert first_divergence([0.0, 1.0]) == 1  # ... but any positive loss after it does


@pytest.mark.parametrize("loss", LOSSES)
def test_bad_input_is_one_line(loss):
    net, params, X, Y = problem(loss)
    cases = [
        (lambda: nn.method_kernels(net, X, "natural", loss=loss), "unknown method 'natural'"),
        (lambda: nn.method_kernels(net, X, "exact", damping=-1.0, loss=loss), "damping must be"),
        (lambda: nn.method_kernels(net, X, "kfac", kfac_readout="x", loss=loss), "unknown kfac_readout"),
        (lambda: nn.method_kernels(net, X, "exact", loss="hinge"), "unknown loss 'hinge'"),
        (lambda: nn.train(net, params, X, Y, "exact", lr=-1.0, loss=loss), "lr must be"),
        (lambda: nn.optim.natural_gradient(net, "ief", loss=loss, bandwidth=1), "takes no option"),
        (lambda: nn.simulate(net, X[:, :3], Y, "exact", loss=loss), "X has 3 columns"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
        assert "\n" not in str(info.value)
