"""Dense solves with G + ρI: symmetric pseudo-inverse, blockwise solves, Kronecker inverses.

ρ = 0 means the Moore–Penrose pseudo-inverse. It is taken per diagonal block of G (the inverse of a
block-diagonal matrix is the block-diagonal of the inverses, so this is exact; per block the cut-off
is relative to *that* block's largest eigenvalue). A symmetric block of size m with eigenvalues λ_i
is inverted through ``numpy.linalg.eigh`` keeping only |λ_i| > tol, tol = rcond · max|λ|, with
``rcond = m · eps`` by default (eps = float64 machine epsilon, numpy's ``matrix_rank`` rule).
G = J̃ᵀJ̃/N squares the conditioning of J̃, so the pseudo-inverse resolves J̃ only up to
cond(J̃) ≈ (m · eps)^(−1/2) ≈ 10^6–10^7: at ρ = 0 the Gram form (N-sized Grams) is the more
accurate side. ρ > 0 uses a symmetric (LDLᵀ) solve of each block (G_b + ρI); the layer-pattern
approximations (block-tridiagonal, general S) are symmetric but indefinite, so neither Cholesky nor
a PSD-only eigenvalue cut-off may be used for them.

Every pseudo-inverse equals the ρ → 0⁺ limit on right-hand sides in range(G), which is where the
Fisher approximations are applied (J̃ᵀ and ∇L lie in range(G) for the methods whose limit exists).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

EPS = np.finfo(np.float64).eps


def sym_pinv(G, rcond: float | None = None) -> np.ndarray:
    """Moore–Penrose pseudo-inverse of a symmetric matrix via ``eigh``, keeping |λ| > rcond·max|λ|
    (default rcond = size·eps). Negative eigenvalues are kept (the layer-pattern approximations,
    block-tridiagonal included, are indefinite)."""
    G = np.asarray(G, dtype=float)
    m = G.shape[0]
    if m == 0:
        return G.copy()
    lam, V = np.linalg.eigh((G + G.T) / 2)
    rcond = m * EPS if rcond is None else rcond
    top = np.max(np.abs(lam))
    keep = np.abs(lam) > rcond * top if top > 0 else np.zeros_like(lam, dtype=bool)
    Vk = V[:, keep]
    return (Vk / lam[keep]) @ Vk.T


def solve_block(G, rhs, damping: float, rcond: float | None = None) -> np.ndarray:
    """(G + ρI)⁻¹ rhs for one symmetric block (pseudo-inverse at ρ = 0)."""
    if damping > 0:
        # G is rank <= N·k, so G + ρI has condition number ~ λ_max/ρ and scipy warns at small ρ; the
        # right-hand sides lie in range(G) and the kernels stay accurate to O(ρ) (measured down to
        # ρ = 1e-15 at depth 4–6), so the warning is silenced here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            return scipy.linalg.solve((G + G.T) / 2 + damping * np.eye(G.shape[0]), rhs, assume_a="sym")
    return sym_pinv(G, rcond) @ rhs


class Blockwise:
    """rhs ↦ (G + ρI)⁻¹ rhs, G block-diagonal over ``blocks`` (index arrays partitioning range(P))."""

    def __init__(self, G, blocks, damping: float, rcond: float | None = None):
        self.G, self.blocks, self.damping, self.rcond = G, blocks, damping, rcond

    def __call__(self, rhs) -> np.ndarray:
        rhs = np.asarray(rhs, dtype=float)
        out = np.zeros_like(rhs)
        for idx in self.blocks:
            out[idx] = solve_block(self.G[np.ix_(idx, idx)], rhs[idx], self.damping, self.rcond)
        return out


class KroneckerBlocks:
    """rhs ↦ blockdiag_l ((A_l + √ρ)⁻¹ ⊗ (B_l + √ρ)⁻¹) rhs (K-FAC's factored damping); at ρ = 0
    A_l⁺ ⊗ B_l⁺ (the pseudo-inverse of A ⊗ B, and the ρ → 0⁺ limit on range(A ⊗ B))."""

    def __init__(self, factors, slices, damping: float, rcond: float | None = None):
        self.factors, self.slices, self.damping, self.rcond = factors, slices, damping, rcond

    def _inverse(self, A):
        if self.damping > 0:
            return np.linalg.inv(A + np.sqrt(self.damping) * np.eye(A.shape[0]))
        return sym_pinv(A, self.rcond)

    def __call__(self, rhs) -> np.ndarray:
        rhs = np.asarray(rhs, dtype=float)
        out = np.zeros_like(rhs)
        for sl, (A, B) in zip(self.slices, self.factors):
            out[sl] = np.kron(self._inverse(A), self._inverse(B)) @ rhs[sl]
        return out


def identity(rhs) -> np.ndarray:
    """G = I (gradient descent; damping ignored)."""
    return np.array(rhs, dtype=float)


def components(S) -> list[list[int]]:
    """Connected components of the graph with adjacency S ≠ 0 (layers coupled by a pattern): G is
    block-diagonal over them."""
    S = np.asarray(S)
    L = S.shape[0]
    seen, comps = set(), []
    for start in range(L):
        if start in seen:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            a = stack.pop()
            comp.append(a)
            for b in range(L):
                if S[a, b] != 0 and b not in seen:
                    seen.add(b)
                    stack.append(b)
        comps.append(sorted(comp))
    return comps


def gram_solve(Phi, rhs, damping: float, rcond: float | None = None) -> np.ndarray:
    """Φᵀ(ΦΦᵀ + λI)⁻¹ rhs (iEF's Gram damping, no factor N); at λ = 0 Φ⁺ rhs by the SVD pseudo-inverse
    (cut-off ``rcond``·σ_max, default max(Φ.shape)·eps)."""
    if damping > 0:
        return Phi.T @ scipy.linalg.solve(Phi @ Phi.T + damping * np.eye(Phi.shape[0]), rhs, assume_a="pos")
    return np.linalg.pinv(Phi, rcond=max(Phi.shape) * EPS if rcond is None else rcond) @ rhs


__all__ = ["Blockwise", "EPS", "KroneckerBlocks", "components", "gram_solve", "identity", "solve_block", "sym_pinv"]
