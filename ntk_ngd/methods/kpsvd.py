"""KPSVD: the Frobenius-best sum of k Kronecker products per layer block (Koroko et al. 2022;
THEORY.md "Kronecker-basis approximations: KPSVD, EKFAC, diagonal Fisher").

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

import jax.numpy as jnp

from .. import _validate
from . import _kron, _linalg
from .base import Method, MethodKernel, register, test_kernel_or_none


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
    root_U, pinv_root_U = _linalg.psd_sqrt_and_pinv_sqrt(G_U, rcond)
    root_V, pinv_root_V = _linalg.psd_sqrt_and_pinv_sqrt(G_V, rcond)
    core = jnp.eye(n) / n if core is None else core
    P, sig, Wt = jnp.linalg.svd(root_U @ core @ root_V)
    cut = (_linalg.default_rcond(n, sig.dtype) if rcond is None else rcond) * sig[0]
    k = max(1, min(rank, int(jnp.sum(sig > cut))))
    a = (pinv_root_U @ P[:, :k]).T
    b = (pinv_root_V @ Wt[:k].T).T
    sign = jnp.where(jnp.sum(a, axis=1) < 0, -1.0, 1.0)[:, None]  # (a, b) → (−a, −b) is the same term
    return sig[:k], a * sign, b * sign


def corrected_kfac_terms(fwd, bwd, n: int, c: int, rcond=None):
    """Koroko et al.'s ``kfac_cor``: K-FAC's A⊗B (a = b = 1/N: A = H̃ᵀH̃/N, B = Σ_n S_n/N) plus the best
    Kronecker fit σ C⊗D of the remainder F_l − A⊗B, whose rearrangement is U(I/N − 11ᵀ/N²)Vᵀ."""
    ones = jnp.ones((1, n)) / n
    sig, a, b = kronecker_svd(fwd, bwd, n, c, 1, rcond, core=jnp.eye(n) / n - ones.T @ ones)
    return jnp.concatenate([jnp.ones(1), sig]), jnp.concatenate([ones, a]), jnp.concatenate([ones, b])


def _layer_term(fwd_cross, bwd_cross, fwd, bwd, n, c, rank, damping, rcond, corrected=False):
    sig, a, b = (corrected_kfac_terms(fwd, bwd, n, c, rcond) if corrected
                 else kronecker_svd(fwd, bwd, n, c, rank, rcond))
    Fh, Fh_cross = _kron.gram_coordinates(fwd, fwd_cross)
    Fd, Fd_cross = _kron.gram_coordinates(bwd, bwd_cross)
    A = [Fh.T @ (ai[:, None] * Fh) for ai in a]
    B = [Fd.T @ (_kron.expand_rows(bi, c)[:, None] * Fd) for bi in b]
    if len(sig) == 1:
        alpha, Pa = _linalg.eigh_psd(A[0])
        beta, Pb = _linalg.eigh_psd(B[0])
        s = sig[0] * jnp.outer(alpha, beta)
        h, h_cross = _kron.expand_rows(Fh @ Pa, c), _kron.expand_rows(Fh_cross @ Pa, c)
        return _kron.diagonal_basis_kernel(h_cross, Fd_cross @ Pb, h, Fd @ Pb, s, damping, n, rcond)
    M = sum(si * jnp.kron(Ai, Bi) for si, Ai, Bi in zip(sig, A, B))
    Z = _kron.face_split(_kron.expand_rows(Fh, c), Fd)
    Z_cross = _kron.face_split(_kron.expand_rows(Fh_cross, c), Fd_cross)
    return _linalg.damped_solve_right(Z_cross, M, damping, rcond) @ Z.T / n


def kpsvd_kernel(train, test, *, n, damping, rank=1, rcond=None, corrected=False, **_) -> MethodKernel:
    rank = check_rank(rank)
    c = train.n_outputs_per_sample

    def total(cross):
        return sum(_layer_term(cross.fwd[l], cross.bwd[l], train.fwd[l], train.bwd[l], n, c, rank, damping, rcond,
                               corrected) for l in range(train.depth))

    return MethodKernel(total(train), test_kernel_or_none(test, total))


def kfac_cor_kernel(train, test, *, n, damping, rcond=None, **_) -> MethodKernel:
    """Θ_G of K-FAC + the best Kronecker fit of its remainder, per layer, + ρI (Koroko et al.)."""
    return kpsvd_kernel(train, test, n=n, damping=damping, rcond=rcond, corrected=True)


KPSVD = register(
    Method("kpsvd", kpsvd_kernel, "KPSVD: best Frobenius fit Σ_{i≤rank} σ_i A_i⊗B_i per layer, + ρI (rank=)",
           options=("rank",))
)


KFAC_COR = register(
    Method("kfac_cor", kfac_cor_kernel, "corrected K-FAC (Koroko et al.): A⊗B + best Kronecker fit of F − A⊗B, + ρI")
)
