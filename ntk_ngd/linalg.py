"""The one Gram algebra of ntk-ngd: every solve, pseudo-inverse, expansion and Jacobian product
that the methods, the dynamics, training and the optax transformations share (THEORY.md "Setup",
"Numerics").

Rank cut-off. Every damped inverse of a symmetric Gram K goes through one eigendecomposition and
:func:`inverse_eigenvalues`: eigenvalues λ with |λ + shift| ≤ rcond·max|λ| count as zero and map to
0, so at shift = 0 the result is the Moore–Penrose pseudo-inverse (the ρ → 0⁺ limit on right-hand
sides in range(K)). ``rcond`` defaults to size·eps, numpy's rule for Hermitian ``pinv``. The Grams
are at most (L·N·C)-sized, so this is stable where a P×P pseudo-inverse is not. Indefinite Grams
(the block-tridiagonal pattern's) are handled the same way.

Layouts. Outputs (or whitened outputs) are flattened row-major: row n·k + c for sample n and output
c < k. Per layer, H (N, d) holds the scaled layer inputs h̃_n (d = fan_in + bias) and δ (N, k, M)
the backward signals, so row (n, c) of the layer Jacobian is h̃_n ⊗ δ_{n,c} and a parameter-shaped
vector of the layer is a matrix P of shape (d, M) (W̃ = [W; b]).

Every function here is jax-traceable: ``shift`` may be a traced scalar (damping sweeps compile once).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg  # noqa: F401  (solve_triangular)
import numpy as np

from . import _validate


def default_rcond(size: int, dtype=jnp.float64) -> float:
    """Relative eigenvalue cut-off: size · machine epsilon (numpy's pinv for Hermitian input)."""
    return float(size * jnp.finfo(dtype).eps)


def kron_rcond(d: int, m: int, dtype=jnp.float64) -> float:
    """Cut-off for the eigenvalues α_iβ_j of a Kronecker product A ⊗ B from eigendecompositions of A (d × d) and
    B (m × m): their error is that of the two factors, (d + m)·eps relative, not (d·m)·eps (the size of A ⊗ B,
    which in float32 at d·m = 785,000 would cut everything below 0.09·max, damped or not)."""
    return default_rcond(d + m, dtype)


def eigh_sym(K):
    """Eigendecomposition of a symmetric matrix (symmetrised first: Grams carry rounding asymmetry)."""
    return jnp.linalg.eigh(0.5 * (K + K.T))


def inverse_eigenvalues(evals, shift=0.0, rcond=None):
    """1/(λ + shift), with numerically-zero λ + shift mapped to 0 (|λ + shift| ≤ rcond·max|λ|).

    At shift = 0 this is the pseudo-inverse; indefinite spectra keep their negative eigenvalues."""
    rcond = default_rcond(evals.shape[0], evals.dtype) if rcond is None else rcond
    shifted = evals + shift
    kept = jnp.abs(shifted) > rcond * jnp.max(jnp.abs(evals))
    return jnp.where(kept, 1.0 / jnp.where(kept, shifted, 1.0), 0.0)


def solve(K, rhs, shift=0.0, rcond=None):
    """(K + shift·I)⁻¹ rhs for symmetric K (pseudo-inverse at shift = 0); rhs (m,) or (m, ...)."""
    evals, evecs = eigh_sym(K)
    inv = inverse_eigenvalues(evals, shift, rcond)
    coeff = jnp.tensordot(evecs.T, rhs, axes=1)
    return jnp.tensordot(evecs, inv.reshape((-1,) + (1,) * (rhs.ndim - 1)) * coeff, axes=1)


def solve_right(K_cross, K, shift=0.0, rcond=None):
    """K_cross (K + shift·I)⁻¹ for symmetric K; the pseudo-inverse (ρ → 0⁺ limit) at shift = 0."""
    evals, evecs = eigh_sym(K)
    inv = inverse_eigenvalues(evals, shift, rcond)
    return ((K_cross @ evecs) * inv) @ evecs.T


#: Cholesky replaces the eigendecomposition of K + shift·I (damping > 0) when its condition number is provably
#: at most this, κ ≤ (tr K + shift)/shift for PSD K: both forms are backward stable, so they agree to ≲ size·eps·κ
#: (float64: 1e-12 relative needs κ ≲ 1e3, met at the usual ρ = 1e-3); above it the eigendecomposition is kept.
CHOLESKY_MAX_CONDITION = 1e8


def damped_inverse_factors(K, shift=0.0, rcond=None, positive: bool = False):
    """(Q, R) with K_cross (K + shift·I)⁻¹ = (K_cross Q) Rᵀ for every K_cross: one factorisation of the symmetric
    Gram K serves every right-hand side (train and test kernels, every layer term).

    ``positive`` (static: damping > 0, K PSD): Cholesky K + shift·I = LLᵀ and Q = R = L⁻ᵀ (≈ 1.3·n³ flops instead
    of the ≈ 9·n³ of an eigendecomposition: no spectrum is needed), used when the condition bound allows
    (:data:`CHOLESKY_MAX_CONDITION`) and the factor is finite; otherwise, and at shift = 0 (the rank cut-off
    needs the spectrum), Q = V·diag(1/(λ + shift)) and R = V over one eigendecomposition, exactly the
    arithmetic of :func:`solve_right` (the pseudo-inverse at shift = 0)."""
    if not positive:
        return _eigen_factors(K, shift, rcond)
    sym = 0.5 * (K + K.T)
    kappa = (jnp.trace(sym) + shift) / shift  # every λ + shift ≥ shift > rcond·max|λ| when κ·rcond < 1: nothing is cut
    rcond = default_rcond(K.shape[0], K.dtype) if rcond is None else rcond
    L = jnp.linalg.cholesky(sym + shift * jnp.eye(K.shape[0], dtype=K.dtype))
    W = jax.scipy.linalg.solve_triangular(L, jnp.eye(K.shape[0], dtype=K.dtype), lower=True).T  # L⁻ᵀ
    usable = (kappa <= CHOLESKY_MAX_CONDITION) & (kappa * rcond < 0.5) & jnp.all(jnp.isfinite(W))
    if not _validate.is_traced(usable):
        return (W, W) if bool(usable) else _eigen_factors(K, shift, rcond)
    return jax.lax.cond(usable, lambda: (W, W), lambda: _eigen_factors(K, shift, rcond))


def _eigen_factors(K, shift, rcond):
    evals, evecs = eigh_sym(K)
    return evecs * inverse_eigenvalues(evals, shift, rcond), evecs


def apply_factors(K_cross, factors):
    """K_cross (K + shift·I)⁻¹ from :func:`damped_inverse_factors`."""
    Q, R = factors
    return (K_cross @ Q) @ R.T


def projector(K, shift=0.0, rcond=None):
    """K (K + shift·I)⁻¹: the orthogonal projector onto range(K) at shift = 0."""
    return solve_right(K, K, shift, rcond)


def rank(K, rcond=None) -> int:
    """Numerical rank of a symmetric PSD Gram, with the cut-off of the solves (host value)."""
    evals = np.linalg.eigvalsh(0.5 * (np.asarray(K) + np.asarray(K).T))
    rcond = default_rcond(evals.shape[0], evals.dtype) if rcond is None else rcond
    return int(np.sum(evals > rcond * np.max(np.abs(evals)))) if evals.size else 0


def sqrt_and_pinv_sqrt(K, rcond=None):
    """(K^{1/2}, K^{+1/2}) of a symmetric PSD Gram, small eigenvalues cut as in the solves."""
    evals, evecs = eigh_sym(K)
    rcond = default_rcond(K.shape[0], K.dtype) if rcond is None else rcond
    kept = evals > rcond * jnp.max(jnp.abs(evals))
    root = jnp.sqrt(jnp.where(kept, evals, 0.0))
    inv_root = jnp.where(kept, 1.0 / jnp.where(kept, root, 1.0), 0.0)
    return (evecs * root) @ evecs.T, (evecs * inv_root) @ evecs.T


def gram_factor(K, rcond=None):
    """(U, V) with K = U Uᵀ (U = eigvecs·√λ) and V = eigvecs/√λ, so that the coordinates of cross
    rows in the same orthonormal basis are K(x', X) V. Numerically-zero eigenvalues give zero columns."""
    evals, evecs = eigh_sym(K)
    rcond = default_rcond(K.shape[0], K.dtype) if rcond is None else rcond
    kept = evals > rcond * jnp.max(jnp.abs(evals))
    root = jnp.sqrt(jnp.where(kept, evals, 0.0))
    return evecs * root, evecs * jnp.where(kept, 1.0 / jnp.where(kept, root, 1.0), 0.0)


# ---------------------------------------------------------------------------------------------
# expansions over the per-sample output index
# ---------------------------------------------------------------------------------------------
def expand_outputs(K, c: int):
    """K ⊗ 1_{c×c} on the flattened (sample, output) index, for K (..., N1, N2)."""
    if c == 1:
        return K
    return jnp.repeat(jnp.repeat(K, c, axis=-2), c, axis=-1)


def expand_outputs_rows(F, c: int):
    """Rows of F (N, r) repeated for the c outputs of each sample: row n·c + j is row n (F ⊗ 1_c)."""
    return F if c == 1 else jnp.repeat(F, c, axis=0)


def kron_identity(K, c: int):
    """K ⊗ I_c on the flattened index (an output-diagonal kernel written in full), K (..., N1, N2)."""
    if c == 1:
        return K
    eye = jnp.eye(c, dtype=K.dtype)
    out = K[..., :, None, :, None] * eye[:, None, :]
    return out.reshape(K.shape[:-2] + (K.shape[-2] * c, K.shape[-1] * c))


def per_sample_factor(columns):
    """E (N·k × N·m) from per-sample columns (N, k, m): sample n's block in its own rows n·k..n·k+k−1."""
    n, k, m = columns.shape
    eye = jnp.eye(n, dtype=columns.dtype)
    return jnp.einsum("ncm,nj->ncjm", columns, eye).reshape(n * k, n * m)


def residual_factor(residual, n: int):
    """R̃ (N·k × N) from a flat residual (N·k,): column n holds r_n in sample n's rows."""
    return per_sample_factor(jnp.reshape(residual, (n, -1, 1)))


def block_diagonal(blocks):
    """(N, k, k) per-sample blocks → the N·k × N·k block-diagonal matrix."""
    n, k, _ = blocks.shape
    eye = jnp.eye(n, dtype=blocks.dtype)
    return jnp.einsum("ncd,nm->ncmd", blocks, eye).reshape(n * k, n * k)


# ---------------------------------------------------------------------------------------------
# Jacobian products in Gram form (rows (n, c) of J_l are h̃_n ⊗ δ_{n,c})
# ---------------------------------------------------------------------------------------------
def jt(H, delta, u):
    """J_lᵀu as a (d, M) matrix: H̃ᵀV with V[n] = Σ_c u_{nc} δ_{n,c}; u flat (N·k,)."""
    n, k, _ = delta.shape
    return H.T @ jnp.einsum("nc,ncm->nm", jnp.reshape(u, (n, k)), delta)


def jvp(H, delta, P):
    """J_l P (flat N·k): row (n, c) is h̃_nᵀ P δ_{n,c} for a layer-shaped P (d, M)."""
    return jnp.einsum("nd,dm,ncm->nc", H, P, delta).reshape(-1)


def weighted_sum(weights, delta):
    """V (N, M) with V[n] = Σ_c w_{nc} δ_{n,c}: the per-sample backward mix of a flat weight vector."""
    n, k, _ = delta.shape
    return jnp.einsum("nc,ncm->nm", jnp.reshape(weights, (n, k)), delta)


__all__ = [
    "apply_factors", "block_diagonal", "damped_inverse_factors", "default_rcond", "eigh_sym", "kron_rcond", "expand_outputs", "expand_outputs_rows", "gram_factor", "inverse_eigenvalues", "jt",
    "jvp", "kron_identity", "per_sample_factor", "projector", "rank", "residual_factor", "solve", "solve_right",
    "sqrt_and_pinv_sqrt", "weighted_sum",
]
