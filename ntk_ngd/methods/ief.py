"""Improved empirical Fisher (iEF; THEORY.md claim 6): defined by its update

    Δθ = −η Gᵀ(GGᵀ + λI)⁻¹s,     G the N×P per-sample gradients (rows g̃_n = J̃_nᵀu_n),

s_n the squared norm of sample n's loss gradient (||r_n||² for MSE, ||g_n||² for cross-entropy) and
λ = ρ added to the N×N Gram GGᵀ = R̃ᵀΘR̃ (rule "gram": no factor N). Its function-space kernel, with
weights w_n = s_n/||u_n||² (MSE: 1),

    Θ_iEF(x', X) = Θ(x', X) R̃ (R̃ᵀΘR̃ + λI)⁻¹ diag(w) R̃ᵀ,      Θ_iEF u = ΘR̃(R̃ᵀΘR̃ + λ)⁻¹s,

is the identity on the training points at λ = 0 for k = 1 and MSE (claim 6: the exact-NGD step with no
Fisher), diag(w) for k = 1 in general (cross-entropy with 2 classes: w_n = ||g_n||²/u_n², not
isotropic), and for k > 1 an oblique projector: every sample's loss still falls at exact NGD's
first-order rate (u_nᵀΔf_n = −η s_n), but Δf ≠ −ηu. Step rule: η = 1.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import linalg
from . import _conditions, _weighted
from ._cost import gram_solve_cost
from .base import Condition, Method, MethodKernel, register, test_kernel_or_none, verdict


def _weights(ctx):
    norms = jnp.sum(jnp.reshape(ctx.residual, (ctx.n, -1)) ** 2, axis=1)
    return jnp.where(norms > 0, ctx.weights / jnp.where(norms > 0, norms, 1.0), 0.0)


def kernel(train, test, ctx) -> MethodKernel:
    theta = train.full_output_ntk()
    R = linalg.residual_factor(ctx.residual, ctx.n)
    gram = R.T @ theta @ R  # GGᵀ: Gram of the per-sample gradients
    right = _weights(ctx)[:, None] * R.T

    def apply(cross):
        return linalg.solve_right(cross @ R, gram, ctx.damping.shift("gram", ctx.n), ctx.rcond) @ right

    return MethodKernel(apply(theta), test_kernel_or_none(test, lambda t: apply(t.full_output_ntk())))


def step(train, test, ctx):
    theta_test = None if test is None else test.full_output_ntk()
    return _weighted.weighted_step(train.full_output_ntk(), theta_test, linalg.residual_factor(ctx.residual, ctx.n),
                                   ctx.weights, ctx.damping.shift("gram", ctx.n), ctx.rcond)


def direction(train, ctx):
    return _weighted.weighted_direction(train, linalg.residual_factor(ctx.residual, ctx.n), ctx.weights,
                                        ctx.damping.shift("gram", ctx.n), ctx.rcond)


def predict(lk, ctx):
    """α = mean_n w_n, isotropic iff k = 1, Θ invertible, no zero residual, all w_n equal and λ = 0."""
    theta = lk.full_output_ntk()
    if ctx.residual is None:
        raise ValueError("method 'ief' needs residual=")
    r = np.asarray(ctx.residual).reshape(ctx.n, -1)
    nonzero = bool(np.all(np.any(r != 0, axis=1)))
    cond = [_conditions.full_rank("ntk", theta, theta.shape[0], "the NTK", ctx.rcond, lk.rows_label if lk.ntk.shape[1] == theta.shape[0] else "N*C"),
            _conditions.undamped(ctx.damping),
            Condition("nonzero_residual", nonzero, "a sample has residual exactly 0"),
            Condition("single_output", r.shape[1] == 1, "k > 1: iEF is an oblique projector, not the identity")]
    w = np.asarray(_weights(ctx))
    equal = bool(np.allclose(w, w[0], rtol=1e-12, atol=0))
    cond.append(Condition("equal_weights", equal, "w_n = s_n/||u_n||^2 differ across samples (cross-entropy)"))
    return verdict("ief", float(np.mean(w)), cond)


IEF = register(Method("ief", "improved EF (step −η r, no Fisher)", kernel, direction, predict, damping_rule="gram",
                      needs_residual=True, step_rule="one", step=step,
                      no_metric="iEF defines an update, not a Fisher: there is no metric M to project in",
                      cost=gram_solve_cost(global_solves=2)))
