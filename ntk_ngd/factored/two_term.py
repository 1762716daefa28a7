"""The exact inverse of a damped sum of two Kronecker terms, ``factored_damping="pi"`` for kpsvd and kfac_cor
(THEORY.md "Factored form (parameter space)").

With the Gram form's +ρI a sum of two Kronecker terms has no joint eigenbasis, hence CG (:mod:`.kron_sum`). Put
the damping into the first term's factors instead, split by Martens–Grosse's π as K-FAC does (:mod:`.damping`):

    Σ = (A₁ + π√ρ I) ⊗ (σ₁B₁ + (√ρ/π) I) + A₂ ⊗ σ₂B₂      (its identity part is ρ·I, as with +ρI),

and, with A₁' = A₁ + π√ρ I = PαPᵀ, Ã₂ = A₁'^{-1/2}A₂A₁'^{-1/2} = EλEᵀ (and B₁', B̃₂ = FμFᵀ alike), the
congruence S_A = A₁'^{-1/2}E, S_B = B₁'^{-1/2}F gives Σ = (S_A⊗S_B)⁻ᵀ diag(1 + λ_iμ_j) (S_A⊗S_B)⁻¹, so

    Σ⁻¹∇ = S_A [(S_Aᵀ∇S_B) ⊘ (1 + λ_iμ_j)] S_Bᵀ,

four d- or m-sized eigendecompositions a refresh and four matmuls a step (K-FAC's cost), no iteration.
A truncated Kronecker SVD of a PSD block need not be PSD (:mod:`.kron_sum`): where 1 + λ_iμ_j ≤ 0 the second term
would make the curvature non-positive, and that direction keeps the first term alone (weight 1); ``clipped``
counts them. The top term of a PSD block is PSD (A₁, B₁ taken with tr A₁ ≥ 0); one term is K-FAC's π-split.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import linalg
from .damping import factor_shifts
from .rearranged import KroneckerTerms


class TwoTermInverse(NamedTuple):
    """S_A (d × d), S_B (m × m), weights 1/(1 + λ_iμ_j) (d × m), ``clipped``: entries with 1 + λ_iμ_j ≤ 0."""

    SA: jax.Array
    SB: jax.Array
    w: jax.Array
    clipped: jax.Array

    def __call__(self, X):
        return self.SA @ ((self.SA.T @ X @ self.SB) * self.w) @ self.SB.T


def _inverse_root(K):
    """K^{-1/2} of a symmetric positive-definite K (eigenvalues below size·eps·max cut)."""
    evals, evecs = linalg.eigh_sym(K)
    kept = evals > linalg.default_rcond(K.shape[0], K.dtype) * jnp.max(evals)
    return (evecs * jnp.where(kept, 1.0 / jnp.sqrt(jnp.where(kept, evals, 1.0)), 0.0)) @ evecs.T


def _congruence(first, second):
    """(S = first^{-1/2}E, λ) with first^{-1/2} second first^{-1/2} = EλEᵀ."""
    root = _inverse_root(first)
    lam, E = linalg.eigh_sym(root @ second @ root)
    return root @ E, lam


def damped_two_term(terms: KroneckerTerms, damping) -> TwoTermInverse:
    """Σ⁻¹ of the module docstring for terms with one or two Kronecker products."""
    k = terms.sig.shape[0]
    if k > 2:
        raise ValueError(f"factored_damping='pi' inverts at most 2 Kronecker terms exactly, got {k}: pass rank <= 2 "
                         "or factored_damping='rule' (CG)")
    sign = jnp.where(jnp.trace(terms.A[0]) < 0, -1.0, 1.0)
    A1, B1 = sign * terms.A[0], sign * terms.sig[0] * terms.B[0]
    sa, sb = factor_shifts(A1, B1, damping, "pi")
    A1 = A1 + sa * jnp.eye(A1.shape[0], dtype=A1.dtype)
    B1 = B1 + sb * jnp.eye(B1.shape[0], dtype=B1.dtype)
    if k == 1:
        SA, SB = _inverse_root(A1), _inverse_root(B1)
        return TwoTermInverse(SA, SB, jnp.ones((SA.shape[0], SB.shape[0]), A1.dtype), jnp.asarray(0))
    SA, lam = _congruence(A1, terms.A[1])
    SB, mu = _congruence(B1, terms.sig[1] * terms.B[1])
    D = 1.0 + jnp.outer(lam, mu)
    positive = D > 0
    return TwoTermInverse(SA, SB, jnp.where(positive, 1.0 / jnp.where(positive, D, 1.0), 1.0),
                          jnp.sum(~positive))


__all__ = ["TwoTermInverse", "damped_two_term"]
