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
from .kernels import LayerKernels
from .networks import Network
from .trajectory import (TRUST_METRIC, StepSize, Trajectory, check_lr, choose_step, first_divergence, kl_step_cap,
                         spectrum, step_fields, trust_region_for, warn_if_unstable)


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


def eigensystem(kernel_train):
    """(λ ascending, V) of the symmetric part of a training kernel: the one factorisation a fixed-kernel run needs
    (the step rule reads λ, the closed form uses both)."""
    K = jnp.asarray(kernel_train)
    return jnp.linalg.eigh(0.5 * (K + K.T))


def closed_form(kernel_train, r0, times, lr, kernel_test=None, continuous=False, eig=None):
    """Residuals r_t (T, n, k) and test-output changes f_t(x') − f_0(x') (T, n_test, k).

    ``kernel_train`` (n×n) symmetric; ``r0`` (n, k) — k = C for output-diagonal kernels, else 1; ``eig``: its
    :func:`eigensystem` when the caller has it already.
    """
    evals, evecs = eigensystem(kernel_train) if eig is None else eig
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


@functools.partial(jax.jit, static_argnames=("method", "opts", "loss_name", "rcond", "steps", "net", "trust_metric"))
def scan(train: LayerKernels, left: LayerKernels, f_all, Y, lr, damping: Damping, *, method: str, opts: tuple,
         loss_name: str, rcond, steps: int, net: Network, kappa=None, trust_metric: str = TRUST_METRIC):
    """(outputs (steps+1, N_all, C), steps taken (steps,)) of f_{t+1} = f_t − η_t·step(f_t), where the first N rows
    of ``f_all`` are the training points and ``left`` holds the kernels of all N_all points against X. η_t = lr,
    or with a trust region ``kappa`` (traced; None: off) the largest η ≤ lr with ½η²||s_t||²/N ≤ κ, s_t the training
    step in ``trust_metric``: logits mod 1_C ("euclidean") or whitened ("fisher": the second-order KL;
    :func:`ntk_ngd.trajectory.kl_step_cap`, the function-space twin of :func:`ntk_ngd.optim.trust_region`)."""
    spec, loss = methods.get(method), losses.get(loss_name)
    n, c = train.fwd.shape[1], Y.shape[1]

    def body(f, t):
        w, ctx = _step_context(spec, loss, n, opts, rcond, damping, net, f[:n], Y, t)
        tw, lw = _whitened_pair(loss, train, left, w.R, c)
        step_train, step_all = spec.function_step(tw, lw, ctx)
        step_rows = jnp.reshape(step_all, (f.shape[0], -1))
        if kappa is None:
            eta = lr
        else:
            measured = step_train if trust_metric == "fisher" else step_rows[:n]
            eta = kl_step_cap(jnp.sum(measured**2), n, kappa, lr)
        f_next = f - eta * loss.output_step(step_rows)
        return f_next, (f_next, eta)

    _, (fs, etas) = jax.lax.scan(body, f_all, jnp.arange(steps))
    return jnp.concatenate([f_all[None], fs]), etas


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
             rcond: float | None = None, trust_region="auto", trust_metric: str = TRUST_METRIC,
             **options) -> Trajectory:
    """Function-space trajectory of ``method`` on (X, Y) for ``steps`` steps (module docstring).

    ``Y``: MSE targets (N, C), or class labels / one-hot for ``loss="cross_entropy"``; ``Y_test`` likewise
    for the test loss. ``lr=None`` applies the method's step rule (:func:`ntk_ngd.trajectory.choose_step`: 1/α
    where the kernel is isotropic, else 1/λ_max) and reports it in ``lr_rule``. ``trust_region``: κ of the
    per-step cap of the predicted output change, measured in ``trust_metric`` (:func:`scan`; ``"auto"``:
    :data:`~ntk_ngd.trajectory.KL_TRUST_REGION` for cross-entropy with lr=None, else off). ``time="continuous"`` (MSE, fixed kernels) evaluates r(τ) at τ = η·t.
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
    lr = None if lr is None else check_lr(lr)
    kappa = trust_region_for(trust_region, prob.loss.name, lr is not None)
    _validate.choice("trust_metric", trust_metric, ("euclidean", "fisher"))
    Yt = None if Y_test is None else prob.loss.check_targets(Y_test, np.shape(Y_test)[0], net.out_dim)
    if Yt is not None and prob.X_test is None:
        raise ValueError("Y_test given without X_test")
    ctx = _problem.context(spec, prob, damping, rcond, options)
    train, test = _problem.kernels(prob)
    f_test0 = None
    if prob.X_test is not None:
        f_test0 = (np.zeros((prob.X_test.shape[0], net.out_dim)) if params is None
                   else np.asarray(net.apply(params, prob.X_test), dtype=float))
    fixed = not (spec.needs_residual or spec.random) and prob.loss is losses.MSE and kappa is None
    if not fixed and time != "discrete":
        raise ValueError(f"{method} with {prob.loss.name}: the step depends on the outputs; only time='discrete'")
    train_w, test_w = _problem.whiten(prob, train, test)
    run = _Run(spec, prob, ctx, Yt, steps)
    if fixed:
        return _closed_form_trajectory(run, train_w, test_w, f_test0, lr, time)
    return _scan_trajectory(run, train, test, train_w, f_test0, lr, kappa, trust_metric)


class _Run:
    """What every simulate branch carries: method, problem, context, test targets, steps."""

    def __init__(self, spec, prob, ctx, Yt, steps):
        self.spec, self.prob, self.ctx, self.Yt, self.steps = spec, prob, ctx, Yt, steps

    @property
    def damping(self) -> float:
        return float(self.ctx.damping.value)

    def default_step(self, train_w, evals=None, residual=None) -> StepSize:
        """The method's step rule at step 0 (the theory's α asked only where the rule can use it)."""
        spec = self.spec
        prediction = spec.predict(train_w, self.ctx) if spec.step_rule == "1/alpha" else None
        return choose_step(spec.step_rule, None, prediction, residual, evals=evals, damping=self.damping,
                           method=spec.name)


def _closed_form_trajectory(run: _Run, train_w, test_w, f_test0, lr, time):
    """MSE with a fixed kernel: one kernel evaluation and one eigendecomposition serve the step rule and the
    closed form."""
    spec, prob = run.spec, run.prob
    kern = spec.kernel(train_w, test_w, run.ctx)
    K = jnp.asarray(kern.train)
    eig = eigensystem(K)
    evals = np.asarray(eig[0])
    step = run.default_step(train_w, evals) if lr is None else None
    lr, rule = (step.lr, step.rule) if step is not None else (lr, "given")
    n, c = prob.n, prob.net.out_dim
    k_cols = c if K.shape[0] == n else 1  # output-diagonal: columns are the C outputs
    r0 = prob.f - prob.targets
    times = np.arange(run.steps + 1, dtype=float) * (lr if time == "continuous" else 1.0)
    residuals, moved = closed_form(K, jnp.asarray(r0.reshape(K.shape[0], k_cols)), times, lr, kern.test,
                                   continuous=time == "continuous", eig=eig)
    F = np.asarray(residuals).reshape(len(times), n, c) + prob.targets[None]
    if moved is not None:
        F = np.concatenate([F, f_test0[None] + np.asarray(moved).reshape(len(times), -1, c)], axis=1)
    alpha, deviation = _isotropy_of(evals)
    fields = step_fields(None, lr, evals) if time == "discrete" else {}
    if step is None:
        warn_if_unstable(spec.name, lr, fields)
    return _trajectory(run, F, lr, rule, alpha, deviation, times, np.asarray(K), **fields)


def _isotropy_of(evals):
    """(α, deviation) of a symmetric kernel from its eigenvalues (= :func:`ntk_ngd.diagnostics.isotropy`)."""
    lam = np.asarray(evals, dtype=float)
    alpha = float(np.mean(lam))
    return alpha, float(np.sqrt(np.mean((lam - alpha) ** 2)) / abs(alpha)) if alpha else float("inf")


def _scan_trajectory(run: _Run, train, test, train_w, f_test0, lr, kappa, trust_metric):
    """Residual-dependent or random methods, cross-entropy, or a trust region: step by step in one lax.scan."""
    spec, prob, ctx = run.spec, run.prob, run.ctx
    u0 = ctx.residual
    evals = metric = None
    if not (spec.needs_residual or spec.random):
        metric = np.asarray(spec.kernel(train_w, None, ctx).train)
        evals = spectrum(metric)
    step = None
    if lr is None:
        step = run.default_step(train_w, evals, None if u0 is None else np.reshape(np.asarray(u0), (prob.n, -1)))
        lr, rule = step.lr, step.rule
    else:
        rule = "given"
    if kappa is not None:
        rule += f"; trust region kappa = {kappa:g} ({trust_metric})"
    fields = step_fields(step, lr, evals)
    if step is None and prob.loss is losses.MSE:
        warn_if_unstable(spec.name, lr, fields)
    f_all = prob.f if f_test0 is None else np.concatenate([prob.f, f_test0])
    F, etas = scan(train, stacked(train, test), jnp.asarray(f_all), jnp.asarray(prob.targets), lr, ctx.damping,
                   method=spec.name, opts=ctx.options, loss_name=prob.loss.name, rcond=ctx.rcond, steps=run.steps,
                   net=prob.net, kappa=None if kappa is None else jnp.asarray(kappa), trust_metric=trust_metric)
    if evals is not None:
        alpha, deviation = _isotropy_of(evals)
    else:  # effective α along u_0 (residual-dependent methods have no fixed kernel)
        step0, _ = spec.function_step(train_w, None, ctx)
        alpha, deviation = float(jnp.vdot(u0, step0) / jnp.vdot(u0, u0)), None
    return _trajectory(run, np.asarray(F), lr, rule, alpha, deviation, np.arange(run.steps + 1, dtype=float),
                       metric, trust_region=kappa, lr_per_step=np.asarray(etas), **fields)


def _trajectory(run: _Run, F, lr, rule, alpha, deviation, times, kernel, **fields) -> Trajectory:
    prob = run.prob
    n = prob.n
    train_loss, train_acc = _curves_np(prob.loss, F[:, :n], prob.targets)
    test_pred = F[:, n:] if prob.X_test is not None else None
    test_loss = test_acc = None
    if run.Yt is not None:
        test_loss, test_acc = _curves_np(prob.loss, test_pred, run.Yt)
    return Trajectory(method=run.spec.name, loss=prob.loss.name, times=times, train_loss=train_loss,
                      train_pred=F[:, :n], test_pred=test_pred, test_loss=test_loss, lr=float(lr), lr_rule=rule,
                      alpha=alpha, deviation=deviation, diverged_at=first_divergence(train_loss),
                      train_accuracy=train_acc, test_accuracy=test_acc, kernel=kernel, damping=run.damping,
                      **fields)


__all__ = ["closed_form", "curves", "eigensystem", "scan", "simulate", "stacked"]
