r"""How far each factored approximation is from the exact layer block F_l of the Fisher, from per-sample features only
(THEORY.md "Factored form (parameter space)"; the KPSVD paper's approximation claim).

With h̃_n (d) the scaled layer input and D_n (k × m) its whitened backward signals (:mod:`.features`),
F = (1/N) Σ_n (h̃_nh̃_nᵀ) ⊗ S_n, S_n = D_nᵀD_n. Two N × N Grams carry every inner product needed:

    P_{nn'} = (h̃_nᵀh̃_{n'})² = ⟨h̃_nh̃_nᵀ, h̃_{n'}h̃_{n'}ᵀ⟩,   Q_{nn'} = ⟨S_n, S_{n'}⟩,   ||F||² = 1ᵀ(P∘Q)1/N².

The rearrangement R(F) = (1/N) Σ_n vec(h̃_nh̃_nᵀ) vec(S_n)ᵀ = (1/N) 𝒫𝒬ᵀ has the squared singular values of
(1/N²) P^{1/2} Q P^{1/2} (the eigenvalues of (1/N²) PQ), so, with relative error e = ||F − F̂||_F / ||F||_F:

* K-FAC, F̂ = A ⊗ G (A = Σ h̃h̃ᵀ/N, G = Σ S_n/N): ||F − F̂||² = ||F||² − 2⟨F, A⊗G⟩ + ||A||²||G||²,
  ⟨F, A⊗G⟩ = (1/N) Σ_n (h̃_nᵀAh̃_n)⟨S_n, G⟩.
* KPSVD rank k (best sum of k Kronecker products, Van Loan–Pitsianis): ||F||² − Σ_{i≤k} σ_i².
* K-FAC-corrected (A ⊗ G plus the best Kronecker product of the remainder): R(F − A⊗G) = (1/N) 𝒫 C 𝒬ᵀ with the
  centring C = I − 11ᵀ/N, so ||F − F̂||² = ||F − A⊗G||² − σ₁²(C P C Q / N²).
* EKFAC (F's diagonal in the eigenbasis U_A ⊗ U_G of K-FAC's factors, George et al.): ||F||² − Σ_{ij} s_{ij}²,
  s_{ij} = (1/N) Σ_n (u_{A,i}ᵀh̃_n)² ||D_n u_{G,j}||².
* diagonal Fisher: ||F||² − Σ_{ab} d_{ab}², d_{ab} = (1/N) Σ_n h̃_{n,a}² (S_n)_{bb}.

Cost O(N k m² + N² (d + m²)) a layer; no P_l × P_l matrix (the dense oracle of the tests builds it).
"""
from __future__ import annotations

import numpy as np

#: the approximations :func:`relative_errors` measures, in this order
APPROXIMATIONS = ("kfac", "kpsvd1", "kpsvd2", "kfac_cor", "ekfac", "diag")


def _grams(H, D):
    """(P, Q, S) for inputs H (N, d) and signals D (N, k, m): S_n = D_nᵀD_n (N, m, m)."""
    S = np.einsum("nkm,nkp->nmp", D, D)
    P = (H @ H.T) ** 2
    Q = np.einsum("nmp,qmp->nq", S, S)
    return P, Q, S


def _top_eigs(M, k: int):
    """The k largest (real parts of the) eigenvalues of the product of two PSD matrices, clipped at 0."""
    ev = np.sort(np.real(np.linalg.eigvals(M)))[::-1]
    return np.clip(ev[:k], 0.0, None)


def layer_errors(H, D) -> dict:
    """Relative Frobenius errors {approximation: e} of one layer (module docstring), float64; NaN for F_l = 0."""
    H, D = np.asarray(H, np.float64), np.asarray(D, np.float64)
    n = H.shape[0]
    P, Q, S = _grams(H, D)
    F2 = float(np.sum(P * Q)) / n**2
    if F2 == 0.0:  # a dead layer (every ReLU of it off on these samples): no block to fit
        return {name: float("nan") for name in APPROXIMATIONS}
    A, G = H.T @ H / n, S.mean(axis=0)
    cross = float(np.sum(np.einsum("nd,de,ne->n", H, A, H) * np.einsum("nmp,mp->n", S, G))) / n
    kfac2 = F2 - 2 * cross + float(np.sum(A**2) * np.sum(G**2))
    sig2 = _top_eigs(P @ Q / n**2, 2)
    C = np.eye(n) - 1.0 / n
    cor2 = kfac2 - float(_top_eigs(C @ P @ C @ Q / n**2, 1)[0])
    UA, UG = np.linalg.eigh(A)[1], np.linalg.eigh(G)[1]
    s = np.einsum("na,nb->ab", (H @ UA) ** 2, np.sum(np.einsum("nkm,mb->nkb", D, UG) ** 2, axis=1)) / n
    d = np.einsum("na,nb->ab", H**2, np.einsum("nbb->nb", S)) / n
    squares = {"kfac": kfac2, "kpsvd1": F2 - sig2[0], "kpsvd2": F2 - sig2[:2].sum(), "kfac_cor": cor2,
               "ekfac": F2 - float(np.sum(s**2)), "diag": F2 - float(np.sum(d**2))}
    return {name: float(np.sqrt(max(squares[name], 0.0) / F2)) for name in APPROXIMATIONS}


def relative_errors(features) -> list[dict]:
    """:func:`layer_errors` of every layer of :class:`.features.Features` (its ``inputs`` and whitened ``deltas``)."""
    return [layer_errors(H, D) for H, D in zip(features.inputs, features.deltas)]


__all__ = ["APPROXIMATIONS", "layer_errors", "relative_errors"]
