"""KPSVD and corrected K-FAC in parameter space (+ρI, "tikhonov"): the layer block's Kronecker terms from the
direct (sample-Gram) fit or the block power iteration of :mod:`.rearranged`, solved by :mod:`.kron_sum` (exact for one term, PCG otherwise).

* kpsvd: the top-``rank`` terms of R(F_l), started from K-FAC's A.
* kfac_cor: K-FAC's A ⊗ G (coefficient 1) plus the top term of the remainder R(F_l) − vec(A)vec(G)ᵀ.

``factored_damping``: "rule" (+ρI, the Gram form's; PCG at every step) or "pi" (the damping in the first term's
factors; exact two-term inverse once a refresh, :mod:`.two_term`).
"""
from __future__ import annotations

import jax.numpy as jnp

from . import kron_sum, rearranged, two_term
from .features import kron_factors
from .form import FactoredForm


def statistics(H, delta, ctx):
    return kron_factors(H, delta)


def kpsvd_terms(stats, H, delta, ctx, settings, l):
    return rearranged.fit_terms(H, delta, ctx.option("rank"), settings.kron_fit, settings.power_tol,
                                settings.power_maxiter, stats[0])


def kfac_cor_terms(stats, H, delta, ctx, settings, l):
    A, G = stats
    size = jnp.sqrt(jnp.sum(A**2) * jnp.sum(G**2))  # ||A ⊗ G||_F: the scale of the block (the remainder can be 0)
    cor = rearranged.fit_terms(H, delta, 1, settings.kron_fit, settings.power_tol, settings.power_maxiter, A,
                               minus=(1.0, A, G), scale=size)
    return rearranged.KroneckerTerms(jnp.concatenate([jnp.ones(1, A.dtype), cor.sig]),
                                     jnp.concatenate([A[None], cor.A]), jnp.concatenate([G[None], cor.B]),
                                     cor.iterations, cor.residual)


def inverse_of(fit_terms):
    """The inverse stage: the fitted terms ("rule": solved by CG at every apply) or their exact damped two-term
    inverse ("pi", :mod:`.two_term`)."""

    def inverse(stats, H, delta, ctx, settings, l):
        terms = fit_terms(stats, H, delta, ctx, settings, l)
        return two_term.damped_two_term(terms, ctx.damping) if settings.factored_damping == "pi" else terms

    return inverse


def apply(inv, grad, ctx, settings):
    if settings.factored_damping == "pi":
        return inv(grad)
    return kron_sum.solve(inv, grad, ctx.damping.value, settings.cg_tol, settings.cg_maxiter, ctx.rcond).X


def check_rank(settings, options):
    """The π-split inverts at most two terms exactly (:mod:`.two_term`)."""
    rank = options.get("rank", 1)
    if settings.factored_damping == "pi" and isinstance(rank, int) and rank > 2:
        raise ValueError(f"factored_damping='pi' inverts at most 2 Kronecker terms exactly, got rank={rank}: "
                         "pass rank <= 2 or factored_damping='rule' (CG)")


def is_kronecker_sum(form) -> bool:
    """Whether a factored form solves a fitted Kronecker sum (this module's ``apply``: kpsvd, kfac_cor)."""
    return form is not None and form.apply is apply


KPSVD = FactoredForm(statistics, inverse_of(kpsvd_terms), apply, splits=("rule", "pi"), check=check_rank)
KFAC_COR = FactoredForm(statistics, inverse_of(kfac_cor_terms), apply, splits=("rule", "pi"))

__all__ = ["KFAC_COR", "KPSVD", "inverse_of", "is_kronecker_sum", "kfac_cor_terms", "kpsvd_terms"]
