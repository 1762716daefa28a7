"""Explicit Kronecker fits of one layer block F_l = J̃_lᵀJ̃_l/N (K-FAC, KPSVD, EKFAC, diagonal, corrected K-FAC).

Layer l's parameter (i, j) is row i of W̃_l (input h̃_i), column j (unit j); flat index i·m + j with
d = fan_in + bias, m = fan_out. Since J̃_l row (n, r) = h̃_n ⊗ δ̃_{n,r} (:mod:`.problem`),

    F_l = (1/N) Σ_n (h̃_nh̃_nᵀ) ⊗ S_n,   S_n = Σ_r δ̃_{n,r}δ̃_{n,r}ᵀ   (cross-entropy: S_n = Δ_nᵀΛ_nΔ_n).

* K-FAC: A_l = (1/N) Σ_n h̃_nh̃_nᵀ, B_l = (1/(N s_l)) Σ_n S_n, s_L = N for the readout with
  ``kfac_readout="paper"``, else 1 (:func:`factors`).
* KPSVD: Van Loan's rearrangement R(A ⊗ B) = vec(A)vec(B)ᵀ is an isometry, so the best Frobenius
  fit Σ_{i≤k} σ_iA_i ⊗ B_i is the rank-k truncated SVD of R(F_l) (:func:`kpsvd_terms`).
* EKFAC: U = U_A ⊗ U_B (eigenvectors of K-FAC's factors), G_l = U diag(s) Uᵀ, s = diag(UᵀF_lU).
* diagonal: diag(F_l). Corrected K-FAC: A ⊗ B + the best Kronecker fit of F_l − A ⊗ B.
"""
from __future__ import annotations

import numpy as np

from .. import _validate
from .problem import build
from .solves import EPS

KFAC_READOUTS = ("common", "paper")
#: Methods whose layer block is fitted to the explicit F_l (:func:`kron_fit`).
KRON_METHODS = ("kpsvd", "ekfac", "diag", "kfac_cor")


def rearrange(F_block: np.ndarray, d: int, m: int) -> np.ndarray:
    """Van Loan's rearrangement R(F) (d² × m²) of a (d·m)² block: R(A ⊗ B) = vec(A) vec(B)ᵀ.

    Entry F[i·m + j, i'·m + j'] (parameter (i, j) = row i of W̃, column j) goes to R[(i, i'), (j, j')].
    """
    return F_block.reshape(d, m, d, m).transpose(0, 2, 1, 3).reshape(d * d, m * m)


def kpsvd_terms(F_block: np.ndarray, d: int, m: int, rank: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """[(σ_i, A_i, B_i)]: the top-``rank`` terms of the explicit SVD of R(F) (||A_i||_F = ||B_i||_F = 1);
    singular values ≤ max(d², m²)·eps·σ_1 are dropped (numerically zero terms)."""
    U, sig, Vt = np.linalg.svd(rearrange(F_block, d, m), full_matrices=False)
    keep = max(1, min(rank, int(np.sum(sig > max(d * d, m * m) * EPS * sig[0]))))
    return [(float(sig[i]), U[:, i].reshape(d, d), Vt[i].reshape(m, m)) for i in range(keep)]


def ekfac_basis(A: np.ndarray, B: np.ndarray, F_block: np.ndarray):
    """(U = kron(U_A, U_B), s = diag(Uᵀ F U)): EKFAC's basis and its Fisher-fitted eigenvalues."""
    U = np.kron(np.linalg.eigh(A)[1], np.linalg.eigh(B)[1])
    return U, np.einsum("pi,pq,qi->i", U, F_block, U)


def _kronecker_sum(terms) -> np.ndarray:
    G = sum(sig * np.kron(A, B) for sig, A, B in terms)
    return (G + G.T) / 2


def kron_fit(method: str, F_block: np.ndarray, d: int, m: int, rank: int = 1, factors=None) -> np.ndarray:
    """The undamped approximation of one explicit layer block F_l (d·m square) for ``method`` in
    :data:`KRON_METHODS`; ``factors`` = (A_l, B_l), K-FAC's factors, for ``ekfac`` and ``kfac_cor``."""
    _validate.choice("Kronecker-fit method", method, KRON_METHODS)
    if method == "diag":
        return np.diag(np.diag(F_block))
    if method == "ekfac":
        U, s = ekfac_basis(*factors, F_block)
        return (U * s) @ U.T
    if method == "kfac_cor":  # K-FAC's A⊗B + the explicit best Kronecker fit of the remainder
        KF = np.kron(*factors)
        return _kronecker_sum([(1.0, *factors), *kpsvd_terms(F_block - KF, d, m, 1)])
    return _kronecker_sum(kpsvd_terms(F_block, d, m, rank))


def factors(inputs, deltas, kfac_readout: str = "common") -> list[tuple[np.ndarray, np.ndarray]]:
    """K-FAC factors per layer from the signals h̃ (N, d_l) and (whitened) δ̃ (N, k, m_l):
    A_l = H̃ᵀH̃/N, B_l = Σ_{n,r} δ̃δ̃ᵀ/(N s_l) (undamped; module docstring)."""
    _validate.choice("kfac_readout", kfac_readout, KFAC_READOUTS)
    n, depth = inputs[0].shape[0], len(inputs)
    out = []
    for l, (H, D) in enumerate(zip(inputs, deltas)):
        Dm = D.reshape(-1, D.shape[-1])
        scale = n if (kfac_readout == "paper" and l == depth - 1) else 1
        out.append((H.T @ H / n, Dm.T @ Dm / (n * scale)))
    return out


def kfac_factors(net, params, X, kfac_readout: str = "common", loss: str = "mse", outputs=None):
    """K-FAC factors (A_l, B_l) per layer at ``params`` (cross-entropy: whitened at the logits ``outputs``)."""
    p = build(net, params, X, loss, outputs=outputs)
    return factors(p.inputs, p.deltas, kfac_readout)


def layer_blocks(J: np.ndarray, slices, n: int) -> list[np.ndarray]:
    """F_l = J̃_lᵀJ̃_l/N for each layer slice."""
    return [J[:, sl].T @ J[:, sl] / n for sl in slices]


def layer_fisher_blocks(net, params, X, loss: str = "mse", outputs=None) -> list[np.ndarray]:
    """The exact per-layer Fisher blocks F_l = J̃_lᵀJ̃_l/N from the explicit (whitened) Jacobian."""
    p = build(net, params, X, loss, outputs=outputs)
    return layer_blocks(p.J, p.slices, p.n)


__all__ = ["KFAC_READOUTS", "KRON_METHODS", "ekfac_basis", "factors", "kfac_factors", "kpsvd_terms", "kron_fit",
           "layer_blocks", "layer_fisher_blocks", "rearrange"]
