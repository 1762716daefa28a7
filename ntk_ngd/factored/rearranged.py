"""The best rank-k Kronecker fit of a layer block from per-sample features: block power iteration on Van Loan's
rearrangement, never a P_l × P_l (or N×N) matrix (THEORY.md "Factored form (parameter space)").

R maps A ⊗ B to vec(A)vec(B)ᵀ, so R(F_l) = (1/N) Σ_n vec(h̃_nh̃_nᵀ) vec(S_n)ᵀ (S_n = Σ_j δ̃_{n,j}δ̃_{n,j}ᵀ) acts as

    R(F_l)·B = (1/N) Σ_n (δ̃_nᵀBδ̃_n) h̃_nh̃_nᵀ,      R(F_l)ᵀ·A = (1/N) Σ_{n,j} (h̃_nᵀAh̃_n) δ̃_{n,j}δ̃_{n,j}ᵀ,

with δ̃_nᵀBδ̃_n = Σ_j δ̃_{n,j}ᵀBδ̃_{n,j}: O(N(d² + k·m²)) per product. ``minus`` = (c, A₀, B₀) fits the remainder
R(F_l) − c·vec(A₀)vec(B₀)ᵀ instead (corrected K-FAC). Subspace iteration with Rayleigh–Ritz: B ← orth(RᵀA),
A ← orth(RB), then the SVD of the k × k matrix ⟨A_i, RB_j⟩ rotates both blocks to singular pairs; it stops when
every pair has ||RᵀA_i − σ_iB_i||_F ≤ tol·max(σ_1, scale) or after ``maxiter`` rounds (``scale``: the size of
the block being fitted, for a remainder whose top σ may be 0, e.g. the readout's exact A ⊗ I). The terms σ_iA_i ⊗ B_i
(||A_i||_F = ||B_i||_F = 1) are the same as an explicit SVD's up to the sign of each (A_i, B_i) pair.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KroneckerTerms(NamedTuple):
    """Σ_i sig_i A_i ⊗ B_i: sig (k,), A (k, d, d), B (k, m, m); ``iterations`` and ``residual`` of the fit."""

    sig: jax.Array
    A: jax.Array
    B: jax.Array
    iterations: jax.Array | int = 0
    residual: jax.Array | float = 0.0


def apply_r(H, delta, B, minus=None):
    """R(F)·B_i for a stack B (k, m, m) → (k, d, d) (module docstring)."""
    t = jnp.einsum("njm,kmp,njp->kn", delta, B, delta)
    out = jnp.einsum("kn,nd,ne->kde", t, H, H) / H.shape[0]
    if minus is not None:
        c, A0, B0 = minus
        out = out - c * jnp.einsum("kmp,mp->k", B, B0)[:, None, None] * A0
    return out


def apply_rt(H, delta, A, minus=None):
    """R(F)ᵀ·A_i for a stack A (k, d, d) → (k, m, m)."""
    w = jnp.einsum("nd,kde,ne->kn", H, A, H)
    out = jnp.einsum("kn,njm,njp->kmp", w, delta, delta) / H.shape[0]
    if minus is not None:
        c, A0, B0 = minus
        out = out - c * jnp.einsum("kde,de->k", A, A0)[:, None, None] * B0
    return out


def _orth(X):
    """Frobenius-orthonormal basis of the span of the stack X (k, a, a) (QR of the vectorised stack)."""
    k = X.shape[0]
    Q, _ = jnp.linalg.qr(X.reshape(k, -1).T)
    return Q.T.reshape(X.shape)


def _start(d: int, k: int, dtype, first):
    """Initial A block: ``first`` (K-FAC's A, near the top singular vector) and fixed random symmetric matrices."""
    X = jax.random.normal(jax.random.PRNGKey(0), (k, d, d), dtype)
    X = 0.5 * (X + jnp.swapaxes(X, 1, 2))
    X = X.at[0].set(first)
    return _orth(X)


def fit(H, delta, rank: int, tol: float, maxiter: int, start, minus=None, scale=0.0) -> KroneckerTerms:
    """The top-``rank`` Kronecker terms of R(F_l) (or of the remainder with ``minus``), ``start`` the first A.

    k = min(rank, d², m²) terms, independent of N so that a mini-batch state keeps one shape (R(F_l) has rank
    ≤ N: for N < rank the extra terms have σ ≈ 0 and add nothing); traceable (``lax.while_loop``)."""
    d, m = H.shape[1], delta.shape[-1]
    k = max(1, min(rank, d * d, m * m))
    A0 = _start(d, k, H.dtype, start)

    def cond(state):
        _, _, _, it, res = state
        return (it < maxiter) & (res > tol)

    def body(state):
        A, B, sig, it, _ = state
        RtA = apply_rt(H, delta, A, minus)
        res = jnp.max(jnp.sqrt(jnp.sum((RtA - sig[:, None, None] * B) ** 2, axis=(1, 2)))) / jnp.maximum(jnp.maximum(sig[0], scale), 1e-300)
        B = _orth(RtA)
        RB = apply_r(H, delta, B, minus)
        A = _orth(RB)
        T = jnp.einsum("ide,jde->ij", A, RB)
        P, s, Qt = jnp.linalg.svd(T)
        return (jnp.einsum("ip,ide->pde", P, A), jnp.einsum("pj,jmn->pmn", Qt, B), s, it + 1, res)

    init = (A0, jnp.zeros((k, m, m), H.dtype), jnp.zeros(k, H.dtype), jnp.asarray(0), jnp.asarray(jnp.inf, H.dtype))
    A, B, sig, it, res = jax.lax.while_loop(cond, body, init)
    return KroneckerTerms(sig, A, B, it, res)


__all__ = ["KroneckerTerms", "apply_r", "apply_rt", "fit"]
