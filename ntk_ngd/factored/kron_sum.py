"""Solving (Σ_i σ_i A_i ⊗ B_i + ρI) X = ∇ in matrix form (A_i X B_i is (A_i ⊗ B_i)vec X, A_i, B_i symmetric).

* One term: exact, from the eigendecompositions A₁ = PαPᵀ, B₁ = QβQᵀ:
  X = P[(Pᵀ∇Q) ⊘ (σα_iβ_j + ρ)]Qᵀ, O(d³ + m³) (numerically-zero σα_iβ_j + ρ dropped: the pseudo-inverse at ρ = 0).
* Two or more terms with the additive ρI: no joint eigenbasis in general (the two-term generalised eigenproblem
  A₂v = λA₁v diagonalises σ₁A₁⊗B₁ + σ₂A₂⊗B₂ but not the added ρI, unless the damping is put into the factors),
  so matrix-free preconditioned CG with the Kronecker matvec X ↦ Σ σ_iA_iXB_i + ρX (O(k(d²m + dm²))) and the
  exact inverse of the first term (+ρI) as preconditioner; stop at ||r|| ≤ tol·||∇|| or ``maxiter`` iterations.
  CG needs Σ σ_iA_i⊗B_i + ρI positive definite; a truncated Kronecker SVD of a PSD block can have small negative
  eigenvalues, which any ρ above their size cures.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import linalg
from .rearranged import KroneckerTerms


class Preconditioner(NamedTuple):
    """The first term's eigenbases P (d × d), Q (m × m) and weights 1/(σ₁α_iβ_j + ρ) (d × m)."""

    P: jax.Array
    Q: jax.Array
    w: jax.Array

    def __call__(self, X):
        return self.P @ ((self.P.T @ X @ self.Q) * self.w) @ self.Q.T


def first_term_inverse(terms: KroneckerTerms, rho, rcond=None) -> Preconditioner:
    alpha, P = linalg.eigh_sym(terms.A[0])
    beta, Q = linalg.eigh_sym(terms.B[0])
    s = terms.sig[0] * jnp.outer(alpha, beta)
    return Preconditioner(P, Q, linalg.inverse_eigenvalues(s.reshape(-1), rho, rcond).reshape(s.shape))


def matvec(terms: KroneckerTerms, X, rho):
    """Σ_i σ_i A_i X B_i + ρX."""
    return jnp.einsum("i,iab,bc,icd->ad", terms.sig, terms.A, X, terms.B) + rho * X


class Solution(NamedTuple):
    X: jax.Array
    iterations: jax.Array | int
    residual: jax.Array | float


def pcg(terms: KroneckerTerms, rhs, rho, precond: Preconditioner, tol: float, maxiter: int) -> Solution:
    """Preconditioned CG on the Frobenius inner product (module docstring); ``residual`` = ||r||/||∇||."""
    norm_b = jnp.sqrt(jnp.sum(rhs**2))
    scale = jnp.where(norm_b > 0, norm_b, 1.0)

    def cond(state):
        _, r, _, _, it = state
        return (it < maxiter) & (jnp.sqrt(jnp.sum(r**2)) > tol * scale)

    def body(state):
        x, r, z, p, it = state
        Ap = matvec(terms, p, rho)
        rz = jnp.sum(r * z)
        alpha = rz / jnp.sum(p * Ap)
        x, r = x + alpha * p, r - alpha * Ap
        z_new = precond(r)
        return x, r, z_new, z_new + (jnp.sum(r * z_new) / rz) * p, it + 1

    z0 = precond(rhs)
    x, r, _, _, it = jax.lax.while_loop(cond, body, (jnp.zeros_like(rhs), rhs, z0, z0, jnp.asarray(0)))
    return Solution(x, it, jnp.sqrt(jnp.sum(r**2)) / scale)


def solve(terms: KroneckerTerms, rhs, rho, tol: float, maxiter: int, rcond=None) -> Solution:
    """(Σ σ_iA_i⊗B_i + ρI)⁻¹∇: exact for one term, preconditioned CG otherwise (module docstring)."""
    precond = first_term_inverse(terms, rho, rcond)
    if terms.sig.shape[0] == 1:
        return Solution(precond(rhs), 0, 0.0)
    return pcg(terms, rhs, rho, precond, tol, maxiter)


__all__ = ["Preconditioner", "Solution", "first_term_inverse", "matvec", "pcg", "solve"]
