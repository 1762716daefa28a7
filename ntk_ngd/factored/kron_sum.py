"""Solving (Σ_i σ_i A_i ⊗ B_i + ρI) X = ∇ in matrix form (A_i X B_i is (A_i ⊗ B_i)vec X, A_i, B_i symmetric).

* One term: exact, from the eigendecompositions A₁ = PαPᵀ, B₁ = QβQᵀ:
  X = P[(Pᵀ∇Q) ⊘ (σα_iβ_j + ρ)]Qᵀ, O(d³ + m³) (numerically-zero σα_iβ_j + ρ dropped: the pseudo-inverse at ρ = 0).
* Two or more terms with the additive ρI: no joint eigenbasis in general (the two-term generalised eigenproblem
  A₂v = λA₁v diagonalises σ₁A₁⊗B₁ + σ₂A₂⊗B₂ but not the added ρI, unless the damping is put into the factors),
  so matrix-free preconditioned CG with the Kronecker matvec X ↦ Σ σ_iA_iXB_i + ρX (O(k(d²m + dm²))) and the
  exact inverse of the first term (+ρI) as preconditioner; stop at ||r|| ≤ tol·||∇|| or ``maxiter`` iterations.
  A truncated Kronecker SVD of a PSD block need not be PSD: its second term is Frobenius-orthogonal to the
  first, so A₂ and B₂ are indefinite, and σ₁A₁⊗B₁ + σ₂A₂⊗B₂ has negative eigenvalues whenever
  σ₁ + σ₂λ_iμ_j < 0 for some generalised eigenvalues (A₂v = λA₁v, B₂w = μB₁w; Sylvester's inertia). CG still
  solves a nonsingular symmetric indefinite system when no pᵀ(Σ + ρI)p vanishes (its iterates are the Galerkin
  solutions of the Krylov spaces; it no longer minimises anything, and the direction Σ⁻¹∇ need not descend), so
  PCG runs on, records ``indefinite`` when it meets pᵀ(Σ + ρI)p ≤ 0, and stops at ||r|| ≤ tol·||∇||, ``maxiter``
  or a breakdown (pᵀ(Σ + ρI)p = 0). Where it has not converged, :func:`solve` returns the exact inverse of the
  first term + ρI (the preconditioner applied to ∇: rank 1, K-FAC-like) and says so in ``converged``.
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
    rcond = linalg.kron_rcond(*s.shape, s.dtype) if rcond is None else rcond
    return Preconditioner(P, Q, linalg.inverse_eigenvalues(s.reshape(-1), rho, rcond).reshape(s.shape))


def matvec(terms: KroneckerTerms, X, rho):
    """Σ_i σ_i A_i X B_i + ρX."""
    return jnp.einsum("i,iab,bc,icd->ad", terms.sig, terms.A, X, terms.B) + rho * X


class Solution(NamedTuple):
    """X; CG's ``iterations`` and relative ``residual``; ``converged``: residual ≤ tol (False: X is the first
    term's inverse, module docstring); ``indefinite``: a direction with pᵀ(Σ + ρI)p ≤ 0 was met (the system is
    indefinite; X may not be a descent direction)."""

    X: jax.Array
    iterations: jax.Array | int
    residual: jax.Array | float
    converged: jax.Array | bool = True
    indefinite: jax.Array | bool = False


def pcg(terms: KroneckerTerms, rhs, rho, precond: Preconditioner, tol: float, maxiter: int) -> Solution:
    """Preconditioned CG on the Frobenius inner product (module docstring); ``residual`` = ||r||/||∇||."""
    norm_b = jnp.sqrt(jnp.sum(rhs**2))
    scale = jnp.where(norm_b > 0, norm_b, 1.0)

    def cond(state):
        _, r, _, _, it, _, broke = state
        return (it < maxiter) & (jnp.sqrt(jnp.sum(r**2)) > tol * scale) & ~broke

    def body(state):
        x, r, z, p, it, indefinite, _ = state
        Ap = matvec(terms, p, rho)
        rz, pAp = jnp.sum(r * z), jnp.sum(p * Ap)
        broke = (pAp == 0) | (rz == 0)
        alpha = jnp.where(broke, 0.0, rz / jnp.where(broke, 1.0, pAp))
        x, r = x + alpha * p, r - alpha * Ap
        z_new = precond(r)
        beta = jnp.where(broke, 0.0, jnp.sum(r * z_new) / jnp.where(broke, 1.0, rz))
        return x, r, z_new, z_new + beta * p, it + 1, indefinite | (pAp <= 0), broke

    z0 = precond(rhs)
    init = (jnp.zeros_like(rhs), rhs, z0, z0, jnp.asarray(0), jnp.asarray(False), jnp.asarray(False))
    x, r, _, _, it, indefinite, _ = jax.lax.while_loop(cond, body, init)
    residual = jnp.sqrt(jnp.sum(r**2)) / scale
    return Solution(x, it, residual, residual <= tol, indefinite)


def solve(terms: KroneckerTerms, rhs, rho, tol: float, maxiter: int, rcond=None) -> Solution:
    """(Σ σ_iA_i⊗B_i + ρI)⁻¹∇: exact for one term, preconditioned CG otherwise, the first term's inverse where CG
    does not converge (module docstring)."""
    precond = first_term_inverse(terms, rho, rcond)
    if terms.sig.shape[0] == 1:
        return Solution(precond(rhs), 0, 0.0)
    sol = pcg(terms, rhs, rho, precond, tol, maxiter)
    return sol._replace(X=jnp.where(sol.converged, sol.X, precond(rhs)))


__all__ = ["Preconditioner", "Solution", "first_term_inverse", "matvec", "pcg", "solve"]
