"""Real parameter-space training of a finite network f(x; θ) with every method (THEORY.md "Setup" and
claim 8). Not linearised: every step recomputes the features, the whitening, the Grams and the update
at the current parameters, through the method's optax transformation (:mod:`ntk_ngd.optim`): one code
path for :func:`train`, :func:`parameter_update` and users' own optax loops.

    Δθ = −η (G + ρI)⁻¹∇L,   ∇L = J̃ᵀu/N   (MSE: J̃ = J, u = f − Y; cross-entropy: :mod:`ntk_ngd.losses`).

Parameters are neural-tangents' list (Dense l at ``params[2l] = (W, b)``); layer l is handled as
W̃_l = [W_l; b_l] with Jacobian rows h̃_{l−1}(x_n) ⊗ δ̃_{l,c}(x_n). No P×P matrix and no explicit J is
ever formed (the Gram forms of each method module; ``docs/THEORY.md``).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _validate, methods, optim, problem as _problem
from ._warn import once_per_call
from .damping import Damping
from .dynamics import _curves_np
from .networks import Network
from .diagnostics import isotropy
from .trajectory import (TRUST_METRIC, StepSize, Trajectory, check_lr, choose_step, first_divergence, spectrum,
                         step_fields, trust_region_for, warn_if_unstable)


def _transformation(net, method, opts, loss_name, damping, rcond, lr, kappa=None, trust_metric=TRUST_METRIC):
    parts = [optim.natural_gradient(net, method, damping, loss_name, rcond, **dict(opts)),
             optax.scale_by_learning_rate(lr)]
    if kappa is not None:
        parts.append(optim.trust_region(net, kappa, loss_name, trust_metric))
    return optax.chain(*parts)


def _tree_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


@functools.partial(jax.jit, static_argnames=("net", "method", "opts", "loss_name", "rcond", "trust_metric"))
def _step(params, state, X, Y, offset, X_all, offset_all, lr, damping: Damping, kappa=None, *, net, method, opts,
          loss_name, rcond, trust_metric=TRUST_METRIC):
    """One step: (new params, state, outputs on X_all, ||Δθ||/||θ||, the step η·scale it took)."""
    tx = _transformation(net, method, opts, loss_name, damping, rcond, lr, kappa, trust_metric)
    updates, state = tx.update(None, state, params, batch=(X, Y), offset=offset)
    rel = _tree_norm(updates) / _tree_norm(params)
    eta = lr if kappa is None else lr * state[-1].scale
    params = optax.apply_updates(params, updates)
    return params, state, net.apply(params, X_all) - offset_all, rel, eta


def parameter_update(net: Network, params, X, Y, method: str, lr: float, damping: float = 0.0, loss: str = "mse",
                     rcond: float | None = None, **options):
    """One update Δθ = −lr·(G + ρI)⁻¹∇L (a pytree shaped like ``params``; sf uses its step-0 draw)."""
    prob = _problem.prepare(net, X, params, loss, Y)
    lr = check_lr(lr)
    tx = optim.ngd(net, lr, method, damping, prob.loss.name, rcond=rcond, **options)
    updates, _ = tx.update(None, tx.init(params), params, batch=(jnp.asarray(prob.X), jnp.asarray(prob.targets)))
    return updates


@once_per_call
def train(net: Network, params, X, Y, method: str, lr: float | None = None, steps: int = 10, damping: float = 0.0,
          X_test=None, Y_test=None, loss: str = "mse", center: bool = False, progress: bool = False,
          rcond: float | None = None, trust_region="auto", trust_metric: str = TRUST_METRIC,
          **options) -> Trajectory:
    """Train the finite network with ``method`` for ``steps`` full-batch steps.

    ``lr=None`` applies the method's step rule to the kernel at the initial parameters
    (:func:`ntk_ngd.trajectory.choose_step`: 1/α where it is isotropic, else 1/λ_max). ``trust_region``: κ of the
    per-step cap of the predicted output change :func:`ntk_ngd.optim.trust_region` in ``trust_metric`` ("euclidean"
    logits or "fisher", the exact Fisher's KL; ``"auto"``: κ = :data:`~ntk_ngd.trajectory.KL_TRUST_REGION` for
    cross-entropy with lr=None, else off; a number: that κ; None: off).
    ``center``: train the centred model f(x; θ) − f(x; θ_0), whose outputs start at 0 like the infinite-width
    prior mean (same Jacobian and Fisher). Divergence (:func:`ntk_ngd.trajectory.first_divergence`) stops the
    run and is recorded (NaN afterwards), never raised. The result records ||Δθ_t||/||θ_t|| of every step
    (``rel_step_norm``). ``options`` go to the method.
    """
    spec = methods.get(method)
    prob = _problem.prepare(net, X, params, loss, Y, None, None, X_test)
    if prob.targets is None:
        raise ValueError("train needs targets Y")
    steps = _validate.positive_int("steps", steps, minimum=0)
    ctx = _problem.context(spec, prob, damping, rcond, options)  # validates options, damping, loss support
    Yt = None if Y_test is None else prob.loss.check_targets(Y_test, np.shape(Y_test)[0], net.out_dim)
    kappa = trust_region_for(trust_region, prob.loss.name, lr is not None)
    n = prob.n
    X_all = prob.X if prob.X_test is None else np.concatenate([prob.X, prob.X_test])
    f_all0 = np.asarray(net.apply(params, X_all), dtype=float)
    offset_all = f_all0 if center else np.zeros_like(f_all0)
    initial = _Initial(spec, prob, ctx, f_all0[:n] - offset_all[:n])
    metric = initial.metric if ctx.rcond is None else None
    step = None
    if lr is None:
        step = initial.step()
        lr, rule = step.lr, step.rule + " (at the initial parameters)"
    else:
        lr, rule = check_lr(lr), "given"
    if kappa is not None:
        rule += f"; trust region kappa = {kappa:g} ({trust_metric})"
    evals = None if metric is None else spectrum(metric)
    fields = step_fields(step, lr, evals)
    if step is None and prob.loss.name == "mse" and kappa is None:
        warn_if_unstable(spec.name, lr, fields)
    loop = _Loop(spec, prob, ctx, lr, kappa, center, offset_all, X_all, trust_metric)
    F, params, rel, etas, diverged_at = loop.run(params, f_all0, steps, progress)
    train_loss, train_acc = _curves_np(prob.loss, F[:, :n], prob.targets)
    test_pred = F[:, n:] if prob.X_test is not None else None
    test_loss = test_acc = None
    if Yt is not None:
        test_loss, test_acc = _curves_np(prob.loss, test_pred, Yt)
    alpha = deviation = None
    if metric is not None:
        iso = isotropy(metric)
        alpha, deviation = iso.alpha, iso.deviation
    return Trajectory(method=spec.name, loss=prob.loss.name, times=np.arange(steps + 1, dtype=float),
                      train_loss=train_loss, train_pred=F[:, :n], test_pred=test_pred, test_loss=test_loss,
                      lr=float(lr), lr_rule=rule, alpha=alpha, deviation=deviation, diverged_at=diverged_at,
                      train_accuracy=train_acc, test_accuracy=test_acc, params=params,
                      damping=float(ctx.damping.value), trust_region=kappa, lr_per_step=etas, rel_step_norm=rel,
                      **fields)


class _Loop:
    """The training loop of :func:`train`: jit-compiled steps, divergence stop, per-step records."""

    def __init__(self, spec, prob, ctx, lr, kappa, center, offset_all, X_all, trust_metric):
        self.spec, self.prob, self.ctx, self.lr, self.kappa = spec, prob, ctx, lr, kappa
        self.trust_metric = _validate.choice("trust_metric", trust_metric, optim.TRUST_METRICS)
        n = prob.n
        self.args = (jnp.asarray(prob.X), jnp.asarray(prob.targets), jnp.asarray(offset_all[:n]),
                     jnp.asarray(X_all), jnp.asarray(offset_all))
        self.offset_all = offset_all

    def run(self, params, f_all0, steps: int, progress: bool):
        spec, prob, ctx, n = self.spec, self.prob, self.ctx, self.prob.n
        F = np.full((steps + 1,) + f_all0.shape, np.nan)
        F[0] = f_all0 - self.offset_all
        rel, etas = np.full(steps, np.nan), np.full(steps, np.nan)
        loss0 = float(prob.loss.value(F[0, :n], prob.targets))
        tx0 = _transformation(prob.net, spec.name, ctx.options, prob.loss.name, ctx.damping, ctx.rcond, self.lr,
                              self.kappa, self.trust_metric)
        state = tx0.init(params)
        kappa = None if self.kappa is None else jnp.asarray(self.kappa)
        iterator = bar = None
        iterator = range(1, steps + 1)
        if progress:
            from tqdm.auto import tqdm

            bar = iterator = tqdm(iterator, desc=f"train {spec.name}", unit="step")
        diverged_at = None
        for t in iterator:
            new, state, f, r, eta = _step(params, state, *self.args, self.lr, ctx.damping, kappa, net=prob.net,
                                          method=spec.name, opts=ctx.options, loss_name=prob.loss.name,
                                          rcond=ctx.rcond, trust_metric=self.trust_metric)
            f = np.asarray(f)
            rel[t - 1], etas[t - 1] = float(r), float(eta)
            value = float(prob.loss.value(f[:n], prob.targets)) if np.all(np.isfinite(f)) else np.inf
            if first_divergence([loss0, value]) is not None:
                diverged_at = t
                break
            params = new
            F[t] = f
            if bar is not None:
                bar.set_postfix(loss=f"{value:.3e}")
        if bar is not None:
            bar.close()
        return F, params, rel, etas, diverged_at


class _Initial:
    """The whitened kernels and method context at the initial parameters and the outputs ``f0`` training starts
    from (computed once for the step rule and the reported isotropy)."""

    def __init__(self, spec, prob, ctx, f0):
        self.spec, self.prob = spec, dataclasses.replace(prob, f=f0, X_test=None)
        self.ctx = _problem.context(spec, self.prob, ctx.damping, ctx.rcond, dict(ctx.options))
        train, _ = _problem.kernels(self.prob)
        self.train_w, _ = _problem.whiten(self.prob, train, None)
        fixed = not (spec.needs_residual or spec.random)
        self.metric = np.asarray(spec.kernel(self.train_w, None, self.ctx).train) if fixed else None

    def step(self) -> StepSize:
        spec, ctx = self.spec, self.ctx
        u = None if ctx.residual is None else np.reshape(np.asarray(ctx.residual), (self.prob.n, -1))
        prediction = spec.predict(self.train_w, ctx) if spec.step_rule == "1/alpha" else None
        return choose_step(spec.step_rule, self.metric, prediction, u, damping=float(ctx.damping.value),
                           method=spec.name)


__all__ = ["parameter_update", "train"]
