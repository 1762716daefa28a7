"""KPSVD: the Frobenius-best sum of k Kronecker products per layer block (Koroko et al. 2022;
THEORY.md "Kronecker-basis approximations: KPSVD, EKFAC, diagonal Fisher"); rule "tikhonov".

Van Loan's rearrangement R maps A ⊗ B to vec(A)vec(B)ᵀ and is an isometry, so the best fit of
F_l = (1/N) Σ_n (h̃_nh̃_nᵀ) ⊗ S_n, S_n = Σ_c δ_{n,c}δ_{n,c}ᵀ, by Σ_{i≤k} σ_i A_i ⊗ B_i is the rank-k
truncated SVD of R(F_l) = U Vᵀ/N, U = [vec(h̃_nh̃_nᵀ)]_n, V = [vec(S_n)]_n. Both have N columns, with
Grams UᵀU = K^H ∘ K^H and (VᵀV)_nm = Σ_{c,c'} K^Δ[(n,c),(m,c')]², so with the SVD
(UᵀU)^{1/2}(VᵀV)^{1/2}/N = P Σ Wᵀ the singular vectors are U a_i, V b_i with a_i = (UᵀU)^{+1/2}P_i,
b_i = (VᵀV)^{+1/2}W_i, i.e.

    A_i = H̃ᵀ diag(a_i) H̃,   B_i = Δᵀ diag(b_i ⊗ 1_C) Δ,   ||A_i||_F = ||B_i||_F = 1.

Every A_i lives on span{h̃_n} and every B_i on span{δ_{n,c}}; in orthonormal coordinates of these
spans (F_H, F_Δ with K^H = F_HF_Hᵀ, K^Δ = F_ΔF_Δᵀ) the approximation restricted to the invariant
subspace is M = Σ_i σ_i Ã_i ⊗ B̃_i, Ã_i = F_Hᵀdiag(a_i)F_H, B̃_i = F_Δᵀdiag(b_i ⊗ 1_C)F_Δ (r_H·r_Δ square,
r ≤ N·C), it is 0 on the complement, and J_l's rows have coordinates z_{(n,c)} = F_H[n] ⊗ F_Δ[(n,c)]:

    Θ_l(x', X) = Z(x') (M + ρI)⁻¹ Z(X)ᵀ / N.

Damping: additive, G_l = Σ_i σ_i A_i ⊗ B_i + ρI for every k (ρ = 0: the pseudo-inverse of M,
the ρ → 0⁺ limit whenever Z(X)ᵀ ∈ range(M), e.g. k = 1 with positive Perron coefficients a, b).
For k = 1, M = σ Ã ⊗ B̃ is diagonal in the eigenbases of Ã, B̃ (:mod:`._kron`, s_ij = σ α_i β_j);
for k > 1 one eigendecomposition of M. Singular triplets with σ_i ≤ rcond·σ_1 are dropped (the
readout block is exactly A ⊗ I_C, so its rank-k fit is its rank-1 fit, the exact block).

Isotropy (ρ = 0): a hidden layer whose K^H_l has rank N and K^Δ_l rank N·C contributes
diag_n 1/(N Σ_i σ_i a_{i,n} b_{i,n}) (⊗ I_C): diagonal, isotropic only when Σ_i σ_i a_i ∘ b_i is
constant, e.g. for constant-row-sum Grams (then a, b ∝ 1 and the layer gives N·I, like K-FAC);
the readout gives I. Koroko et al.'s code: ``kpsvd`` is k = 1 with K-FAC-style factored damping
(A + √ρ)⊗(B + √ρ); ``deflation`` is k = 2, inverted with damping λ added to the first pair
only; ``kfac_cor`` is K-FAC's A⊗B plus the best Kronecker fit of F − A⊗B. Here the additive
damping makes every k the same Tikhonov-regularised natural gradient.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from .. import _validate, linalg
from ..factored import kpsvd as factored_kpsvd
from . import _conditions, _cost, _kron
from ._fitted import diagonal_verdict
from .base import Method, MethodKernel, Option, Prediction, register, test_kernel_or_none


def check_rank(rank) -> int:
    """The number k ≥ 1 of Kronecker terms."""
    return _validate.positive_int("kpsvd rank (number of Kronecker terms)", rank)


def sample_grams(fwd, bwd, n: int, c: int):
    """(UᵀU, VᵀV): Grams of the rearranged per-sample factors vec(h̃h̃ᵀ) and vec(Σ_c δδᵀ)."""
    G_U = fwd**2
    G_V = jnp.sum(jnp.reshape(bwd**2, (n, c, n, c)), axis=(1, 3))
    return G_U, G_V


def kronecker_svd(fwd, bwd, n: int, c: int, rank: int, rcond=None, core=None):
    """(σ (k,), a (k, N), b (k, N)): the top-k terms of R(F_l) = Σ σ_i vec(A_i)vec(B_i)ᵀ with
    A_i = Σ_n a_{i,n} h̃_nh̃_nᵀ, B_i = Σ_n b_{i,n} S_n (module docstring); k ≤ ``rank``.
    ``core`` (N×N, default I/N): fit U·core·Vᵀ instead of R(F_l) = U Vᵀ/N."""
    G_U, G_V = sample_grams(fwd, bwd, n, c)
    root_U, pinv_root_U = linalg.sqrt_and_pinv_sqrt(G_U, rcond)
    root_V, pinv_root_V = linalg.sqrt_and_pinv_sqrt(G_V, rcond)
    core = jnp.eye(n) / n if core is None else core
    P, sig, Wt = jnp.linalg.svd(root_U @ core @ root_V)
    cut = (linalg.default_rcond(n, sig.dtype) if rcond is None else rcond) * sig[0]
    # numerically-zero terms are dropped; under jit their number is unknown, so all ``rank`` are kept
    # (a term with σ ≈ 0 adds ≈ 0 to the fit)
    k = min(rank, n) if _validate.is_traced(sig) else max(1, min(rank, int(jnp.sum(sig > cut))))
    a = (pinv_root_U @ P[:, :k]).T
    b = (pinv_root_V @ Wt[:k].T).T
    sign = jnp.where(jnp.sum(a, axis=1) < 0, -1.0, 1.0)[:, None]  # (a, b) → (−a, −b) is the same term
    return sig[:k], a * sign, b * sign


#: a fit whose span has at most this many dimensions r_H·r_Δ keeps the dense (r_H·r_Δ)-square M at ρ = 0 (cheap
#: there, and the values of earlier releases stay bit-for-bit); larger ones use :meth:`LayerFit.congruence_basis`
DENSE_FIT_MAX = 1024


class LayerFit:
    """One layer's fitted Kronecker sum restricted to the data: the orthonormal data bases (F_H, V_H), (F_Δ, V_Δ)
    of K^H and K^Δ (:func:`._kron.gram_basis`) and the terms σ_i Ã_i ⊗ B̃_i in those coordinates."""

    def __init__(self, fwd, bwd, n, c, terms):
        sig, a, b = terms
        self.c, self.n = c, n
        self.Fh, self.Vh = _kron.gram_basis(fwd)
        self.Fd, self.Vd = _kron.gram_basis(bwd)
        self.sig = sig
        self._matrix = self._solved = self._eigenbasis = self._congruence = None
        self.A = [self.Fh.T @ (ai[:, None] * self.Fh) for ai in a]
        self.B = [self.Fd.T @ (_kron.expand_rows(bi, c)[:, None] * self.Fd) for bi in b]

    def congruence(self, rcond=None):
        """:meth:`congruence_basis`, computed once per fit (False: not applicable)."""
        if self._congruence is None:
            self._congruence = self.congruence_basis(rcond)
            self._congruence = False if self._congruence is None else self._congruence
        return self._congruence or None

    def solved_rows(self, ctx):
        """(M + ρ)⁻¹ Z(X)ᵀ at ``ctx``'s damping, computed once (a fit serves one context: :func:`fitted_kernel`)."""
        if self._solved is None:
            self._solved = _solved_rows(self, ctx)
        return self._solved

    @property
    def single(self) -> bool:
        return len(self.sig) == 1

    def eigenbasis(self):
        """(Pa, Pb, s): for one term, M = σÃ⊗B̃ is diagonal in the eigenbases of Ã and B̃, s_ij = σα_iβ_j
        (computed once per fit: the train and cross kernels share it)."""
        if self._eigenbasis is None:
            alpha, Pa = linalg.eigh_sym(self.A[0])
            beta, Pb = linalg.eigh_sym(self.B[0])
            self._eigenbasis = (Pa, Pb, alpha, beta)
        Pa, Pb, alpha, beta = self._eigenbasis
        return Pa, Pb, self.sig[0] * jnp.outer(alpha, beta)

    def eigenvalues(self):
        """(α, β): the eigenvalues of Ã and B̃ behind :meth:`eigenbasis` (one term)."""
        self.eigenbasis()
        return self._eigenbasis[2:]

    def congruence_basis(self, rcond=None):
        """Two terms, ρ = 0, span larger than :data:`DENSE_FIT_MAX`: (S_H, S_Δ, e) with
        M⁺ = (S_H ⊗ S_Δ) diag(e⁺) (S_H ⊗ S_Δ)ᵀ, or None (traced values, one term, a small span, Ã₁ or B̃₁ not
        positive definite). This is M's inverse whenever M is invertible; M's pseudo-inverse with the rank cut-off
        of :func:`linalg.solve` is reproduced when no eigenvalue of M is within the cut-off, which the bound
        cond(M) ≤ cond(Ã₁)·cond(B̃₁)·max|e|/min|e| < 1/(2·rcond) guarantees (a RuntimeWarning says when it fails).

        With Ã₁ = V_H Λ_H V_Hᵀ (positive definite on the data span, e.g. corrected K-FAC's A = H̃ᵀH̃/N and rank-2
        KPSVD's Perron term) and T_H = V_H Λ_H^{1/2}: T_H⁻¹Ã₂T_H⁻ᵀ = U_H Γ U_Hᵀ, likewise for B̃ (Δ, U_Δ), so
        M = σ₁Ã₁⊗B̃₁ + σ₂Ã₂⊗B̃₂ = (T_HU_H ⊗ T_ΔU_Δ) diag(e) (…)ᵀ with e_ij = σ₁ + σ₂γ_iδ_j, and
        S = T⁻ᵀU = VΛ^{−1/2}U. The kernel is then a diagonal-basis form in the coordinates F S (:mod:`._kron`):
        O(N²·r_H·r_Δ) time and no (r_H·r_Δ)-square matrix."""
        if len(self.sig) != 2 or _validate.is_traced(self.sig) or len(self.A[0]) * len(self.B[0]) <= DENSE_FIT_MAX:
            return None
        parts = [_congruence(self.A[0], self.A[1]), _congruence(self.B[0], self.B[1])]
        if any(p is None for p in parts):
            return None
        (S_H, gam, cond_H), (S_D, dlt, cond_D) = parts
        sig = np.asarray(self.sig, float)
        e = sig[0] + sig[1] * np.outer(gam, dlt)
        rcond = linalg.default_rcond(e.size) if rcond is None else rcond
        if cond_H * cond_D * np.max(np.abs(e)) / np.min(np.abs(e)) * rcond >= 0.5:
            warnings.warn(f"kpsvd/kfac_cor: the {e.size}-dimensional span's M may have eigenvalues below the rank "
                          "cut-off; its inverse is taken in the simultaneous eigenbasis (cut on e_ij), not as the "
                          "pseudo-inverse of M (too large to form)", RuntimeWarning, stacklevel=4)
        return S_H, S_D, jnp.asarray(e)

    def matrix(self):
        """M = Σ_i σ_i Ã_i ⊗ B̃_i ((r_H·r_Δ)-square), built once per fit (the train and cross kernels share it)."""
        if self._matrix is None:
            self._matrix = self._build_matrix()
        return self._matrix

    def _build_matrix(self):
        A, B = jnp.stack(self.A), jnp.stack(self.B)  # one contraction: iterating σ (a jax array) is eager, ~40 ms a term
        ra, rb = A.shape[1], B.shape[1]
        return jnp.einsum("i,iab,icd->acbd", self.sig, A, B).reshape(ra * rb, ra * rb)


def _congruence(first, second):
    """(S, γ, cond(first)) with Sᵀ first S = I and Sᵀ second S = diag(γ) (host), or None if ``first`` is not
    positive definite."""
    lam, V = np.linalg.eigh(0.5 * (np.asarray(first) + np.asarray(first).T))
    if lam.size == 0 or lam[0] <= 0:
        return None
    T_inv = V / np.sqrt(lam)  # V Λ^{-1/2}: T⁻ᵀ for T = VΛ^{1/2}
    gam, U = np.linalg.eigh(0.5 * (T_inv.T @ np.asarray(second) @ T_inv + (T_inv.T @ np.asarray(second) @ T_inv).T))
    return jnp.asarray(T_inv @ U), gam, lam[-1] / lam[0]


def layer_kernel(fit: LayerFit, fwd_cross, bwd_cross, ctx):
    """Θ_l(x', X) = Z(x')(M + ρ)⁻¹Z(X)ᵀ/N with Z the rows' coordinates (module docstring); ``fwd_cross`` None:
    the training rows themselves (their own coordinates F_H, F_Δ: a symmetric form)."""
    c, n = fit.c, ctx.n
    if fwd_cross is None:
        Fh_cross, Fd_cross = fit.Fh, fit.Fd
    else:
        Fh_cross, Fd_cross = fwd_cross @ fit.Vh, bwd_cross @ fit.Vd
    if fit.single:
        Pa, Pb, s = fit.eigenbasis()
        h, d = _kron.expand_rows(fit.Fh @ Pa, c), fit.Fd @ Pb
        h_cross, d_cross = (h, d) if fwd_cross is None else (_kron.expand_rows(Fh_cross @ Pa, c), Fd_cross @ Pb)
        if not ctx.damping.positive:  # ρ = 0: separable scales, O(N³) (None: not applicable here)
            fast = _kron.rank_one_scales_kernel(h_cross, d_cross, h, d, fit.sig[0], *fit.eigenvalues(), n, ctx.rcond)
            if fast is not None:
                return fast
        return _kron.diagonal_basis_kernel(h_cross, d_cross, h, d, s, ctx.damping.value, n, ctx.rcond)
    basis = None if ctx.damping.positive else fit.congruence(ctx.rcond)
    if basis is not None:  # two terms at ρ = 0: diagonal in a (non-orthogonal) Kronecker basis
        S_H, S_D, e = basis
        h, d = _kron.expand_rows(fit.Fh @ S_H, c), fit.Fd @ S_D
        h_cross, d_cross = (h, d) if fwd_cross is None else (_kron.expand_rows(Fh_cross @ S_H, c), Fd_cross @ S_D)
        return _kron.diagonal_basis_kernel(h_cross, d_cross, h, d, e, 0.0, n, ctx.rcond)
    Z_cross = _kron.face_split(_kron.expand_rows(Fh_cross, c), Fd_cross)
    return Z_cross @ fit.solved_rows(ctx) / n


def _solved_rows(fit: LayerFit, ctx):
    """(M + ρ)⁻¹ Z(X)ᵀ: one eigendecomposition of M shared by the train and the cross kernels."""
    Z = _kron.face_split(_kron.expand_rows(fit.Fh, fit.c), fit.Fd)
    return linalg.solve(fit.matrix(), Z.T, ctx.damping.value, ctx.rcond)


def layer_direction(fit: LayerFit, H, delta, ctx):
    """(G_l + ρ)⁻¹J̃_lᵀu/N: in the data coordinates C = ĥᵀdiag(u)δ̂/N, X = (M + ρ)⁻¹vec(C), ΔW̃ = H̃ᵀV_H X V_ΔᵀΔ̃."""
    c = fit.c
    if fit.single:
        Pa, Pb, s = fit.eigenbasis()
        h = _kron.expand_rows(fit.Fh @ Pa, c)
        return _kron.diagonal_basis_direction(H, delta, fit.Vh @ Pa, fit.Vd @ Pb, h, fit.Fd @ Pb, s, ctx)
    h = _kron.expand_rows(fit.Fh, c)
    C = h.T @ (ctx.residual[:, None] * fit.Fd) / ctx.n
    X = linalg.solve(fit.matrix(), C.reshape(-1), ctx.damping.value, ctx.rcond).reshape(C.shape)
    return H.T @ (fit.Vh @ X @ fit.Vd.T) @ delta.reshape(-1, delta.shape[-1])


def fitted_kernel(train, test, ctx, terms_of) -> MethodKernel:
    """Σ_l Θ_l for per-layer terms ``terms_of(fwd, bwd, n, c)`` (kpsvd, kfac_cor)."""
    c = train.n_outputs_per_sample
    fits = [LayerFit(train.fwd[l], train.bwd[l], ctx.n, c, terms_of(train.fwd[l], train.bwd[l], ctx.n, c))
            for l in range(train.depth)]

    def total(cross):
        return sum(layer_kernel(f, cross.fwd[l], cross.bwd[l], ctx) for l, f in enumerate(fits))

    return MethodKernel(sum(layer_kernel(f, None, None, ctx) for f in fits), test_kernel_or_none(test, total))


def fitted_direction(train, ctx, terms_of) -> list:
    out = []
    for H, delta in zip(train.inputs, train.deltas):
        c = delta.shape[1]
        flat = delta.reshape(-1, delta.shape[-1])
        fwd, bwd = H @ H.T, flat @ flat.T
        fit = LayerFit(fwd, bwd, ctx.n, c, terms_of(fwd, bwd, ctx.n, c))
        out.append(layer_direction(fit, H, delta, ctx))
    return out


def span_metric(terms_of):
    """The metric between any rows (continual learning, ρ > 0) of the fitted Kronecker sums ``terms_of(ctx)``:
    the fit restricted to task B's data span (:class:`._kron.SpanLayer`; one term: diagonal in its eigenbasis)."""

    def layers(lk, n_b, ctx):
        c = lk.n_outputs_per_sample
        out = []
        for l in range(lk.depth):
            fwd, bwd = lk.fwd[l][:n_b, :n_b], lk.bwd[l][: n_b * c, : n_b * c]
            fit = LayerFit(fwd, bwd, ctx.n, c, terms_of(ctx)(fwd, bwd, ctx.n, c))
            if fit.single:
                Pa, Pb, s = fit.eigenbasis()
                out.append(_kron.SpanLayer(lk, l, n_b, fit.Vh @ Pa, fit.Vd @ Pb, scales=s))
            else:
                out.append(_kron.SpanLayer(lk, l, n_b, fit.Vh, fit.Vd, matrix=fit.matrix()))
        return out

    return _kron.span_metric(layers)


def fitted_cost(n_terms):
    """The declared cost of a fitted Kronecker sum of ``n_terms(options)`` terms per layer (kpsvd, kfac_cor).

    Per layer: the rearranged SVD (two eigendecompositions and an SVD of order N), the data bases (K^H_l: N,
    K^Δ_l: R) and the terms in them; then one term: eigendecompositions of Ã (r_H) and B̃ (r_Δ) and the
    diagonal-basis kernel/update; several: the (r_H·r_Δ)-square M = Σ σ_i Ã_i⊗B̃_i and one eigendecomposition
    of it — 9(r_H·r_Δ)³, the term that makes kfac_cor (two terms) the costliest method (r_H·r_Δ = N·R in an
    update)."""

    def layer(n, r, d, m, rh, rd, k, jitted):
        fit = 2 * _cost.eigh(n) + _cost.svd(n, n) + _cost.eigh(n) + _cost.eigh(r)
        fit += k * (_cost.matmul(rh, n, rh) + _cost.matmul(rd, r, rd))
        if k == 1:
            basis = _cost.eigh(rh) + _cost.eigh(rd)
            tail = (_cost.diagonal_basis_update(n, r, d, m, rh, rd) if jitted
                    else _cost.diagonal_basis_kernel(r, rh, rd))
            return fit + basis + tail
        q = rh * rd
        solve = _cost.eigh(q) + (2 * _cost.matmul(q, q, 1) if jitted else 2 * _cost.matmul(q, q, r)
                                 + _cost.matmul(r, q, r))
        return fit + 2 * k * q * q + solve + (_cost.diagonal_basis_update(n, r, d, m, rh, rd) if jitted else 0.0)

    def cost(size, options) -> _cost.Cost:
        k = n_terms(options)

        def total(jitted):
            return sum(layer(size.n, size.rows, d, m, rh, rd, k, jitted)
                       for (d, m), (rh, rd) in zip(size.layers, size.ranks(jitted)))

        return _cost.Cost(_cost.features(size) + total(False), _cost.features(size) + total(True))

    return cost


def _terms(ctx):
    rank = ctx.option("rank")
    return lambda fwd, bwd, n, c: kronecker_svd(fwd, bwd, n, c, rank, ctx.rcond)


def kernel(train, test, ctx) -> MethodKernel:
    return fitted_kernel(train, test, ctx, _terms(ctx))


def direction(train, ctx) -> list:
    return fitted_direction(train, ctx, _terms(ctx))


def kpsvd_weights(fwd, bwd, n: int, c: int, rank: int = 1) -> np.ndarray:
    """w_n = Σ_{i≤k} σ_i a_{i,n} b_{i,n} of layer blocks Σ σ_i A_i⊗B_i, A_i = Σ_n a_{i,n}h̃_nh̃_nᵀ,
    B_i = Σ_n b_{i,n}Σ_cδ_{n,c}δ_{n,c}ᵀ (||A_i||_F = ||B_i||_F = 1).

    From the singular-vector equations of R(F_l) = UVᵀ/N (G_U = UᵀU = K^H∘K^H, G_V = VᵀV):
    G_U a = Nσ b and G_V b = Nσ a, so a is an eigenvector of the non-symmetric G_V G_U with eigenvalue
    N²σ² (numpy ``eig``; the method itself uses an SVD of G_U^{1/2}G_V^{1/2}), aᵀG_Ua = 1, b = G_Ua/(Nσ).
    """
    fwd, bwd = np.asarray(fwd, float), np.asarray(bwd, float)
    G_U = fwd**2
    G_V = np.sum((bwd**2).reshape(n, c, n, c), axis=(1, 3))
    lam, vecs = np.linalg.eig(G_V @ G_U)
    order = np.argsort(-lam.real)
    w = np.zeros(n)
    for i in order[:rank]:
        if lam.real[i] <= n * np.finfo(float).eps * lam.real[order[0]]:
            break
        a = vecs[:, i].real
        a = a / np.sqrt(a @ G_U @ a)
        sigma = np.sqrt(lam.real[i]) / n
        w += sigma * a * (G_U @ a) / (n * sigma)
    return w


def predict(lk, ctx):
    """Hidden layer with rank K^H = N, rank K^Δ = N·k: diag(1/(N w)) (⊗ I_k); readout: I (full-rank K^H_L).
    Isotropic iff the predicted diagonal is constant (e.g. constant-row-sum Grams)."""
    rank = ctx.option("rank")
    L = lk.depth
    n, rows = lk.fwd.shape[1], lk.ntk.shape[1]
    c = rows // n
    cond = [*_conditions.input_grams_full_rank(lk, ctx.rcond), *_conditions.backward_grams_full_rank(lk, ctx.rcond),
            _conditions.undamped(ctx.damping)]
    if not all(x.holds for x in cond):
        return Prediction("kpsvd", None, False, tuple(cond))
    hidden = [kpsvd_weights(lk.fwd[l], lk.bwd[l], n, c, rank) for l in range(L - 1)]
    diag = 1.0 + sum(np.repeat(1.0 / (n * w), c) for w in hidden) if hidden else np.ones(rows)
    what = "hidden layers contribute diag(1/(N Σσ a∘b))" if hidden else "readout only: exact block"
    return diagonal_verdict("kpsvd", float(np.mean(diag)), diag, cond, True, what, diagonal_kernel=True)


OPTIONS = (Option("rank", 1, lambda v, _: check_rank(v), "number k of Kronecker terms per layer"),)

KPSVD = register(Method("kpsvd", "KPSVD: best Frobenius fit Σ_{i≤rank} σ_i A_i⊗B_i per layer, + ρI (rank=)", kernel,
                        direction, predict, damping_rule="tikhonov", options=OPTIONS, metric=span_metric(_terms),
                        cost=fitted_cost(lambda options: int(options.get("rank", 1))),
                        factored=factored_kpsvd.KPSVD))
