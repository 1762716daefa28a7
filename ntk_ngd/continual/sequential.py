"""Function-space dynamics over a task sequence in closed form (docs/THEORY.md "Continual learning in function
space", CONTINUAL.md claims 2, 5, 7).

In the lazy regime every kernel is fixed for the whole sequence (infinite width: f₀ = 0; finite width: the
network linearised at ``params``, f₀ = f(X; params)). While task t trains, with B its samples and A the
protected ones (:func:`.memory.protected_samples`), each step moves every stacked sample by
Δf = −η K^P_{·,B} r_B (:func:`.kernels.step_kernel`), so after S steps, with Q = I − ηK^P_BB,

    r_B(S) = Q^S r_B(0),      f(S) = f(0) − η K^P_{·,B} (Σ_{s<S} Q^s) r_B(0),

where [[Q, I], [0, I]]^S = [[Q^S, Σ_{s<S}Q^s], [0, I]] gives both by repeated squaring (K^P_BB is not symmetric
for the naive projections, so no eigendecomposition is assumed). Residual-dependent or random methods (ef, sf)
have a kernel that changes with the residual: they step one at a time (the same kernels, recomputed).

Cross-entropy (docs/THEORY.md "Continual learning with cross-entropy"): the linearised logits are not linear in
the residual (ũ and the whitening R_B depend on f_B), so every step is taken one at a time, with the fixed
layer kernels re-whitened at the current logits: VᵀΔf_R = −η K^P_{R,B}(f_B) ũ_B(f_B), rows R_B on the task
trained (the metric), Vᵀ on every stacked sample (the logits mod 1_C), R_O on the previous task's samples at
its end (``ong_old_factors``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate, losses, methods, problem as _problem
from ..kernels import layer_kernels
from ..trajectory import check_lr, default_lr
from . import memory as _memory, projections as _projections, results
from .._warn import once_per_call
from .kernels import RowKernels, basis_context, kernel_rows, logit_whitening, reorder, sample_rows, step_kernel, whiten_rows


def projected_kernel(lk, ctx, basis_ctx, protected_rows, old_samples=None, *, method: str, projection: str, n_b: int,
                     n_old: int = 0):
    """K^P_{R,B} over the rows of ``lk`` (first n_b samples: the task trained; ``old_samples``: the previous
    task's, for ``ong_old_factors``)."""
    rk = RowKernels(lk, n_b, methods.get(method), ctx, basis_ctx, old_samples, n_old)
    return step_kernel(rk, protected_rows, _projections.get(projection))


def whitened_kernel(lk, R_B, R_O, ctx, basis_ctx, protected_rows, old_samples=None, *, method: str,
                    projection: str, n_b: int, n_old: int = 0):
    """Cross-entropy: :func:`projected_kernel` of the layer kernels whitened at the current logits
    (:func:`.kernels.whiten_rows`: R_B on B, R_O on the previous task's samples, Vᵀ elsewhere)."""
    return projected_kernel(whiten_rows(lk, R_B, R_O), ctx, basis_ctx, protected_rows, old_samples, method=method,
                            projection=projection, n_b=n_b, n_old=n_old)


_STATIC = ("method", "projection", "n_b", "n_old")
#: compiled once per task shape: residual-dependent and random methods, and cross-entropy (whose whitening moves
#: with the logits), recompute the kernel every step
_projected_kernel_jit = jax.jit(projected_kernel, static_argnames=_STATIC)
_whitened_kernel_jit = jax.jit(whitened_kernel, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=("steps",))
def closed_form(K_RB, r0, lr, *, steps: int):
    """−η K_RB Σ_{s<S} Q^s r0 with Q = I − ηK_BB, by the block-matrix power; the rows of B come first in K_RB."""
    nb = K_RB.shape[1]
    eye = jnp.eye(nb, dtype=K_RB.dtype)
    Q = eye - lr * K_RB[:nb]
    big = jnp.block([[Q, eye], [jnp.zeros_like(Q), eye]])
    sums = jnp.linalg.matrix_power(big, steps)[:nb, nb:]
    return -lr * K_RB @ (sums @ r0)


class _Layout:
    """Kernel rows ↔ outputs: output-diagonal kernels act on the C columns (N × C), full ones on flat rows."""

    def __init__(self, c_rows: int, out_dim: int):
        self.c_rows, self.out_dim = c_rows, out_dim

    def to_kernel(self, F):
        return F if self.c_rows == 1 else F.reshape(-1, 1)

    def to_outputs(self, V):
        return V.reshape(-1, self.out_dim)


def task_rows(n_all: int, B, O, cross_entropy: bool):
    """(sample order of R, position in R of every stacked sample, positions of the previous task's samples O).
    MSE: B first, then the others (each sample once). Cross-entropy: B (rows R_B), every sample (rows Vᵀ), O
    (rows R_O at the previous task's logits)."""
    if not cross_entropy:
        order = np.concatenate([B, np.setdiff1d(np.arange(n_all), B)])
        position = np.argsort(order)
        return order, position, position[O]
    order = np.concatenate([B, np.arange(n_all), O])
    return order, len(B) + np.arange(n_all), len(B) + n_all + np.arange(len(O))


@once_per_call
def sequential(net, tasks, method: str, projection: str, params=None, lr: float | None = None, steps: int = 20,
               memory: int | None = None, damping: float = 1e-3, basis_damping: float | None = None,
               rcond: float | None = None, kernels=None, loss: str = "mse", **options) -> results.ContinualTrajectory:
    """Closed-form function-space dynamics of ``method`` with ``projection`` over the ``tasks`` (module docstring):
    ``steps`` steps per task at learning rate ``lr`` (None: the method's step rule on task 0's kernel), protecting
    ``memory`` samples of each earlier task (None: all of them). ``kernels``: precomputed
    ``layer_kernels(net, X_all, params=params)`` of the stacked tasks (reused across methods and projections).
    ``loss="cross_entropy"``: the task targets are class labels (or one-hot rows); the linearised logits step one
    at a time, Δf = −η V K^P_{·,B}(f_B) ũ_B(f_B) (kernels re-whitened at every step's logits). ``ong_old_factors``
    projects in the metric of the previous task's samples at its end. Returns a
    :class:`.results.ContinualTrajectory` (``.loss``, ``.accuracy`` T × T; average accuracy and forgetting)."""
    spec, proj, loss = methods.get(method), _projections.get(projection), _memory.check_loss(loss)
    tasks = _memory.check_tasks(net, tasks, loss)
    sizes = [X.shape[0] for X, _ in tasks]
    memory = _memory.check_memory(memory, sizes)
    steps = _validate.positive_int("steps", steps, minimum=0)
    if spec.finite_width_only and params is None:
        raise ValueError(spec.finite_width_only)
    X_all, Y_all = np.concatenate([X for X, _ in tasks]), np.concatenate([Y for _, Y in tasks])
    start = _memory.offsets(sizes)
    lk_all = layer_kernels(net, X_all, params=params) if kernels is None else kernels
    if lk_all.fwd.shape[1] != X_all.shape[0]:
        raise ValueError(f"kernels are over {lk_all.fwd.shape[1]} samples but the tasks have {X_all.shape[0]}")
    F = [np.zeros(Y_all.shape) if params is None else np.asarray(net.apply(params, X_all), float)]
    lr_rule = "given" if lr is not None else None
    lr = None if lr is None else check_lr(lr)
    ce = loss is losses.CROSS_ENTROPY
    dynamic = spec.needs_residual or spec.random or ce
    V = np.asarray(losses.null_basis(net.out_dim)) if ce else None
    for t, (X, Y) in enumerate(tasks):
        f = F[-1]
        B = np.arange(start[t], start[t + 1])
        O = np.arange(start[t - 1], start[t]) if proj.uses_old_metric and t > 0 else np.zeros(0, int)
        order, position, old_pos = task_rows(X_all.shape[0], B, O, ce)
        lk = reorder(lk_all, order)
        protected = position[_memory.protected_samples(sizes, t, memory)]
        R_O = logit_whitening(net, X_all[O], params, F[t][O]) if ce and len(O) else None
        for k in range(steps if dynamic else 1):
            prob = _problem.prepare(net, X, params, loss.name, Y, f[B])
            ctx = _problem.context(spec, prob, damping, rcond, options, step=t * steps + k)
            _projections.check_method(spec, proj, ctx.damping)
            basis = basis_context(ctx, proj, damping, basis_damping)
            rk_c = loss.rows(net.out_dim) if ce else kernel_rows(lk, spec)
            kw = dict(method=spec.name, projection=proj.name, n_b=len(B), n_old=len(O))
            if ce:
                K = _whitened_kernel_jit(lk, prob.whitening().R, R_O, ctx, basis, sample_rows(protected, rk_c),
                                         old_pos, **kw)
            else:
                kernel_fn = _projected_kernel_jit if dynamic else projected_kernel  # fixed kernels: computed once
                K = kernel_fn(lk, ctx, basis, sample_rows(protected, rk_c), old_pos, **kw)
            if lr is None:
                lr, lr_rule = _initial_lr(spec, K[: len(B) * rk_c], ctx)
            if ce:  # one step of the linearised logits: V·(−η K^P ũ) on every sample's rows Vᵀ
                moved = -lr * K[np.asarray(sample_rows(position, rk_c))] @ ctx.residual
                f = f + np.asarray(moved).reshape(-1, rk_c) @ V.T
                continue
            layout = _Layout(rk_c, net.out_dim)
            r0 = layout.to_kernel(jnp.asarray(f[B] - Y))
            moved = closed_form(K, r0, lr, steps=1 if dynamic else steps)  # rows in the task-first order
            f = f + np.asarray(layout.to_outputs(moved[np.asarray(sample_rows(position, rk_c))]))
        F.append(f)
    regime = "infinite width" if params is None else "linearised"
    return results.build(spec.name, proj.name, np.stack(F), Y_all, sizes, lr, lr_rule, damping, memory, regime, steps,
                         loss_name=loss.name)


def _initial_lr(spec, K_BB, ctx):
    """The method's step rule (:func:`ntk_ngd.trajectory.default_lr`) on task 0's kernel K_BB (nothing to protect
    yet, so it is the method's own kernel)."""
    u = None if ctx.residual is None else np.reshape(np.asarray(ctx.residual), (ctx.n, -1))
    metric = None if spec.step_rule in ("one", "min_residual") else np.asarray(K_BB)
    return default_lr(spec.step_rule, metric, None, u)


__all__ = ["closed_form", "projected_kernel", "sequential", "task_rows", "whitened_kernel"]
