"""Layer-structured Fisher approximations G_ab = S_ab J_aᵀJ_b / N (THEORY.md claim 2).

With D = blockdiag(J_1, …, J_L) and 1̃ = 1_L ⊗ I_{NC}: J = 1̃ᵀD and G = Dᵀ(S ⊗ I)D/N. Write
K = DDᵀ = blockdiag(Θ_1, …, Θ_L) and T = K^{1/2}(S ⊗ I)K^{1/2} (L·NC square, symmetric,
indefinite for the tridiagonal S). Two push-through steps give

    Θ_G(x', X) = Z(x') (T + NρI)⁻¹ Z(X)ᵀ,
    Z(X)  = 1̃ᵀK^{1/2}          = [Θ_1^{1/2}, …, Θ_L^{1/2}],
    Z(x') = 1̃ᵀK(x', X)K^{+1/2} = [Θ_1(x', X)Θ_1^{+1/2}, …, Θ_L(x', X)Θ_L^{+1/2}],

because K(x', X) = K(x', X)K⁺K (rows of J(x') project onto the row space of D). At ρ = 0 the
ρ → 0⁺ limit is Z(x') T⁺ Z(X)ᵀ whenever Z(X)ᵀ ∈ range(T); then with every Θ_l invertible
Θ_G(X, X) = (1ᵀS⁺1)·I even when S is singular (tridiagonal, L ≡ 2 mod 3) as long as 1 ∈ range(S).
If Z(X)ᵀ leaves range(T), the kernel diverges like 1/ρ and a warning says so.

Block-diagonal (S = I) reduces to Σ_l Θ_l(x', X)(Θ_l + NρI)⁻¹ (L solves of size NC), which is
used directly; it equals L·I when every Θ_l has rank NC.
"""
from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from . import _linalg
from .base import Method, MethodKernel, register, test_kernel_or_none


def tridiagonal_pattern(depth: int) -> np.ndarray:
    """S with ones on the main, first upper and first lower diagonals."""
    return banded_pattern(depth, 1)


def banded_pattern(depth: int, bandwidth: int) -> np.ndarray:
    """S_ab = 1 for |a − b| ≤ bandwidth (0: block-diagonal, depth − 1: exact)."""
    idx = np.arange(depth)
    return (np.abs(idx[:, None] - idx[None, :]) <= bandwidth).astype(float)


def check_pattern(pattern, depth: int) -> np.ndarray:
    S = np.asarray(pattern, dtype=float)
    if S.shape != (depth, depth):
        raise ValueError(f"pattern must be a {depth}x{depth} matrix (one row per layer), got shape {S.shape}")
    if not np.all(np.isfinite(S)) or not np.allclose(S, S.T):
        raise ValueError("pattern must be a finite symmetric matrix")
    return S


def block_diag_kernel(train, test, *, n, damping, rcond=None, **_) -> MethodKernel:
    """Σ_l Θ_l(x', X)(Θ_l + NρI)⁻¹ (S = I)."""
    shift = n * damping
    K_train = sum(_linalg.damped_projector(t, shift, rcond) for t in train.ntk)
    K_test = test_kernel_or_none(
        test, lambda ts: sum(_linalg.damped_solve_right(a, t, shift, rcond) for a, t in zip(ts.ntk, train.ntk))
    )
    return MethodKernel(K_train, K_test)


def pattern_kernel(train, test, *, n, damping, pattern=None, bandwidth=None, rcond=None, **_) -> MethodKernel:
    """Θ_G = Z(x')(T + NρI)⁻¹Z(X)ᵀ for any symmetric layer pattern S (module docstring)."""
    depth = train.depth
    if pattern is None:
        if bandwidth is None:
            raise ValueError("method 'pattern' needs pattern=<LxL matrix> or bandwidth=<int>")
        pattern = banded_pattern(depth, int(bandwidth))
    S = check_pattern(pattern, depth)
    if np.array_equal(S, np.eye(depth)):
        return block_diag_kernel(train, test, n=n, damping=damping, rcond=rcond)
    roots, pinv_roots = zip(*(_linalg.psd_sqrt_and_pinv_sqrt(t, rcond) for t in train.ntk))
    size = roots[0].shape[0]
    Z = jnp.concatenate(roots, axis=1)  # Z(X) = [Θ_1^{1/2}, …]  (Θ_l^{1/2} symmetric)
    T = jnp.block([[S[a, b] * (roots[a] @ roots[b]) for b in range(depth)] for a in range(depth)])
    T = 0.5 * (T + T.T)
    evals, evecs = jnp.linalg.eigh(T)
    inv = _linalg.inverse_eigenvalues(evals, n * damping, rcond)
    ZU = Z @ evecs
    if damping == 0:
        _warn_if_divergent(ZU, evals, rcond, size * depth)
    K_train = (ZU * inv) @ ZU.T

    def test_kernel(ts):
        Z_test = jnp.concatenate([a @ p for a, p in zip(ts.ntk, pinv_roots)], axis=1)
        return ((Z_test @ evecs) * inv) @ ZU.T

    return MethodKernel(K_train, test_kernel_or_none(test, test_kernel))


def _warn_if_divergent(ZU, evals, rcond, size) -> None:
    """Warn when Z(X)ᵀ has weight on null(T): the ρ → 0⁺ kernel is then infinite."""
    rcond = _linalg.default_rcond(size) if rcond is None else rcond
    null = np.abs(np.asarray(evals)) <= rcond * float(jnp.max(jnp.abs(evals)))
    if null.any():
        leak = float(jnp.linalg.norm(ZU[:, null]) / jnp.linalg.norm(ZU))
        if leak > 1e-6:
            warnings.warn(
                f"layer pattern: J has weight {leak:.1e} outside the range of the approximate Fisher; "
                "its kernel diverges as damping -> 0 (returned: the pseudo-inverse value); use damping > 0",
                RuntimeWarning,
                stacklevel=3,
            )


def block_tridiag_kernel(train, test, **kwargs) -> MethodKernel:
    kwargs.pop("pattern", None)
    return pattern_kernel(train, test, pattern=tridiagonal_pattern(train.depth), **kwargs)


BLOCK_DIAG = register(Method("block_diag", block_diag_kernel, "one Fisher block per layer (S = I)"))
BLOCK_TRIDIAG = register(
    Method("block_tridiag", block_tridiag_kernel, "layer blocks on the main and first off-diagonals")
)
PATTERN = register(
    Method(
        "pattern",
        pattern_kernel,
        "any symmetric L×L layer pattern S (pattern=S, or bandwidth=k for a banded one)",
        options=("pattern", "bandwidth"),
    )
)
