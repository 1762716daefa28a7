"""Function-space training dynamics of every method (THEORY.md claim 8), kernels apart from predictors.

Linearised (lazy) or infinite-width training with kernel Θ_G moves the outputs by
f_{t+1}(x') = f_t(x') − η Θ_G(x', X) u_t, u_t the whitened residual.

*Closed form* (:func:`closed_form`; MSE with a fixed kernel: gd, exact, layer patterns, kfac,
unit_wise, kpsvd, ekfac, diag, kfac_cor): Θ_G(X, X) is fixed, so one eigendecomposition
Θ_G = V diag(λ) Vᵀ gives every step (as neural-tangents' ``predict.gradient_descent_mse``):

    discrete:    r_t = V diag((1 − ηλ)^t) Vᵀ r_0,
                 f_t(x') = f_0(x') − η Θ_G(x', X) V diag(Σ_{s<t}(1 − ηλ)^s) Vᵀ r_0;
    continuous:  r(τ) = V diag(e^{−λτ}) Vᵀ r_0,  f_τ(x') = f_0(x') − Θ_G(x', X) V diag((1 − e^{−λτ})/λ) Vᵀ r_0.

With Θ_G = α·I the residual falls by (1 − ηα) per step: η = 1/α reaches zero loss in one step.

*Step by step* (:func:`scan`; residual-dependent or random methods — ef, ief, sf — and every method
with cross-entropy, whose whitening R(f) changes with the logits): the per-layer kernels stay fixed and
each step re-whitens them at f_t and applies the method's ``function_step``, inside one jit-compiled
``lax.scan`` (the damping is a traced argument: a damping sweep compiles once).

Infinite width (``params=None``) starts from the prior mean f_0 = 0; finite width linearises the
network at ``params`` (f_0 = f(X; params)).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate, losses, methods, problem as _problem
from ._warn import once_per_call
from .damping import Damping
from .diagnostics import isotropy
from .kernels import LayerKernels
from .networks import Network
from .trajectory import Trajectory, check_lr, default_lr, first_divergence


# ---------------------------------------------------------------------------------------------
# closed forms for a fixed kernel
# ---------------------------------------------------------------------------------------------
def _sum_of_powers(lam, lr, t):
    """Σ_{s<t} (1 − ηλ)^s, with the λ → 0 limit t."""
    q = 1.0 - lr * lam
    small = jnp.abs(lr * lam) < 1e-12
    safe = jnp.where(small, 1.0, lr * lam)
    return jnp.where(small, t, (1.0 - q**t) / safe)


def _integral_of_exp(lam, tau):
    """∫_0^τ e^{−λs} ds = −expm1(−λτ)/λ, with the λ → 0 limit τ."""
    small = jnp.abs(lam * tau) < 1e-12
    safe = jnp.where(small, 1.0, lam)
    return jnp.where(small, tau, -jnp.expm1(-lam * tau) / safe)


def closed_form(kernel_train, r0, times, lr, kernel_test=None, continuous=False):
    """Residuals r_t (T, n, k) and test-output changes f_t(x') − f_0(x') (T, n_test, k).

    ``kernel_train`` (n×n) symmetric; ``r0`` (n, k) — k = C for output-diagonal kernels, else 1.
    """
    evals, evecs = jnp.linalg.eigh(0.5 * (kernel_train + kernel_train.T))
    coeff0 = evecs.T @ r0  # (n, k)
    t = jnp.asarray(times, dtype=r0.dtype)[:, None]
    lam = evals[None, :]
    decay = jnp.exp(-lam * t) if continuous else (1.0 - lr * lam) ** t
    residuals = jnp.einsum("ij,tj,jk->tik", evecs, decay, coeff0)
    if kernel_test is None:
        return residuals, None
    acc = _integral_of_exp(lam, t) if continuous else lr * _sum_of_powers(lam, lr, t)
    moved = jnp.einsum("ij,tj,jk->tik", kernel_test @ evecs, acc, coeff0)
    return residuals, -moved


# ---------------------------------------------------------------------------------------------
# step by step
# ---------------------------------------------------------------------------------------------
def _step_context(spec, loss, n, opts, rcond, damping, net, f, Y, t):
    """(whitening, context) at outputs f (traceable; the SF draw of step t)."""
    w = loss.whiten(f, Y)
    scores = spec.draw(loss, f, dict(opts), t) if spec.random else None
    ctx = methods.Context(n, damping, opts, rcond, jnp.reshape(w.u, (-1,)), w.s, scores, net)
    return w, ctx


def _whitened_pair(loss, train: LayerKernels, left: LayerKernels, R, c: int):
    if R is None:
        return train, left
    return train.whiten(R, R), left.whiten(loss.left_basis(left.fwd.shape[1], c, R.dtype), R)


@functools.partial(jax.jit, static_argnames=("method", "opts", "loss_name", "rcond", "steps", "net"))
def scan(train: LayerKernels, left: LayerKernels, f_all, Y, lr, damping: Damping, *, method: str, opts: tuple,
         loss_name: str, rcond, steps: int, net: Network):
    """Outputs (steps+1, N_all, C) of f_{t+1} = f_t − η·step(f_t), where the first N rows of ``f_all``
    are the training points and ``left`` holds the kernels of all N_all points against X."""
    spec, loss = methods.get(method), losses.get(loss_name)
    n, c = train.fwd.shape[1], Y.shape[1]

    def body(f, t):
        w, ctx = _step_context(spec, loss, n, opts, rcond, damping, net, f[:n], Y, t)
        tw, lw = _whitened_pair(loss, train, left, w.R, c)
        _, step_all = spec.function_step(tw, lw, ctx)
        f_next = f - lr * loss.output_step(jnp.reshape(step_all, (f.shape[0], -1)))
        return f_next, f_next

    _, fs = jax.lax.scan(body, f_all, jnp.arange(steps))
    return jnp.concatenate([f_all[None], fs])


def stacked(train: LayerKernels, test: LayerKernels | None) -> LayerKernels:
    """Kernels of [X; X_test] × X whose first rows are the training kernels themselves (not a cross-kernel
    evaluation, which at infinite width differs on x = x' by ~1e-8 for ReLU; THEORY.md "Numerics")."""
    if test is None:
        return train
    cat = lambda a, b: None if a is None else tuple(jnp.concatenate([x, y]) for x, y in zip(a, b))  # noqa: E731
    return LayerKernels(jnp.concatenate([train.fwd, test.fwd], axis=1), jnp.concatenate([train.bwd, test.bwd], axis=1),
                        jnp.concatenate([train.ntk, test.ntk], axis=1), train.out_dim, train.output_diagonal,
                        cat(train.deltas, test.deltas), train.deltas2, cat(train.inputs, test.inputs), train.inputs2,
                        train.whitened, train.finite)


@functools.partial(jax.jit, static_argnames=("loss_name",))
def curves(F, Y, loss_name: str):
    """(loss (T,), accuracy (T,)) of outputs F (T, N, C) against targets Y."""
    loss = losses.get(loss_name)
    return jax.vmap(loss.value, in_axes=(0, None))(F, Y), jax.vmap(loss.accuracy, in_axes=(0, None))(F, Y)


def _curves_np(loss, F, Y):
    if Y is None:
        return None, None
    with np.errstate(all="ignore"):
        values, acc = curves(jnp.asarray(F), jnp.asarray(Y), loss_name=loss.name)
    values, acc = np.asarray(values), np.asarray(acc)
    return values, np.where(np.isfinite(values), acc, np.nan)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
@once_per_call
def simulate(net: Network, X, Y, method: str, params=None, lr: float | None = None, steps: int = 20, X_test=None,
             damping: float = 0.0, time: str = "discrete", loss: str = "mse", Y_test=None, outputs=None,
             rcond: float | None = None, **options) -> Trajectory:
    """Function-space trajectory of ``method`` on (X, Y) for ``steps`` steps (module docstring).

    ``Y``: MSE targets (N, C), or class labels / one-hot for ``loss="cross_entropy"``; ``Y_test`` likewise
    for the test loss. ``lr=None`` applies the method's step rule (:func:`ntk_ngd.trajectory.default_lr`)
    and reports it in ``lr_rule``. ``time="continuous"`` (MSE, fixed kernels) evaluates r(τ) at τ = η·t.
    ``outputs``: starting outputs on X (default f(X; params), or 0 at infinite width; test points then
    start at f(X_test; params) or 0). ``options`` go to the method (e.g. ``samples=``, ``seed=`` for sf).
    """
    spec = methods.get(method)
    steps = _validate.positive_int("steps", steps, minimum=0)
    _validate.choice("time", time, ("discrete", "continuous"))
    prob = _problem.prepare(net, X, params, loss, Y, outputs, None, X_test)
    if prob.targets is None:
        raise ValueError("simulate needs targets Y")
    if spec.finite_width_only and params is None:
        raise ValueError(spec.finite_width_only)
    if lr is not None:
        lr = check_lr(lr)
    Yt = None if Y_test is None else prob.loss.check_targets(Y_test, np.shape(Y_test)[0], net.out_dim)
    if Yt is not None and prob.X_test is None:
        raise ValueError("Y_test given without X_test")
    ctx = _problem.context(spec, prob, damping, rcond, options)
    train, test = _problem.kernels(prob)
    f_test0 = None
    if prob.X_test is not None:
        f_test0 = (np.zeros((prob.X_test.shape[0], net.out_dim)) if params is None
                   else np.asarray(net.apply(params, prob.X_test), dtype=float))
    fixed = not (spec.needs_residual or spec.random) and prob.loss is losses.MSE
    if not fixed and time != "discrete":
        raise ValueError(f"{method} with {prob.loss.name}: the step depends on the outputs; only time='discrete'")
    train_w, test_w = _problem.whiten(prob, train, test)
    metric = prediction = None
    if not (spec.needs_residual or spec.random):
        metric = np.asarray(spec.kernel(train_w, None, ctx).train)
        if spec.step_rule == "1/alpha" and lr is None:
            prediction = spec.predict(train_w, ctx)
    if lr is None:
        lr, rule = default_lr(spec.step_rule, metric, prediction, np.reshape(np.asarray(ctx.residual), (prob.n, -1))
                              if ctx.residual is not None else None)
    else:
        rule = "given"
    if fixed:
        return _closed_form_trajectory(spec, prob, ctx, train_w, test_w, f_test0, lr, rule, steps, time, Yt, metric)
    f_all = prob.f if f_test0 is None else np.concatenate([prob.f, f_test0])
    F = np.asarray(scan(train, stacked(train, test), jnp.asarray(f_all), jnp.asarray(prob.targets), lr, ctx.damping,
                        method=spec.name, opts=ctx.options, loss_name=prob.loss.name, rcond=ctx.rcond, steps=steps,
                        net=net))
    alpha = deviation = None
    if metric is not None:
        iso = isotropy(metric)
        alpha, deviation = iso.alpha, iso.deviation
    else:  # effective α along u_0 (residual-dependent methods have no fixed kernel)
        step0, _ = spec.function_step(train_w, None, ctx)
        u0 = ctx.residual
        alpha = float(jnp.vdot(u0, step0) / jnp.vdot(u0, u0))
    return _trajectory(spec, prob, F, Yt, lr, rule, alpha, deviation, np.arange(steps + 1, dtype=float), metric,
                       float(ctx.damping.value))


def _closed_form_trajectory(spec, prob, ctx, train_w, test_w, f_test0, lr, rule, steps, time, Yt, metric):
    kern = spec.kernel(train_w, test_w, ctx)
    K = jnp.asarray(kern.train)
    n, c = prob.n, prob.net.out_dim
    k_cols = c if K.shape[0] == n else 1  # output-diagonal: columns are the C outputs
    r0 = prob.f - prob.targets
    times = np.arange(steps + 1, dtype=float) * (lr if time == "continuous" else 1.0)
    residuals, moved = closed_form(K, jnp.asarray(r0.reshape(K.shape[0], k_cols)), times, lr, kern.test,
                                   continuous=time == "continuous")
    F = np.asarray(residuals).reshape(len(times), n, c) + prob.targets[None]
    if moved is not None:
        F = np.concatenate([F, f_test0[None] + np.asarray(moved).reshape(len(times), -1, c)], axis=1)
    iso = isotropy(np.asarray(K))
    return _trajectory(spec, prob, F, Yt, lr, rule, iso.alpha, iso.deviation, times, np.asarray(K),
                       float(ctx.damping.value))


def _trajectory(spec, prob, F, Yt, lr, rule, alpha, deviation, times, kernel, damping) -> Trajectory:
    n = prob.n
    train_loss, train_acc = _curves_np(prob.loss, F[:, :n], prob.targets)
    test_pred = F[:, n:] if prob.X_test is not None else None
    test_loss = test_acc = None
    if Yt is not None:
        test_loss, test_acc = _curves_np(prob.loss, test_pred, Yt)
    return Trajectory(spec.name, prob.loss.name, times, train_loss, F[:, :n], test_pred, test_loss, float(lr), rule,
                      alpha, deviation, first_divergence(train_loss), train_acc, test_acc, kernel=kernel,
                      damping=damping)


__all__ = ["closed_form", "curves", "scan", "simulate", "stacked"]
