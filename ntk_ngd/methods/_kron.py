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

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate, linalg


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
    O(rows'·rows·r_Δ·r_H) time and O(rows·max(r_H, r_Δ)) memory (:func:`diagonal_basis_form`).
    """
    rcond = linalg.default_rcond(s.size, s.dtype) if rcond is None else rcond
    return diagonal_basis_form(h_cross, d_cross, h, d, linalg.inverse_eigenvalues(s.reshape(-1), damping, rcond)
                               .reshape(s.shape), n)


def rank_one_scales_kernel(h_cross, d_cross, h, d, sigma, alpha, beta, n: int, rcond=None):
    """:func:`diagonal_basis_kernel` at ρ = 0 for rank-one scales s_ij = σα_iβ_j with σ, α, β > 0 (rank-1 KPSVD),
    in O(rows'·rows·(r_H + r_Δ)) instead of O(rows'·rows·r_H·r_Δ); None where it does not apply (traced values,
    a non-positive factor, or a cut-off pattern that is not a staircase), and the caller takes the general form.

    The kept terms s_ij > rcond·max s (the same cut as :func:`diagonal_basis_kernel`) are, for each i, the
    β_j above a threshold: in β-ascending order row i keeps a suffix j ≥ J(i). With the suffix sums
    D_J = Σ_{j≥J} d'_j d_jᵀ/β_j and the groups g_J = {i : J(i) = J},

        Θ = (1/(Nσ)) Σ_J [Σ_{i∈g_J} h'_i h_iᵀ/α_i] ⊙ D_J,

    one group (nothing cut) giving (h'diag(1/α)hᵀ) ⊙ (d'diag(1/β)dᵀ)/(Nσ), a Hadamard product of two Grams."""
    s = sigma * jnp.outer(alpha, beta)
    if _validate.is_traced(s):
        return None
    a, b, sig = np.asarray(alpha), np.asarray(beta), float(sigma)
    if not (sig > 0 and np.all(a > 0) and np.all(b > 0)):
        return None
    rcond = linalg.default_rcond(s.size, s.dtype) if rcond is None else rcond
    s = np.asarray(s)
    order = np.argsort(b, kind="stable")
    kept = (np.abs(s) > rcond * np.max(np.abs(s)))[:, order]
    start = np.sum(~kept, axis=1)
    if not np.array_equal(kept, np.arange(b.size)[None, :] >= start[:, None]):
        return None
    d_s, dc_s, b_s = d[:, order], d_cross[:, order], jnp.asarray(b[order])
    out, D, done = jnp.zeros((h_cross.shape[0], h.shape[0]), s.dtype), 0.0, b.size
    for J in sorted(set(start.tolist()), reverse=True):  # suffix sums grow as J decreases
        if J == b.size:  # rows with every term cut
            continue
        D = D + (dc_s[:, J:done] / b_s[J:done]) @ d_s[:, J:done].T
        done = J
        g = np.nonzero(start == J)[0]
        out = out + ((h_cross[:, g] / jnp.asarray(a[g])) @ h[:, g].T) * D
    return out / (n * sig)


def diagonal_basis_form(h_cross, d_cross, h, d, w, n: int):
    """(1/N) Σ_ij h'_{p,i} h_{q,i} d'_{p,j} d_{q,j} w_ij for given weights w (r_H, r_Δ).

    Row p is a product of two GEMMs' worth of work, Θ[p, q] = Σ_i h_{q,i} [(d diag(d'_p)) (wᵀ diag(h'_p))]_{q,i}:
    2·rows·r_Δ·r_H flops per row at matrix-multiply speed, O(rows·max(r_H, r_Δ)) memory, rows in blocks
    (:func:`_form_rows`, compiled once per block shape). When the cross rows are the training rows
    (``h_cross is h`` and ``d_cross is d``) the form is symmetric and only the blocks on or above the diagonal
    are computed (half the work). For generic w this O(rows'·rows·r_H·r_Δ) cost is the form's own: it is a
    bilinear form (h'_p ∘ h_q)ᵀ w (d'_p ∘ d_q) for every pair (p, q) with an unstructured r_H × r_Δ matrix w."""
    symmetric = h_cross is h and d_cross is d
    rows, step = h_cross.shape[0], _ROW_BLOCK
    if not symmetric:
        return jnp.concatenate([_form_rows(h_cross[a : a + step], d_cross[a : a + step], h, d, w)
                                for a in range(0, rows, step)], axis=0) / n
    out = jnp.zeros((rows, rows), w.dtype)
    for a in range(0, rows, step):  # block row a: columns a.. (the blocks left of the diagonal come by symmetry)
        out = out.at[a : a + step, a:].set(_form_rows(h[a : a + step], d[a : a + step], h[a:], d[a:], w))
    block = np.arange(rows) // step
    return jnp.where(block[:, None] > block[None, :], out.T, out) / n


#: rows of the cross kernel per compiled block of :func:`diagonal_basis_form`
_ROW_BLOCK = 128


@jax.jit
def _form_rows(h_cross, d_cross, h, d, w):
    """Rows p of Σ_ij h'_{p,i} h_{q,i} d'_{p,j} d_{q,j} w_ij, one row at a time (two GEMM operands per row)."""

    def one(row):
        hp, dp = row
        return jnp.sum(((d * dp) @ (w.T * hp)) * h, axis=1)

    return jax.lax.map(one, (h_cross, d_cross))


class SpanLayer:
    """One layer's approximation G_l restricted to the span of task B's data, for continual learning
    (:mod:`._metric`). G_l acts on span{h̃_B} ⊗ span{δ_B}, with orthonormal bases E_H = H̃_Bᵀ``left``,
    E_Δ = Δ_Bᵀ``right``, as the diagonal ``scales`` s (r_H, r_Δ) or the ``matrix`` (r_H·r_Δ square) in
    those coordinates, and is 0 on the complement. The coordinates of any row are ĥ = K^H(·, B)``left``,
    δ̂ = K^Δ(·, B)``right``, so with Z the coordinates of the rows R (Θ_l = J_lJ_lᵀ over R, ρ > 0):

        J_X(G_l + ρ)⁻¹J_Yᵀ/N = Z_X(S + ρ)⁻¹Z_Yᵀ/N + (Θ_l − Z Zᵀ)_XY/(Nρ),
        J_X(G_l + ρ)J_Yᵀ/N   = Z_X S Z_Yᵀ/N + ρΘ_l,XY/N,
        (G_l + ρ)⁻¹J_Rᵀw     = E_H[X − C/ρ]E_Δᵀ + J_Rᵀw/ρ,   C = ĥᵀdiag(w)δ̂,  X = (S + ρ)⁻¹C,

    the last term the null space's 1/ρ (rows outside B's span carry it)."""

    def __init__(self, lk, l: int, n_b: int, left, right, scales=None, matrix=None):
        c = lk.n_outputs_per_sample
        self.h = expand_rows(lk.fwd[l][:, :n_b] @ left, c)
        self.d = lk.bwd[l][:, : n_b * c] @ right
        self.left, self.right, self.scales, self.matrix = left, right, scales, matrix
        self.theta = lk.ntk[l]
        self.n_b, self.l = n_b, l

    def _span(self, diagonal, dense):
        """Z_R S' Z_Rᵀ for S' = diagonal(s) (diagonal scales) or dense(Z) (a matrix on the span)."""
        if self.scales is not None:
            return diagonal_basis_form(self.h, self.d, self.h, self.d, diagonal(self.scales), 1)
        return dense(face_split(self.h, self.d))

    def inverse(self, ctx):
        rho = ctx.damping.value
        span = self._span(lambda s: 1.0 / (s + rho), lambda Z: linalg.solve_right(Z, self.matrix, rho) @ Z.T)
        projector = (self.h @ self.h.T) * (self.d @ self.d.T)
        return span / ctx.n + (self.theta - projector) / (ctx.n * rho)

    def forward(self, ctx):
        span = self._span(lambda s: s, lambda Z: Z @ self.matrix @ Z.T)
        return span / ctx.n + ctx.damping.value * self.theta / ctx.n

    def direction(self, lk, ctx, w):
        rho = ctx.damping.value
        H, delta = lk.inputs[self.l], lk.deltas[self.l]
        C = self.h.T @ (w[:, None] * self.d)
        if self.scales is not None:
            X = C / (self.scales + rho)
        else:
            X = linalg.solve(self.matrix, C.reshape(-1), rho, None).reshape(C.shape)
        k = delta.shape[1]
        inside = H[: self.n_b].T @ (self.left @ (X - C / rho) @ self.right.T) @ delta[: self.n_b].reshape(self.n_b * k, -1)
        return inside + linalg.jt(H, delta, w) / rho


def span_metric(layers_of):
    """The :class:`._metric.Metric` of a layer-block-diagonal approximation given by
    ``layers_of(lk, n_b, ctx) -> [SpanLayer]`` (EKFAC, KPSVD, corrected K-FAC)."""
    from ._metric import Metric

    def inverse(lk, n_b, ctx):
        return sum(layer.inverse(ctx) for layer in layers_of(lk, n_b, ctx))

    def forward(lk, n_b, ctx):
        return sum(layer.forward(ctx) for layer in layers_of(lk, n_b, ctx))

    def direction(lk, n_b, ctx, w):
        return [layer.direction(lk, ctx, w) for layer in layers_of(lk, n_b, ctx)]

    return Metric(inverse, forward, direction)


def face_split(h, d):
    """Row-wise Kronecker product: row p is h_p ⊗ d_p (shape rows × r_H·r_Δ)."""
    return (h[:, :, None] * d[:, None, :]).reshape(h.shape[0], -1)
