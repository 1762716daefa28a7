"""Input preprocessing for the K-FAC input-rank condition (THEORY.md claim 3).

K-FAC's first layer contributes N·diag(leverage scores of its scaled input X̃) when
rank(X̃) = D' < N (D' = D, or D + 1 with a bias). The kernel is then diagonal but isotropic only
if every leverage score equals D'/N. A *Forster transform* achieves that: an invertible A with
u_i = A x_i/||A x_i|| in radial isotropic position, Σ_i u_i u_iᵀ = (N/D')·I, so that
leverage_i = u_iᵀ(UᵀU)⁻¹u_i = (D'/N)||u_i||² = D'/N. Row scalings and invertible column maps are
the only freedom, so with a first-layer bias (a constant column) the transform cannot act on the
data alone: use ``forster_transform(X, append_one=True)`` and feed the D+1 columns to a network
with ``bias=False`` — the same function class, with the bias column transformed with the data.
"""
from __future__ import annotations

import numpy as np

from . import _validate


def leverage_scores(A) -> np.ndarray:
    """Diagonal of the hat matrix A(AᵀA)⁺Aᵀ, from a thin SVD (independent of any Gram)."""
    A = _validate.finite_matrix("A", A).astype(float)
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    keep = s > s.max() * max(A.shape) * np.finfo(float).eps
    return np.sum(U[:, keep] ** 2, axis=1)


def forster_transform(X, append_one: bool = False, tol: float = 1e-13, max_iter: int = 10_000) -> np.ndarray:
    """Points u_i = A x_i/||A x_i|| (times √D') in radial isotropic position.

    Iterates A ← ((D'/N) Σ u uᵀ)^{−1/2} A (Barthe/Forster fixed point) until
    ||(D'/N)·Σ u uᵀ − I||₂ ≤ ``tol``. Requires N ≥ D' and points in general position (no
    k-dimensional subspace holding more than k·N/D' points); otherwise a ValueError.
    Rows are scaled to norm √D' so inputs keep the unit-variance-per-coordinate convention.
    """
    X = _validate.finite_matrix("X", X).astype(float)
    if append_one:
        X = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    n, d = X.shape
    if n < d:
        raise ValueError(f"forster_transform needs at least as many points as dimensions (N={n} < {d})")
    if np.any(np.linalg.norm(X, axis=1) == 0):
        raise ValueError("forster_transform: X has an all-zero row; remove it")
    A = np.eye(d)
    for _ in range(max_iter):
        U = X @ A.T
        U /= np.linalg.norm(U, axis=1, keepdims=True)
        M = (d / n) * U.T @ U
        if np.linalg.norm(M - np.eye(d), 2) <= tol:
            return U * np.sqrt(d)
        evals, evecs = np.linalg.eigh(M)
        if evals.min() <= 0:
            raise ValueError("forster_transform: points are not in general position (a subspace holds too many)")
        A = (evecs / np.sqrt(evals)) @ evecs.T @ A
    raise ValueError(f"forster_transform did not converge in {max_iter} iterations (points near a degenerate subspace)")
