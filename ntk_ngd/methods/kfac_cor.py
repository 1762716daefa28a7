"""Corrected K-FAC (Koroko et al. 2022): per layer K-FAC's A⊗B (A = H̃ᵀH̃/N, B = Σ_n S_n/N) plus the best
Kronecker fit σ C⊗D of the remainder F_l − A⊗B, + ρI (rule "tikhonov"; THEORY.md "Kronecker-basis
approximations"). The remainder's rearrangement is U(I/N − 11ᵀ/N²)Vᵀ, so its best fit is the top term of
:func:`.kpsvd.kronecker_svd` with that core; the kernel and update are the Gram forms of :mod:`.kpsvd`
for the two terms.

Theory: with one layer the block is exactly A ⊗ I_k (the remainder is 0) and the method is exact NGD
(α = 1). With hidden layers the correction removes the exact N·I that K-FAC's hidden layers contribute
and no closed form is known: the theory is silent (measured: not isotropic).
"""
from __future__ import annotations

import jax.numpy as jnp

from ..factored import kpsvd as factored_kpsvd
from . import _conditions
from .base import Method, register, silent, verdict
from .kpsvd import fitted_cost, fitted_direction, fitted_kernel, kronecker_svd, span_metric


def corrected_kfac_terms(fwd, bwd, n: int, c: int, rcond=None):
    """(σ, a, b) of K-FAC's A⊗B (a = b = 1/N) followed by the best Kronecker fit of the remainder."""
    ones = jnp.ones((1, n)) / n
    sig, a, b = kronecker_svd(fwd, bwd, n, c, 1, rcond, core=jnp.eye(n) / n - ones.T @ ones)
    return jnp.concatenate([jnp.ones(1), sig]), jnp.concatenate([ones, a]), jnp.concatenate([ones, b])


def _terms(ctx):
    return lambda fwd, bwd, n, c: corrected_kfac_terms(fwd, bwd, n, c, ctx.rcond)


def kernel(train, test, ctx):
    return fitted_kernel(train, test, ctx, _terms(ctx))


def direction(train, ctx):
    return fitted_direction(train, ctx, _terms(ctx))


def predict(lk, ctx):
    if lk.depth == 1:  # the readout block is exactly A ⊗ I: K-FAC is exact, the correction 0
        return verdict("kfac_cor", 1.0, (*_conditions.input_grams_full_rank(lk, ctx.rcond),
                                         _conditions.undamped(ctx.damping)))
    return silent("kfac_cor", "no closed form for hidden layers (K-FAC + a rank-1 Kronecker correction of its "
                  "remainder); theory silent")


KFAC_COR = register(Method("kfac_cor", "corrected K-FAC (Koroko et al.): A⊗B + best Kronecker fit of F − A⊗B, + ρI",
                           kernel, direction, predict, damping_rule="tikhonov", metric=span_metric(_terms),
                           cost=fitted_cost(lambda options: 2), factored=factored_kpsvd.KFAC_COR))
