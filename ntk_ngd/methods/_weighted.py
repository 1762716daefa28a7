"""Weighted Fishers G = J̃ᵀEEᵀJ̃/N, E (N·k × m) block-diagonal over samples (THEORY.md claims 5–7):
the empirical and sampled Fishers, and the per-sample-gradient Gram of iEF. Rule "tikhonov".

When Q = EEᵀ is invertible, with K̃ = Q^{1/2}ΘQ^{1/2} (push-through on Q^{1/2}J̃):

    Θ_G(x', X) = Θ(x', X) Q^{1/2} (K̃ + NρI)⁻¹ Q^{−1/2}.

When Q is singular (a zero residual; EF with k > 1, whose Q_n = u_nu_nᵀ has rank 1) the kernel is
finite only for ρ > 0, through Woodbury: Θ_G(x', X) = [Θ(x', X) − Θ(x', X)E(EᵀΘE + Nρ)⁻¹EᵀΘ] / (Nρ).
Steps stay finite: for u = E c, Θ_G u = ΘE(EᵀΘE + Nρ)⁻¹c (EF: c = 1_N).
Between any rows the same Woodbury form holds (:func:`._metric.woodbury_metric`, ρ > 0).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _validate, linalg
from .base import MethodKernel


def full_ntk(lk):
    return lk.full_output_ntk()


def weighted_fisher_kernel(theta, theta_test, E, ctx, label="this Fisher", invertible: bool | None = None) -> MethodKernel:
    """Θ_G for G = J̃ᵀEEᵀJ̃/N (module docstring); the stable form when Q = EEᵀ is invertible.

    ``invertible``: whether Q is, when the caller knows it statically (needed under jit); None checks
    the eigenvalues of Q (host)."""
    shift = ctx.damping.shift("tikhonov", ctx.n)
    Q = E @ E.T
    q_evals, q_vecs = linalg.eigh_sym(Q)
    cutoff = linalg.default_rcond(Q.shape[0]) * jnp.max(q_evals)
    if invertible is None:
        if _validate.is_traced(q_evals):
            raise ValueError(f"{label}: whether its weight Q is invertible must be given under jit")
        invertible = bool(jnp.min(q_evals) > cutoff)
    if invertible:
        root = (q_vecs * jnp.sqrt(jnp.abs(q_evals))) @ q_vecs.T
        inv_root = (q_vecs / jnp.sqrt(jnp.abs(q_evals))) @ q_vecs.T
        weighted = root @ theta @ root

        def apply(cross):
            return linalg.solve_right(cross @ root, weighted, shift, ctx.rcond) @ inv_root

    elif ctx.damping.positive:
        inner = E.T @ theta @ E

        def apply(cross):
            return (cross - linalg.solve_right(cross @ E, inner, shift, ctx.rcond) @ E.T @ theta) / shift

    else:
        raise ValueError(
            f"{label} is singular (rank {int(np.sum(np.asarray(q_evals) > float(cutoff)))} < N·k = {Q.shape[0]}): "
            "its kernel is infinite at damping 0; pass damping > 0")
    return MethodKernel(apply(theta), None if theta_test is None else apply(theta_test))


def weighted_step(theta, theta_test, E, coeff, shift, rcond):
    """(ΘE(EᵀΘE + shift)⁺coeff, Θ(x', X)E(…)⁺coeff): the step of a weighted Fisher for u = E·coeff."""
    weights = E @ linalg.solve(E.T @ theta @ E, coeff, shift, rcond)
    return theta @ weights, None if theta_test is None else theta_test @ weights


def weighted_direction(train, E, coeff, shift, rcond) -> list:
    """J̃ᵀE(EᵀΘE + shift)⁺coeff per layer (Φ = EᵀJ̃: Φᵀ(ΦΦᵀ + shift)⁻¹coeff)."""
    theta = jnp.sum(train.ntk, axis=0)
    u = E @ linalg.solve(E.T @ theta @ E, coeff, shift, rcond)
    return [linalg.jt(H, d, u) for H, d in zip(train.inputs, train.deltas)]
