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

Direct (:func:`fit_gram`): R(F_l) = U C Vᵀ with the columns u_n = vec(h̃_nh̃_nᵀ), v_n = vec(S_n) and C = I/N
(``minus``: one more column vec(A₀), vec(B₀) each and C = diag(I/N, −c)), so its rank is ≤ N (+1) and its SVD
is that of a small matrix. With the Grams G_U = UᵀU ((G_U)_nm = (h̃_nᵀh̃_m)², u_nᵀvec A₀ = h̃_nᵀA₀h̃_n) and
G_V = VᵀV ((G_V)_nm = Σ_{j,j'}(δ̃_{n,j}ᵀδ̃_{m,j'})²) factored as G = EΛEᵀ, U = Q_UΛ_U^{1/2}E_Uᵀ with Q_U
orthonormal, and R = Q_U M Q_Vᵀ, M = Λ_U^{1/2}E_UᵀCE_VΛ_V^{1/2}. The SVD M = WΣZᵀ gives σ_i = Σ_ii and
A_i = U a_i, B_i = V b_i with a_i = E_UΛ_U^{-1/2}w_i, b_i = E_VΛ_V^{-1/2}z_i (directions of G below
size·eps·λ_max dropped: they carry none of R). Cost O(N²d + (Nk)²m + N³ + rank·N(d² + k m²)), about one round of
the power iteration, and no tolerance; its memory is the (N·k)² Gram of the signals, so ``fit_terms`` takes it
when that is small against the power iteration's work (``kron_fit="auto"``). The residual
||RᵀA_i − σ_iB_i||_F/σ_1 it reports is computed in the same coordinates: RᵀA_i = V(CᵀG_Ua_i).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import linalg


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


def _u_gram(H, A0):
    """G_U: (h̃_nᵀh̃_m)², and with A₀ the column vec(A₀) appended (module docstring)."""
    G = (H @ H.T) ** 2
    if A0 is None:
        return G
    w = jnp.einsum("nd,de,ne->n", H, A0, H)
    return jnp.block([[G, w[:, None]], [w[None, :], jnp.sum(A0**2)[None, None]]])


def _v_gram(delta, B0):
    """G_V: Σ_{j,j'}(δ̃_{n,j}ᵀδ̃_{m,j'})², and with B₀ the column vec(B₀) appended."""
    n, k, _ = delta.shape
    P = jnp.einsum("njm,pqm->njpq", delta, delta)
    G = jnp.sum(P**2, axis=(1, 3))
    if B0 is None:
        return G
    z = jnp.einsum("njm,mp,njp->n", delta, B0, delta)
    return jnp.block([[G, z[:, None]], [z[None, :], jnp.sum(B0**2)[None, None]]])


def _combine(rows, coef, extra):
    """Σ_n coef_{n,i} Σ_j r_{n,j}r_{n,j}ᵀ (+ coef_{N,i}·extra): the matrices of the coordinates ``coef`` (N (+1), i)
    in the columns u_n or v_n (rows (N, k, ·))."""
    n = rows.shape[0]
    out = jnp.einsum("ni,njm,njp->imp", coef[:n], rows, rows)
    return out if extra is None else out + coef[n][:, None, None] * extra


def fit_gram(H, delta, rank: int, minus=None, scale=0.0) -> KroneckerTerms:
    """The top-``rank`` Kronecker terms of R(F_l) (or of the remainder with ``minus``) from the SVD of the small
    matrix M (module docstring, "Direct"); the same terms as :func:`fit` (up to each pair's sign), with
    iterations 0; ``residual`` relative to max(σ_1, ``scale``) as in :func:`fit`. Terms beyond R's rank N (+1)
    have σ = 0 and zero factors."""
    n, k, m = delta.shape
    d = H.shape[1]
    size = max(1, min(rank, d * d, m * m))
    A0, B0, c = (None, None, None) if minus is None else (minus[1], minus[2], minus[0])
    GU, GV = _u_gram(H, A0), _v_gram(delta, B0)
    core = jnp.full(GU.shape[0], 1.0 / n, H.dtype)
    if minus is not None:
        core = core.at[-1].set(-c)
    rootU, invU = linalg.gram_factor(GU)  # (EΛ^{1/2}, EΛ^{-1/2}), size·eps cut
    rootV, invV = linalg.gram_factor(GV)
    W, sig, Zt = jnp.linalg.svd((rootU.T * core) @ rootV)
    take = min(size, sig.shape[0])
    a, b, sig = invU @ W[:, :take], invV @ Zt[:take].T, sig[:take]
    flip = jnp.where(jnp.einsum("n,ni->i", jnp.einsum("nd,nd->n", H, H), a[:n]) < 0, -1.0, 1.0)  # tr A_i ≥ 0
    a, b = a * flip, b * flip
    A, B = _combine(H[:, None], a, A0), _combine(delta, b, B0)
    RtA_minus_sigB = _combine(delta, core[:, None] * (GU @ a) - sig * b, B0)  # RᵀA_i = V(C G_U a_i)
    res = jnp.max(jnp.sqrt(jnp.sum(RtA_minus_sigB**2, axis=(1, 2)))) / jnp.maximum(jnp.maximum(sig[0], scale), 1e-300)
    if take < size:
        pad = size - take
        sig = jnp.concatenate([sig, jnp.zeros(pad, sig.dtype)])
        A = jnp.concatenate([A, jnp.zeros((pad, d, d), A.dtype)])
        B = jnp.concatenate([B, jnp.zeros((pad, m, m), B.dtype)])
    return KroneckerTerms(sig, A, B, jnp.asarray(0), res)


#: fits of the Kronecker terms: "power" (:func:`fit`), "gram" (:func:`fit_gram`), "auto" (by cost, :func:`fit_terms`)
FITS = ("auto", "gram", "power")
#: "auto" takes the direct fit when its Gram work is below this many power-iteration rounds (and it fits memory)
GRAM_ROUNDS = 10
GRAM_MAX_ENTRIES = 1 << 24


def gram_is_cheaper(n: int, k: int, d: int, m: int, rank: int) -> bool:
    """``kron_fit="auto"``: the direct fit when (N·k)² ≤ GRAM_MAX_ENTRIES and its work, (N·k)²m + N²d + N³,
    is at most GRAM_ROUNDS rounds of the power iteration's 2·rank·N(d² + k·m²)."""
    gram = (n * k) ** 2 * m + n * n * d + n**3
    return (n * k) ** 2 <= GRAM_MAX_ENTRIES and gram <= GRAM_ROUNDS * 2 * rank * n * (d * d + k * m * m)


def fit_terms(H, delta, rank: int, how: str, tol: float, maxiter: int, start, minus=None, scale=0.0) -> KroneckerTerms:
    """The top-``rank`` terms by ``how`` in :data:`FITS` (shapes are static, so "auto" is decided at trace time)."""
    n, k, m = delta.shape
    if how == "gram" or (how == "auto" and gram_is_cheaper(n, k, H.shape[1], m, rank)):
        return fit_gram(H, delta, rank, minus, scale)
    return fit(H, delta, rank, tol, maxiter, start, minus, scale)


__all__ = ["FITS", "KroneckerTerms", "apply_r", "apply_rt", "fit", "fit_gram", "fit_terms", "gram_is_cheaper"]
