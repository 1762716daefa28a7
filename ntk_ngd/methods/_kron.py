"""Gram-form pieces shared by the Kronecker-structured methods: KPSVD, EKFAC, diagonal Fisher
(THEORY.md "Kronecker-basis approximations: KPSVD, EKFAC, diagonal Fisher").

Every row (n, c) of a Dense layer's Jacobian is J_l[(n, c)] = h̃_n ⊗ δ_{n,c}. If an approximation of
the block F_l = J_lᵀJ_l/N is *diagonal in an orthonormal Kronecker basis* E_H ⊗ E_Δ,

    G_l = (E_H ⊗ E_Δ) diag(s) (E_H ⊗ E_Δ)ᵀ,

then with basis coordinates ĥ_n = E_Hᵀh̃_n and δ̂_{n,c} = E_Δᵀδ_{n,c} the function-space kernel is

    Θ_l(x', X)[p, q] = (1/N) Σ_ij ĥ'_{p,i} ĥ_{q,i} δ̂'_{p,j} δ̂_{q,j} / (s_ij + ρ)          (p, q = (n, c) rows).

EKFAC (E = eigenbases of the K-FAC factors), the diagonal Fisher (E = the standard basis) and
rank-1 KPSVD (E = eigenbases of its two factors) all have this form; EKFAC and diag fit s to the
true Fisher, s_ij = (1/N) Σ_{n,c} ĥ_{n,i}² δ̂_{(n,c),j}² = [(E_H ⊗ E_Δ)ᵀ F_l (E_H ⊗ E_Δ)]_{(ij),(ij)}.
The ρ → 0⁺ limit exists for fitted scales: s_ij = 0 forces ĥ_{·,i}δ̂_{·,j} = 0 on every training
row, so such terms vanish for every ρ > 0 and are dropped (the pseudo-inverse) at ρ = 0.

Only the basis directions that carry training data matter: for the Gram-based methods they are
the eigen-coordinates of K^H_l and K^Δ_l (:func:`gram_coordinates`), so nothing P-sized is formed.
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import _validate, linalg

#: Entries of the largest intermediate (row chunk × training rows × basis size) formed at once.
_CHUNK = 1 << 24


def expand_rows(features, c: int):
    """Sample-level rows (N, r) repeated for the C outputs: row n·C + c is row n."""
    return features if c == 1 else jnp.repeat(features, c, axis=0)


def gram_coordinates(K, K_cross):
    """(F, F_cross): coordinates of the training rows and of the cross rows in an orthonormal basis
    of the row space of the features behind K = ΦΦᵀ (K = F Fᵀ, F = eigvecs·√λ, numerically-zero
    eigenvalues dropped) and F_cross = K(x', X) eigvecs/√λ = the projection of Φ(x') on that basis."""
    F, inv = gram_basis(K)
    return F, K_cross @ inv


def gram_basis(K):
    """(F, V) with K = FFᵀ over the numerically non-zero eigenvalues and V = eigvecs/√λ: Φᵀ V is an
    orthonormal basis (in feature space) of the row space of Φ, for any Φ with ΦΦᵀ = K."""
    F, inv = linalg.gram_factor(K)
    if _validate.is_traced(F):  # under jit the kept count is unknown: dropped directions stay as zero columns
        return F, inv
    keep = jnp.any(F != 0, axis=0)
    return F[:, keep], inv[:, keep]


def diagonal_basis_direction(H, delta, left, right, h, d, s, ctx):
    """(G_l + ρ)⁻¹J̃_lᵀu/N for G_l diagonal (scales ``s`` (r_H, r_Δ)) in an orthonormal Kronecker basis.

    The basis restricted to the data is E_H = H̃ᵀ``left`` (d × r_H) and E_Δ = Δ̃ᵀ``right`` (M × r_Δ),
    Δ̃ the (N·k × M) flattened backward signals; ``h``/``d`` are the training rows' coordinates
    ĥ = H̃E_H expanded to rows (n, c) and δ̂ = Δ̃E_Δ. The gradient's coordinates are
    C = E_Hᵀ∇E_Δ = ĥᵀdiag(u)δ̂/N (it has none outside the data span), so

        ΔW̃ = E_H [C ⊘ (s + ρ)] E_Δᵀ = H̃ᵀ left [C ⊘ (s + ρ)] rightᵀ Δ̃,

    with s_ij = 0 dropped at ρ = 0 (the pseudo-inverse; those coordinates of C vanish too)."""
    n = ctx.n
    C = h.T @ (ctx.residual[:, None] * d) / n
    rcond = linalg.default_rcond(s.size, s.dtype) if ctx.rcond is None else ctx.rcond
    w = linalg.inverse_eigenvalues(s.reshape(-1), ctx.damping.value, rcond).reshape(s.shape)
    flat = delta.reshape(-1, delta.shape[-1])
    return H.T @ (left @ (C * w) @ right.T) @ flat


def fitted_scales(h, d, n: int):
    """s_ij = (1/N) Σ_rows h_{row,i}² d_{row,j}²: the true Fisher's diagonal in the basis (rows (n, c))."""
    return (h**2).T @ (d**2) / n


def diagonal_basis_kernel(h_cross, d_cross, h, d, s, damping, n: int, rcond=None):
    """(1/N) Σ_ij h'_{p,i} h_{q,i} d'_{p,j} d_{q,j} / (s_ij + ρ) (module docstring).

    ``h``/``d`` (rows, r_H)/(rows, r_Δ) on the training rows, ``h_cross``/``d_cross`` on the cross
    rows, ``s`` (r_H, r_Δ). At ρ = 0, |s_ij| ≤ rcond·max|s| counts as zero and its term is dropped
    (``rcond`` defaults to s.size · eps). Never forms the rows × (r_H·r_Δ) design matrix: costs
    O(rows'·rows·r_Δ·r_H) time and O(min(rows', chunk)·rows·max(r_H, r_Δ)) memory.
    """
    rcond = linalg.default_rcond(s.size, s.dtype) if rcond is None else rcond
    w = linalg.inverse_eigenvalues(s.reshape(-1), damping, rcond).reshape(s.shape)
    step = max(1, _CHUNK // max(1, h.shape[0] * max(d.shape[1], h.shape[1])))
    blocks = []
    for start in range(0, h_cross.shape[0], step):  # bounded memory: rows' chunks of the (p, q) pairs
        hc, dc = h_cross[start : start + step], d_cross[start : start + step]
        pairs = (dc[:, None, :] * d[None, :, :]).reshape(-1, d.shape[1])  # (p, q) × j
        weighted = (pairs @ w.T).reshape(hc.shape[0], h.shape[0], -1)  # Σ_j d'_pj d_qj w_ij
        blocks.append(jnp.einsum("pi,qi,pqi->pq", hc, h, weighted))
    return jnp.concatenate(blocks, axis=0) / n


def face_split(h, d):
    """Row-wise Kronecker product: row p is h_p ⊗ d_p (shape rows × r_H·r_Δ)."""
    return (h[:, :, None] * d[:, None, :]).reshape(h.shape[0], -1)
