"""KPSVD and corrected K-FAC in parameter space (+ρI, "tikhonov"): the layer block's Kronecker terms from the
block power iteration of :mod:`.rearranged`, solved by :mod:`.kron_sum` (exact for one term, PCG otherwise).

* kpsvd: the top-``rank`` terms of R(F_l), started from K-FAC's A.
* kfac_cor: K-FAC's A ⊗ G (coefficient 1) plus the top term of the remainder R(F_l) − vec(A)vec(G)ᵀ.
"""
from __future__ import annotations

import jax.numpy as jnp

from . import kron_sum, rearranged
from .features import kron_factors
from .form import FactoredForm


def statistics(H, delta, ctx):
    return kron_factors(H, delta)


def kpsvd_terms(stats, H, delta, ctx, settings, l):
    return rearranged.fit(H, delta, ctx.option("rank"), settings.power_tol, settings.power_maxiter, stats[0])


def kfac_cor_terms(stats, H, delta, ctx, settings, l):
    A, G = stats
    size = jnp.sqrt(jnp.sum(A**2) * jnp.sum(G**2))  # ||A ⊗ G||_F: the scale of the block (the remainder can be 0)
    cor = rearranged.fit(H, delta, 1, settings.power_tol, settings.power_maxiter, A, minus=(1.0, A, G), scale=size)
    return rearranged.KroneckerTerms(jnp.concatenate([jnp.ones(1, A.dtype), cor.sig]),
                                     jnp.concatenate([A[None], cor.A]), jnp.concatenate([G[None], cor.B]),
                                     cor.iterations, cor.residual)


def apply(terms, grad, ctx, settings):
    return kron_sum.solve(terms, grad, ctx.damping.value, settings.cg_tol, settings.cg_maxiter, ctx.rcond).X


KPSVD = FactoredForm(statistics, kpsvd_terms, apply)
KFAC_COR = FactoredForm(statistics, kfac_cor_terms, apply)

__all__ = ["KFAC_COR", "KPSVD", "kfac_cor_terms", "kpsvd_terms"]
