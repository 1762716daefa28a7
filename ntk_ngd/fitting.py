"""Training over a dataset in mini-batches: epochs of shuffled batches, any optax transformation.

``fit`` is the loop practitioners run (THEORY.md "Mini-batch curvature"): each epoch draws a permutation of the
N samples from ``seed`` and takes ⌊N/B⌋ steps on consecutive batches of B = ``batch_size`` (default min(N, 256);
the N mod B samples left over change from epoch to epoch; every batch has the same shape, so the step compiles
once). A step is

    g = ∇_θ L(f(X_b; θ), Y_b),   (u, state) = tx.update(g, state, θ, batch=(X_b, Y_b)),   θ ← θ + u,

so one loop serves the package's natural gradients (they read ``batch``: :func:`ntk_ngd.optim.ngd`, the amortised
:func:`ntk_ngd.factored.minibatch.natural_gradient` chained with a learning rate) and plain optax optimisers
(``optax.sgd``: they read ``g``). The full-data train loss (and test loss, accuracies) is evaluated at step 0,
every ``eval_every`` steps (default: once per epoch) and at the end; the result is a
:class:`~ntk_ngd.trajectory.Trajectory` whose ``times`` are those step indices, with ``epochs`` and ``wall_time``
(seconds since the start, evaluation included) beside them and ``rel_step_norm`` = ‖Δθ_t‖/‖θ_t‖ of every step.
Outputs are not stored (``train_pred`` is None: an (evaluations × N × C) array is too large for a dataset).

A batch loss that is not finite, or an evaluated loss above ``DIVERGENCE_FACTOR`` × the initial one, stops the
run: one RuntimeWarning names the step, the result keeps everything computed before it and ``diverged_at``
points at the first bad evaluation (the same rule as :func:`ntk_ngd.trajectory.first_divergence`).
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _validate, problem as _problem
from .trajectory import DIVERGENCE_FACTOR, Trajectory


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which steps the loop takes and when it evaluates."""

    n: int
    batch_size: int
    epochs: int
    eval_every: int

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.batch_size

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def evaluates_after(self, step: int) -> bool:
        """Evaluate after ``step`` steps (1-based count)?"""
        return step % self.eval_every == 0 or step == self.steps


def schedule(n: int, batch_size, epochs, eval_every) -> Schedule:
    """Validated :class:`Schedule` (one-line errors that say what to change); ``batch_size`` None: min(N, 256)."""
    batch_size = min(n, 256) if batch_size is None else _validate.positive_int("batch_size", batch_size)
    if batch_size > n:
        raise ValueError(f"batch_size = {batch_size} is larger than the data (N = {n}); use batch_size <= {n}")
    epochs = _validate.positive_int("epochs", epochs)
    per_epoch = n // batch_size
    eval_every = per_epoch if eval_every is None else _validate.positive_int("eval_every", eval_every)
    return Schedule(n, batch_size, epochs, eval_every)


class _Curves:
    """The evaluated rows of a run (lists that become the Trajectory's arrays)."""

    def __init__(self, loss, X, Y, X_test, Y_test):
        self.loss, self.X, self.Y, self.X_test, self.Y_test = loss, X, Y, X_test, Y_test
        self.rows = {k: [] for k in ("step", "epoch", "wall", "train", "test", "train_acc", "test_acc")}

    def record(self, net, params, step: int, epoch: float, wall: float) -> float:
        """Evaluate at ``params``; returns the train loss."""
        f = net.apply(params, self.X)
        train = float(self.loss.value(f, self.Y))
        for key, value in (("step", step), ("epoch", epoch), ("wall", wall), ("train", train),
                           ("train_acc", self.loss.accuracy(f, self.Y))):
            self.rows[key].append(value)
        if self.Y_test is not None:
            ft = net.apply(params, self.X_test)
            self.rows["test"].append(float(self.loss.value(ft, self.Y_test)))
            self.rows["test_acc"].append(self.loss.accuracy(ft, self.Y_test))
        return train

    def array(self, key):
        values = self.rows[key]
        if not values or any(v is None for v in values):
            return None
        return np.asarray(values, dtype=float)


@functools.lru_cache(maxsize=16)
def _step_fn(net, loss, tx):
    """The jitted step of ``tx`` (cached: runs of the same optimiser object on other seeds compile once)."""
    tx = optax.with_extra_args_support(tx)

    def batch_loss(params, X, Y):
        return loss.value(net.apply(params, X), Y)

    @jax.jit
    def step(params, state, X, Y):
        value, grads = jax.value_and_grad(batch_loss)(params, X, Y)
        updates, state = tx.update(grads, state, params, batch=(X, Y))
        new = optax.apply_updates(params, updates)
        rel = optax.global_norm(updates) / optax.global_norm(params)
        return new, state, value, rel

    return tx, step


def fit(net, params, X, Y, optimizer, *, loss: str = "mse", epochs: int = 1, batch_size: int | None = None, seed: int = 0,
        eval_every: int | None = None, X_test=None, Y_test=None, progress: bool | None = None,
        name: str = "optimizer", lr: float = float("nan")) -> Trajectory:
    """Train ``net`` from ``params`` on (X, Y) with the optax transformation ``optimizer`` (module docstring).

    ``name`` and ``lr`` only label the result (the optimiser holds its own step); ``progress``: a tqdm bar on
    stderr (None: only when stderr is a terminal)."""
    prob = _problem.prepare(net, X, params, loss, Y, None, None, X_test)
    if prob.targets is None:
        raise ValueError("fit needs targets Y")
    Yt = None if Y_test is None else prob.loss.check_targets(Y_test, np.shape(Y_test)[0], net.out_dim)
    if (Y_test is None) != (X_test is None):
        raise ValueError("pass X_test and Y_test together (or neither)")
    plan = schedule(prob.n, batch_size, epochs, eval_every)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype  # data in the parameters' precision (float32 training)
    X, Y = jnp.asarray(prob.X, dtype), jnp.asarray(prob.targets)
    Y = Y.astype(dtype) if jnp.issubdtype(Y.dtype, jnp.floating) else Y
    tx, step = _step_fn(net, prob.loss, optimizer)
    curves = _Curves(prob.loss, X, Y, None if Yt is None else jnp.asarray(prob.X_test, dtype),
                     None if Yt is None else jnp.asarray(Yt).astype(Y.dtype))
    start = time.perf_counter()
    initial = curves.record(net, params, 0, 0.0, 0.0)
    state, rel, diverged_at = tx.init(params), [], None
    rng = np.random.default_rng(seed)
    bar = _bar(plan.steps, progress, name)
    t = 0
    for epoch in range(plan.epochs):
        order = rng.permutation(plan.n)
        for b in range(plan.steps_per_epoch):
            idx = order[b * plan.batch_size:(b + 1) * plan.batch_size]
            params, state, value, r = step(params, state, X[idx], Y[idx])
            t += 1
            rel.append(float(r))
            bar.update(1)
            if not np.isfinite(float(value)):
                diverged_at = _stop(curves, net, params, t, epoch + (b + 1) / plan.steps_per_epoch, start, name,
                                    f"batch loss {float(value)}")
                break
            if plan.evaluates_after(t):
                loss_t = curves.record(net, params, t, epoch + (b + 1) / plan.steps_per_epoch,
                                       time.perf_counter() - start)
                if not np.isfinite(loss_t) or loss_t > DIVERGENCE_FACTOR * max(initial, np.finfo(float).tiny):
                    diverged_at = len(curves.rows["step"]) - 1
                    _warn_diverged(name, t, f"train loss {loss_t:.4g} (initial {initial:.4g})")
                    break
        if diverged_at is not None:
            break
    bar.close()
    return _trajectory(curves, prob.loss.name, name, lr, diverged_at, params, rel)


def _stop(curves, net, params, t, epoch, start, name, why) -> int:
    """Record the state at the non-finite batch loss and warn; the index of that row."""
    curves.record(net, params, t, epoch, time.perf_counter() - start)
    _warn_diverged(name, t, why)
    return len(curves.rows["step"]) - 1


def _warn_diverged(name, t, why):
    warnings.warn(f"{name}: stopped at step {t}: {why}; the result keeps the steps before it (diverged_at)",
                  RuntimeWarning, stacklevel=3)


def _trajectory(curves, loss_name, name, lr, diverged_at, params, rel) -> Trajectory:
    return Trajectory(method=name, loss=loss_name, times=curves.array("step"), train_loss=curves.array("train"),
                      train_pred=None, test_pred=None, test_loss=curves.array("test"), lr=float(lr),
                      lr_rule="set by the optimizer", alpha=None, deviation=None, diverged_at=diverged_at,
                      train_accuracy=curves.array("train_acc"), test_accuracy=curves.array("test_acc"),
                      params=params, rel_step_norm=np.asarray(rel, dtype=float), epochs=curves.array("epoch"),
                      wall_time=curves.array("wall"))


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(total: int, progress: bool | None, name: str):
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm  # optional at import time: only a shown bar needs it

    return tqdm(total=total, desc=f"fit {name}", leave=False, file=sys.stderr)


__all__ = ["Schedule", "fit", "schedule"]
