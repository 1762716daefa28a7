"""Empirical Fisher: G = Σ_n g̃_n g̃_nᵀ/N with the per-sample gradients g̃_n = J̃_nᵀu_n (THEORY.md claim 5);
rule "tikhonov". A weighted Fisher (:mod:`._weighted`) with E = R̃ (N·k × N, column n holds u_n in
sample n's rows). At ρ = 0 with Θ invertible and k = 1, Θ_EF = diag(1/u²) and Δf = −η/u: the
largest step where the residual is smallest. Step rule: η = min_n ||u_n||² (no sample overshoots at
step 0). Since u = R̃1, the step Θ_EF u = ΘR̃(R̃ᵀΘR̃ + Nρ)⁺1 stays finite where the kernel does not.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _validate, linalg
from . import _conditions, _weighted
from ._cost import gram_solve_cost
from ._metric import woodbury_metric
from .base import Condition, Method, diagonal_prediction, register, verdict


def _factor(ctx):
    return linalg.residual_factor(ctx.residual, ctx.n)


def kernel(train, test, ctx):
    r = np.asarray(ctx.residual).reshape(ctx.n, -1) if not _validate.is_traced(ctx.residual) else None
    if r is not None and not ctx.damping.positive:
        zeros = np.flatnonzero(np.all(r == 0, axis=1))
        if zeros.size:
            raise ValueError(f"ef: residual is exactly zero at samples {zeros[:5].tolist()}: the empirical Fisher has "
                             "no curvature there and its step -eta/r is infinite; pass damping > 0")
    theta_test = None if test is None else test.full_output_ntk()
    # Q_n = u_nu_nᵀ: invertible iff one row per sample (and u_n ≠ 0, checked above when concrete)
    invertible = None if r is not None else train.full_output_ntk().shape[0] == ctx.n
    return _weighted.weighted_fisher_kernel(train.full_output_ntk(), theta_test, _factor(ctx), ctx,
                                            label="ef: the empirical Fisher", invertible=invertible)


def step(train, test, ctx):
    ones = jnp.ones(ctx.n, dtype=ctx.residual.dtype)
    theta_test = None if test is None else test.full_output_ntk()
    return _weighted.weighted_step(train.full_output_ntk(), theta_test, _factor(ctx), ones,
                                   ctx.damping.shift("tikhonov", ctx.n), ctx.rcond)


def direction(train, ctx):
    ones = jnp.ones(ctx.n, dtype=ctx.residual.dtype)
    return _weighted.weighted_direction(train, _factor(ctx), ones, ctx.damping.shift("tikhonov", ctx.n), ctx.rcond)


def predict(lk, ctx):
    """Θ_EF = diag(1/u²) (k = 1, ρ = 0, Θ invertible, no zero residual; claim 5): isotropic iff all |u_n| agree.
    Where it holds the prediction carries that diagonal (computed from the residual alone, never from the
    kernel) and its deviation."""
    theta = lk.full_output_ntk()
    cond = [_conditions.full_rank("ntk", theta, theta.shape[0], "the NTK", ctx.rcond, lk.rows_label if lk.ntk.shape[1] == theta.shape[0] else "N*C"),
            _conditions.undamped(ctx.damping)]
    if ctx.residual is None:
        raise ValueError("method 'ef' needs residual=")
    r = np.asarray(ctx.residual).reshape(ctx.n, -1)
    nonzero = bool(np.all(np.any(r != 0, axis=1)))
    cond.append(Condition("nonzero_residual", nonzero, "a sample has residual exactly 0"))
    single = r.shape[1] == 1
    alpha = float(np.mean(1.0 / r**2)) if nonzero and single else None
    equal = single and bool(np.allclose(np.abs(r), np.abs(r[0, 0]), rtol=1e-12, atol=0))
    cond.append(Condition("equal_abs_residuals", equal, "EF kernel is diag(1/r²): isotropic only if all |r| agree"))
    pred = verdict("ef", alpha, cond)
    if alpha is not None and all(c.holds for c in cond[:3]):
        return diagonal_prediction(pred, 1.0 / r[:, 0] ** 2)
    return pred


EF = register(Method("ef", "empirical Fisher Σ_n g_n g_nᵀ/N (step −η/r)", kernel, direction, predict,
                     damping_rule="tikhonov", needs_residual=True, step_rule="min_residual", step=step,
                     metric=woodbury_metric(_weighted.full_ntk, _factor), cost=gram_solve_cost(global_solves=2)))
