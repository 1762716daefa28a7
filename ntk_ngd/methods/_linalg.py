"""Small symmetric-matrix kernels shared by the methods.

Every damped inverse here is the ρ → 0⁺ limit at ρ = 0: eigenvalues of the (positive
semi-definite) Gram below ``rcond · λ_max`` are treated as zero, which is the Moore–Penrose
pseudo-inverse of the Gram. Because each Gram is at most (L·N·C)×(L·N·C) this is stable where a
P×P pseudo-inverse is not (THEORY.md, issue 4 "dense reference").
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

def default_rcond(size: int, dtype=jnp.float64) -> float:
    """Relative eigenvalue cut-off: size · machine epsilon (numpy's pinv for Hermitian input)."""
    return float(size * jnp.finfo(dtype).eps)


def eigh_psd(K):
    """Eigendecomposition of a symmetric PSD Gram (symmetrised first)."""
    K = 0.5 * (K + K.T)
    return jnp.linalg.eigh(K)


def inverse_eigenvalues(evals, shift: float, rcond=None):
    """1/(λ + shift), with eigenvalues that are numerically zero mapped to 0.

    At shift = 0 this is the pseudo-inverse: |λ| ≤ rcond·max|λ| counts as zero. Works for
    indefinite spectra too (the block-tridiagonal pattern's Gram is indefinite)."""
    rcond = default_rcond(evals.shape[0], evals.dtype) if rcond is None else rcond
    shifted = evals + shift
    kept = jnp.abs(shifted) > rcond * jnp.max(jnp.abs(evals))
    return jnp.where(kept, 1.0 / jnp.where(kept, shifted, 1.0), 0.0)


def damped_solve_right(K_cross, K, shift, rcond=None):
    """K_cross (K + shift·I)⁻¹ for PSD K; the pseudo-inverse (ρ → 0⁺ limit) at shift = 0."""
    evals, evecs = eigh_psd(K)
    inv = inverse_eigenvalues(evals, shift, rcond)
    return ((K_cross @ evecs) * inv) @ evecs.T


def damped_projector(K, shift, rcond=None):
    """K (K + shift·I)⁻¹ for PSD K: the projector onto range(K) at shift = 0."""
    return damped_solve_right(K, K, shift, rcond)


def rank(K, rcond=None) -> int:
    """Numerical rank of a symmetric PSD Gram with the same cut-off as the solves."""
    evals = jnp.linalg.eigvalsh(0.5 * (K + K.T))
    rcond = default_rcond(K.shape[0], K.dtype) if rcond is None else rcond
    return int(np.sum(np.asarray(evals) > rcond * float(jnp.max(jnp.abs(evals)))))


def psd_sqrt_and_pinv_sqrt(K, rcond=None):
    """(K^{1/2}, K^{+1/2}) of a symmetric PSD Gram, small eigenvalues cut as in the solves."""
    evals, evecs = eigh_psd(K)
    rcond = default_rcond(K.shape[0], K.dtype) if rcond is None else rcond
    kept = evals > rcond * jnp.max(jnp.abs(evals))
    root = jnp.sqrt(jnp.where(kept, evals, 0.0))
    inv_root = jnp.where(kept, 1.0 / jnp.where(kept, root, 1.0), 0.0)
    return (evecs * root) @ evecs.T, (evecs * inv_root) @ evecs.T


def block_diag(blocks):
    """Block-diagonal matrix from a sequence of 2-D blocks."""
    rows = sum(b.shape[0] for b in blocks)
    cols = sum(b.shape[1] for b in blocks)
    out = jnp.zeros((rows, cols), blocks[0].dtype)
    r = c = 0
    for b in blocks:
        out = out.at[r : r + b.shape[0], c : c + b.shape[1]].set(b)
        r += b.shape[0]
        c += b.shape[1]
    return out
