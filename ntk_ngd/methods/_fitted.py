"""Predictions for the approximations fitted in a Kronecker basis (KPSVD, EKFAC, diagonal Fisher;
THEORY.md "Kronecker-basis approximations"), computed from Grams and their eigen-coordinates only
(numpy, host side), never from the methods' kernels."""
from __future__ import annotations

import numpy as np

from .. import linalg
from .base import Condition, Prediction


def eigen_coordinates_np(K, rcond=None) -> np.ndarray:
    """Q√λ over the numerically non-zero eigenvalues of a PSD Gram (numpy)."""
    lam, Q = np.linalg.eigh(np.asarray(K, float))
    cut = (linalg.default_rcond(len(lam)) if rcond is None else rcond) * np.max(np.abs(lam))
    keep = lam > cut
    return Q[:, keep] * np.sqrt(lam[keep])


def fitted_basis_diagonal(h, d, n: int) -> np.ndarray:
    """Diagonal of (1/N) Σ_ij z_ij z_ijᵀ / s_ij, z_ij = (h_{p,i} d_{p,j})_p, s_ij = ||z_ij||²/N: every row's
    share Σ_ij z_{p,ij}²/||z_ij||² of the unit-vector frame (EKFAC, diag at ρ = 0; s_ij = 0 terms vanish)."""
    h2, d2 = np.asarray(h, float) ** 2, np.asarray(d, float) ** 2
    s = h2.T @ d2
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    return np.sum((h2 @ inv) * d2, axis=1)


#: a predicted diagonal whose relative spread is below this counts as constant (float64 rounding of
#: sums of O(N) unit-scale terms is ~1e-14)
CONSTANT_DIAGONAL_TOL = 1e-8


def diagonal_verdict(method, alpha, diag, cond, isotropic_if_constant, what, diagonal_kernel=False) -> Prediction:
    """Verdict from a predicted diagonal; ``diagonal_kernel``: the theory says Θ_G is diagonal, so the
    diagonal's deviation is the kernel's (kpsvd), else it is only a lower bound and not reported."""
    mean = float(np.mean(diag))
    spread = float((diag.max() - diag.min()) / mean)
    deviation = float(np.linalg.norm(diag - mean) / (mean * np.sqrt(diag.size)))
    constant = spread <= CONSTANT_DIAGONAL_TOL
    cond = (*cond, Condition("constant_diagonal", constant, f"{what}; predicted diagonal spread {spread:.2g}"))
    ok = all(c.holds for c in cond) and isotropic_if_constant
    note = "" if ok else (f"{what}: diagonal constant, but isotropy needs a tight frame (not predicted)"
                          if all(c.holds for c in cond) else "")
    return Prediction(method, alpha, ok, cond, note, diagonal=diag, deviation=deviation if diagonal_kernel else None)
