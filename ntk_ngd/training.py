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
from .trajectory import Trajectory, check_lr, default_lr, first_divergence


def _transformation(net, method, opts, loss_name, damping, rcond, lr):
    return optax.chain(
        optim.natural_gradient(net, method, damping, loss_name, rcond, **dict(opts)),
        optax.scale_by_learning_rate(lr),
    )


@functools.partial(jax.jit, static_argnames=("net", "method", "opts", "loss_name", "rcond"))
def _step(params, state, X, Y, offset, X_all, offset_all, lr, damping: Damping, *, net, method, opts, loss_name,
          rcond):
    tx = _transformation(net, method, opts, loss_name, damping, rcond, lr)
    updates, state = tx.update(None, state, params, batch=(X, Y), offset=offset)
    params = optax.apply_updates(params, updates)
    return params, state, net.apply(params, X_all) - offset_all


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
          rcond: float | None = None, **options) -> Trajectory:
    """Train the finite network with ``method`` for ``steps`` full-batch steps.

    ``lr=None`` applies the method's step rule at the initial parameters (theory α when it predicts
    isotropy, else the measured mean eigenvalue of the finite-width kernel; :func:`ntk_ngd.trajectory.default_lr`).
    ``center``: train the centred model f(x; θ) − f(x; θ_0), whose outputs start at 0 like the infinite-width
    prior mean (same Jacobian and Fisher). Divergence (:func:`ntk_ngd.trajectory.first_divergence`) stops the
    run and is recorded (NaN afterwards), never raised. ``options`` go to the method.
    """
    spec = methods.get(method)
    prob = _problem.prepare(net, X, params, loss, Y, None, None, X_test)
    if prob.targets is None:
        raise ValueError("train needs targets Y")
    steps = _validate.positive_int("steps", steps, minimum=0)
    ctx = _problem.context(spec, prob, damping, rcond, options)  # validates options, damping, loss support
    Yt = None if Y_test is None else prob.loss.check_targets(Y_test, np.shape(Y_test)[0], net.out_dim)
    n = prob.n
    X_all = prob.X if prob.X_test is None else np.concatenate([prob.X, prob.X_test])
    f_all0 = np.asarray(net.apply(params, X_all), dtype=float)
    offset_all = f_all0 if center else np.zeros_like(f_all0)
    if lr is None:
        lr, rule = _initial_lr(spec, prob, ctx, f_all0[:n] - offset_all[:n])
    else:
        lr, rule = check_lr(lr), "given"

    F = np.full((steps + 1,) + f_all0.shape, np.nan)
    F[0] = f_all0 - offset_all
    loss0 = float(prob.loss.value(F[0, :n], prob.targets))
    tx0 = _transformation(net, spec.name, ctx.options, prob.loss.name, ctx.damping, ctx.rcond, lr)
    state = tx0.init(params)
    Xj, Yj, Xa = jnp.asarray(prob.X), jnp.asarray(prob.targets), jnp.asarray(X_all)
    off, off_all = jnp.asarray(offset_all[:n]), jnp.asarray(offset_all)
    iterator = range(1, steps + 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = iterator = tqdm(iterator, desc=f"train {method}", unit="step")
    diverged_at = None
    for t in iterator:
        new, state, f = _step(params, state, Xj, Yj, off, Xa, off_all, lr, ctx.damping, net=net, method=spec.name,
                              opts=ctx.options, loss_name=prob.loss.name, rcond=ctx.rcond)
        f = np.asarray(f)
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
    train_loss, train_acc = _curves_np(prob.loss, F[:, :n], prob.targets)
    test_pred = F[:, n:] if prob.X_test is not None else None
    test_loss = test_acc = None
    if Yt is not None:
        test_loss, test_acc = _curves_np(prob.loss, test_pred, Yt)
    alpha = deviation = None
    if ctx.rcond is None and not (spec.needs_residual or spec.random):
        from .diagnostics import isotropy

        iso = isotropy(_metric(spec, prob, ctx))
        alpha, deviation = iso.alpha, iso.deviation
    return Trajectory(spec.name, prob.loss.name, np.arange(steps + 1, dtype=float), train_loss, F[:, :n], test_pred,
                      test_loss, float(lr), rule, alpha, deviation, diverged_at, train_acc, test_acc, params=params,
                      damping=float(ctx.damping.value))


def _metric(spec, prob, ctx):
    train, _ = _problem.kernels(prob)
    train_w, _ = _problem.whiten(prob, train, None)
    return np.asarray(spec.kernel(train_w, None, ctx).train)


def _initial_lr(spec, prob, ctx, f0):
    """The method's step rule at the initial parameters (on the outputs training starts from)."""
    prob = _problem.Problem(prob.net, prob.X, prob.params, prob.loss, f0, prob.targets, None, None)
    ctx0 = _problem.context(spec, prob, ctx.damping, ctx.rcond, dict(ctx.options))
    u = None if ctx0.residual is None else np.reshape(np.asarray(ctx0.residual), (prob.n, -1))
    if spec.step_rule in ("one", "min_residual"):
        return default_lr(spec.step_rule, residual=u)
    train, _ = _problem.kernels(prob)
    train_w, _ = _problem.whiten(prob, train, None)
    metric = np.asarray(spec.kernel(train_w, None, ctx0).train)
    prediction = spec.predict(train_w, ctx0) if spec.step_rule == "1/alpha" else None
    return default_lr(spec.step_rule, metric, prediction, u)


__all__ = ["parameter_update", "train"]
