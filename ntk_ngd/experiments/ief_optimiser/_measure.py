"""The training runs of the figure and the γ probes at their checkpoints.

Every run is one :func:`ntk_ngd.fitting.fit` call (the package's mini-batch loop). With probes the optimiser is
wrapped in :func:`snapshots`, an optax transformation that changes nothing and, every ``every`` steps, hands the
current parameters and the optimiser's own state to the host (``jax.debug.callback``); after the run the γ of the
directions is computed at those snapshots on one fixed evaluation batch. "The update a method would take" there is
``tx.update(∇L_eval, state, θ, batch=eval)`` with the method's own optimiser and state (Adam's moments included); a
natural gradient's update is −lr·(its direction) and γ is scale-invariant, so its γ is computed from
:func:`ntk_ngd.optim.direction` (compiled once per method and damping sign for every run).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ... import fitting, losses, methods, optim
from ...damping import Damping
from ...factored.features import whitened_features
from ...kernels import LayerKernels
from . import _indicator

#: natural-gradient methods trained here (package names) and the optax baselines
NATURAL = ("ef", "sf", "ief")
BASELINES = ("sgd", "adam")
TRAINED = ("sgd", "adam", "ef", "sf", "ief")
#: directions evaluated at every snapshot of every judged run (the same parameters for all of them)
SHARED = ("sgd", "ef", "sf", "ief")
LOSS = "cross_entropy"


def optimiser(net, name: str, lr: float, damping: float):
    """The optax transformation of ``name`` at learning rate ``lr`` (``damping`` for the natural gradients)."""
    if name == "sgd":
        return optax.sgd(lr)
    if name == "adam":
        return optax.adam(lr)
    if name not in NATURAL:
        raise ValueError(f"unknown optimiser {name!r}; choose one of: {', '.join(TRAINED)}")
    return optim.ngd(net, lr, method=name, damping=damping, loss=LOSS, form="gram")


class SnapshotState(NamedTuple):
    inner: object
    count: jax.Array


def snapshots(tx, every: int, store: dict) -> optax.GradientTransformationExtraArgs:
    """``tx`` unchanged; at steps 0, every, 2·every, … ``store[step] = (params, state of tx)`` (numpy copies,
    taken before that step's update)."""
    tx = optax.with_extra_args_support(tx)

    def sink(count, params, inner):
        store[int(count)] = (jax.tree_util.tree_map(np.array, params), jax.tree_util.tree_map(np.array, inner))

    def init_fn(params):
        return SnapshotState(tx.init(params), jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra):
        jax.lax.cond(state.count % every == 0, lambda: jax.debug.callback(sink, state.count, params, state.inner),
                     lambda: None)
        updates, inner = tx.update(updates, state.inner, params, **extra)
        return updates, SnapshotState(inner, state.count + 1)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _grad(net, params, X, Y):
    return jax.grad(lambda p: losses.get(LOSS).value(net.apply(p, X), Y))(params)


@functools.lru_cache(maxsize=None)
def _direction_terms(net, name: str, positive: bool):
    """jit: (params, X, Y, ρ, step) → (Δθᵀ F Δθ, Δθᵀ∇L) of ``name``'s direction on (X, Y) ("sgd": ∇L)."""
    spec = None if name == "sgd" else methods.get(name)
    opts = () if spec is None else spec.normalise_options({}, net.depth)

    @jax.jit
    def run(params, X, Y, rho, step):
        if spec is None:
            d = _grad(net, params, X, Y)
        else:
            d = optim.direction(net, spec, opts, losses.get(LOSS), params, X, Y, Damping(rho, positive), None, step)
        return _indicator.terms(net, params, X, Y, d)

    return run


@functools.lru_cache(maxsize=None)
def _closed_form(net):
    return jax.jit(lambda params, X, Y: _indicator.ng_closed_form(net, params, X, Y))


@functools.lru_cache(maxsize=None)
def _whitened_ntk(net):
    """jit: (params, X, Y) → the whitened NTK Gram Θ̃ = RΘRᵀ (N(C−1) square) exact NG inverts."""
    def run(params, X, Y):
        feats = whitened_features(net, params, X, Y, losses.get(LOSS), None)
        return LayerKernels.from_features(list(feats.inputs), list(feats.deltas)).total_ntk
    return jax.jit(run)


def direction_gamma(net, name, params, X, Y, damping: float, step: int = 0) -> float:
    """γ of ``name``'s direction ("sgd": −∇L; any registered method) at ``params`` on (X, Y)."""
    fn = _direction_terms(net, name, damping > 0)
    quad, slope = fn(params, X, Y, jnp.asarray(damping, X.dtype), jnp.asarray(step, jnp.int32))
    return float(_indicator.from_terms(quad, slope))


def closed_form_gamma(net, params, X, Y) -> float:
    return float(_closed_form(net)(params, X, Y))


def whitened_condition(net, params, X, Y) -> float:
    """κ(Θ̃) = λ_max/λ_min of the whitened NTK Gram on (X, Y) (inf if singular)."""
    evals = np.linalg.eigvalsh(np.asarray(_whitened_ntk(net)(params, X, Y)))
    return float(evals[-1] / evals[0]) if evals[0] > 0 else float("inf")


def _baseline_gamma_fn(net, tx):
    """jit: (params, state, X, Y) → terms of the update ``tx`` takes on (X, Y) from ``state``."""
    tx = optax.with_extra_args_support(tx)

    @jax.jit
    def run(params, state, X, Y):
        update, _ = tx.update(_grad(net, params, X, Y), state, params, batch=(X, Y))
        return _indicator.terms(net, params, X, Y, update)

    return run


class Run(NamedTuple):
    """One fit: its evaluated steps and train loss, the snapshot steps and the γ records there."""

    name: str
    seed: int
    lr: float
    damping: float
    steps: np.ndarray
    loss: np.ndarray
    final_loss: float
    diverged: bool
    snap_steps: list
    own: list
    shared: dict
    ng: list
    kept: dict


def _probe(net, name, tx, store, damping, eval_batch, shared, keep):
    """(own γ, shared γ per method, closed-form γ_NG, kept params) at the snapshots in ``store``."""
    Xe, Ye = eval_batch
    base = None if name in NATURAL else _baseline_gamma_fn(net, tx)
    own, shared_g, ng, kept = [], {}, [], {}
    for t in sorted(store):
        p, state = store[t]
        if base is None:
            own.append(direction_gamma(net, name, p, Xe, Ye, damping, t))
        else:
            own.append(float(_indicator.from_terms(*base(p, state, Xe, Ye))))
        ng.append(closed_form_gamma(net, p, Xe, Ye))
        for m, rho in (shared or {}).items():
            shared_g.setdefault(m, []).append(direction_gamma(net, m, p, Xe, Ye, rho, t))
        if t in keep:
            kept[t] = p
    return own, shared_g, ng, kept


def train(net, X, Y, name, lr, damping, seed, cfg, eval_batch=None, shared=None, keep=()) -> Run:
    """Fit ``name`` from ``net.init(seed)`` (shuffle seed ``seed``) for cfg["epochs"] epochs of cfg["batch"].
    With ``eval_batch``: γ of the run's own update and the closed-form γ_NG every cfg["every"] steps; ``shared``
    (method → damping): also γ of those directions at the same parameters; ``keep``: snapshot steps whose
    parameters are returned (``Run.kept``)."""
    tx = optimiser(net, name, lr, damping)
    store: dict = {}
    wrapped = tx if eval_batch is None else snapshots(tx, int(cfg["every"]), store)
    traj = fitting.fit(net, net.init(seed), X, Y, wrapped, loss=LOSS, epochs=int(cfg["epochs"]),
                       batch_size=int(cfg["batch"]), seed=seed, eval_every=int(cfg["eval_every"]), progress=False,
                       name=f"{name} lr={lr:g} rho={damping:g} seed={seed}")
    jax.effects_barrier()
    loss = np.asarray(traj.train_loss, float)
    diverged = traj.diverged_at is not None or not np.isfinite(loss[-1])
    own, shared_g, ng, kept = [], {}, [], {}
    if eval_batch is not None:
        own, shared_g, ng, kept = _probe(net, name, tx, store, damping, eval_batch, shared, set(keep))
    return Run(name, seed, lr, damping, np.asarray(traj.times, float), loss,
               float("inf") if diverged else float(loss[-1]), diverged, sorted(store), own, shared_g, ng, kept)


__all__ = ["BASELINES", "NATURAL", "Run", "SHARED", "TRAINED", "closed_form_gamma", "direction_gamma", "optimiser",
           "snapshots", "train", "whitened_condition"]
