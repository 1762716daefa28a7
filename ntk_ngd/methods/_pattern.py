"""Layer-structured Fisher approximations G_ab = S_ab J̃_aᵀJ̃_b/N for a symmetric L×L pattern S
(THEORY.md claim 2), shared by block_diag (S = I), block_tridiag and pattern. Rule "tikhonov".

With D = blockdiag(J_1, …, J_L) and 1̃ = 1_L ⊗ I: J = 1̃ᵀD and G = Dᵀ(S ⊗ I)D/N. Write
K = DDᵀ = blockdiag(Θ_1, …, Θ_L) and T = K^{1/2}(S ⊗ I)K^{1/2} (symmetric, indefinite for the
tridiagonal S). Two push-through steps give

    Θ_G(x', X) = Z(x') (T + NρI)⁻¹ Z(X)ᵀ,
    Z(X)  = [Θ_1^{1/2}, …, Θ_L^{1/2}],      Z(x') = [Θ_1(x', X)Θ_1^{+1/2}, …, Θ_L(x', X)Θ_L^{+1/2}],

because K(x', X) = K(x', X)K⁺K. At ρ = 0 the ρ → 0⁺ limit is Z(x')T⁺Z(X)ᵀ whenever Z(X)ᵀ ∈ range(T);
then with every Θ_l invertible Θ_G(X, X) = (1ᵀS⁺1)·I even for singular S (tridiagonal, L ≡ 2 mod 3)
as long as 1 ∈ range(S). If Z(X)ᵀ leaves range(T) the kernel diverges like 1/ρ and a warning says so.

Parameter update: (DᵀS̃D/N + ρ)⁻¹Dᵀ1̃u/N = DᵀK^{+1/2}(T + Nρ)⁻¹Z with Z = [Θ_l^{1/2}u]_l, i.e. per layer
Δθ_l = −η J̃_lᵀΘ_l^{+1/2}v_l, v = (T + Nρ)⁻¹Z. Block-diagonal (S = I) is Σ_l Θ_l(x', X)(Θ_l + Nρ)⁻¹
and Δθ_l = −η J̃_lᵀ(Θ_l + Nρ)⁻¹u (L solves of size N·k), used directly.

Between any rows X, Y (:mod:`._metric`, ρ > 0), with W = S̃/N, K = DDᵀ and
(ρ + DᵀWD)⁻¹ = ρ⁻¹[I − DᵀW(ρ + KW)⁻¹D] and (Nρ + KS̃)⁻¹K^{1/2} = K^{1/2}(Nρ + T)⁻¹:

    J_X(G + ρ)⁻¹J_Yᵀ/N = [Θ_XY − Z(X) T(T + Nρ)⁻¹ Z(Y)ᵀ]/(Nρ),    Z(X) = [Θ_l(X, B)Θ_l^{+1/2}]_l,
    J_X(G + ρ)J_Yᵀ/N   = Σ_ab S_ab Θ_a(X, B)Θ_b(B, Y)/N² + ρΘ_XY/N,
    (G + ρ)⁻¹J_Rᵀw     = [J_Rᵀw − Σ_a J_{a,B}ᵀ (S̃K^{1/2}q)_a]/ρ,   q = (T + Nρ)⁻¹Z(R)ᵀw;

for S = I each layer is the Woodbury form of :func:`._metric.woodbury_metric`.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import _validate, _warn, linalg
from . import _conditions
from ._cost import Cost, eigh, features, gram_solve_cost, matmul, solves
from ._metric import Metric, jt_all, pad_rows, plus_damped, push_through, push_through_coefficients, sample_rows
from .base import Condition, MethodKernel, Option, test_kernel_or_none, verdict


def banded_pattern(depth: int, bandwidth: int) -> np.ndarray:
    """S_ab = 1 for |a − b| ≤ bandwidth (0: block-diagonal, depth − 1: exact)."""
    idx = np.arange(depth)
    return (np.abs(idx[:, None] - idx[None, :]) <= bandwidth).astype(float)


def tridiagonal_pattern(depth: int) -> np.ndarray:
    """S with ones on the main, first upper and first lower diagonals."""
    return banded_pattern(depth, 1)


def check_pattern(pattern, depth: int) -> np.ndarray:
    S = np.asarray(pattern, dtype=float)
    if S.shape != (depth, depth):
        raise ValueError(f"pattern must be a {depth}x{depth} matrix (one row per layer), got shape {S.shape}")
    if not np.all(np.isfinite(S)) or not np.allclose(S, S.T):
        raise ValueError("pattern must be a finite symmetric matrix")
    return S


def as_static(S) -> tuple:
    """A pattern as nested tuples (hashable: a static jit argument)."""
    return tuple(tuple(float(v) for v in row) for row in np.asarray(S, float))


def _shift(ctx):
    return ctx.damping.shift("tikhonov", ctx.n)


# ---------------------------------------------------------------------------------------------
# S = I
# ---------------------------------------------------------------------------------------------
def block_diag_kernel(train, test, ctx) -> MethodKernel:
    """Σ_l Θ_l(x', X)(Θ_l + NρI)⁻¹."""
    factors = [linalg.damped_inverse_factors(t, _shift(ctx), ctx.rcond, ctx.damping.positive) for t in train.ntk]
    K_train = sum(linalg.apply_factors(t, f) for t, f in zip(train.ntk, factors))
    K_test = test_kernel_or_none(test, lambda ts: sum(linalg.apply_factors(a, f) for a, f in zip(ts.ntk, factors)))
    return MethodKernel(K_train, K_test)


def block_diag_direction(train, ctx) -> list:
    return [linalg.jt(H, d, linalg.solve(t, ctx.residual, _shift(ctx), ctx.rcond))
            for H, d, t in zip(train.inputs, train.deltas, train.ntk)]


#: block_diag: one solve of order N·k per layer (Θ_l + Nρ)
block_diag_cost = gram_solve_cost(n_solves_per_layer=1)


def pattern_cost(size, options) -> Cost:
    """Per layer Θ_l^{±1/2} (an eigendecomposition of order R = N·k), the L² products of T and one solve of
    order L·R (the same for every S but S = I, which block_diag's cost covers)."""
    L, r = size.depth, size.rows
    common = features(size) + L * eigh(r) + L * L * matmul(r, r, r)
    return Cost(common + solves(size, 1, L * r, L * r), common + solves(size, 1, L * r, 1))


# ---------------------------------------------------------------------------------------------
# any symmetric S
# ---------------------------------------------------------------------------------------------
def _roots(train, ctx):
    return zip(*(linalg.sqrt_and_pinv_sqrt(t, ctx.rcond) for t in train.ntk))


def _block_gram(S, roots):
    """T = K^{1/2}(S ⊗ I)K^{1/2} as an (L·rows)² symmetric matrix."""
    L = S.shape[0]
    T = jnp.block([[S[a, b] * (roots[a] @ roots[b]) for b in range(L)] for a in range(L)])
    return 0.5 * (T + T.T)


def pattern_kernel(train, test, ctx, S, name: str = "pattern") -> MethodKernel:
    """Θ_G = Z(x')(T + NρI)⁻¹Z(X)ᵀ (module docstring); ``name`` the method (in its warnings)."""
    S = np.asarray(S, float)
    if np.array_equal(S, np.eye(train.depth)):
        return block_diag_kernel(train, test, ctx)
    roots, pinv_roots = _roots(train, ctx)
    Z = jnp.concatenate(roots, axis=1)  # Z(X) = [Θ_1^{1/2}, …]  (Θ_l^{1/2} symmetric)
    evals, evecs = linalg.eigh_sym(_block_gram(S, roots))
    inv = linalg.inverse_eigenvalues(evals, _shift(ctx), ctx.rcond)
    ZU = Z @ evecs
    if not ctx.damping.positive:
        _warn_if_divergent(name, ZU, evals, ctx.rcond)
    K_train = (ZU * inv) @ ZU.T

    def test_kernel(ts):
        Z_test = jnp.concatenate([a @ p for a, p in zip(ts.ntk, pinv_roots)], axis=1)
        return ((Z_test @ evecs) * inv) @ ZU.T

    return MethodKernel(K_train, test_kernel_or_none(test, test_kernel))


def pattern_direction(train, ctx, S) -> list:
    S = np.asarray(S, float)
    L = S.shape[0]
    if np.array_equal(S, np.eye(L)):
        return block_diag_direction(train, ctx)
    roots, pinv_roots = _roots(train, ctx)
    Z = jnp.concatenate([root @ ctx.residual for root in roots])
    v = linalg.solve(_block_gram(S, roots), Z, _shift(ctx), ctx.rcond).reshape(L, -1)
    return [linalg.jt(H, d, p @ v[l]) for l, (H, d, p) in enumerate(zip(train.inputs, train.deltas, pinv_roots))]


# ---------------------------------------------------------------------------------------------
# the metric between any rows (continual learning; module docstring)
# ---------------------------------------------------------------------------------------------
def _block_diag_inverse(lk, n_b, ctx):
    shift = _shift(ctx)
    nb = sample_rows(lk.total_ntk, lk, n_b)
    return sum(push_through(t, nb, shift, ctx.rcond) for t in lk.ntk) / shift


def _block_diag_direction(lk, n_b, ctx, w):
    shift = _shift(ctx)
    nb = sample_rows(lk.total_ntk, lk, n_b)
    return jt_all(lk, [push_through_coefficients(t, nb, w, shift, ctx.rcond) / ctx.damping.value for t in lk.ntk])


def _pattern_parts(lk, n_b, ctx, S):
    """(nb, Z(R), eigenpairs of T, the roots Θ_l^{1/2}) on the task's rows B = the first nb rows."""
    nb = sample_rows(lk.total_ntk, lk, n_b)
    roots, pinv_roots = zip(*(linalg.sqrt_and_pinv_sqrt(t[:nb, :nb], ctx.rcond) for t in lk.ntk))
    Z = jnp.concatenate([t[:, :nb] @ p for t, p in zip(lk.ntk, pinv_roots)], axis=1)
    evals, evecs = linalg.eigh_sym(_block_gram(np.asarray(S, float), roots))
    return nb, Z, evals, evecs, roots


def pattern_metric(pattern_of) -> Metric:
    """The metric of the layer pattern ``pattern_of(ctx, depth)`` (module docstring); S = I: per-layer Woodbury."""

    def is_diagonal(lk, ctx):
        return np.array_equal(np.asarray(pattern_of(ctx, lk.depth), float), np.eye(lk.depth))

    def inverse(lk, n_b, ctx):
        if is_diagonal(lk, ctx):
            return _block_diag_inverse(lk, n_b, ctx)
        _, Z, evals, evecs, _ = _pattern_parts(lk, n_b, ctx, pattern_of(ctx, lk.depth))
        ZU = Z @ evecs
        ratio = evals * linalg.inverse_eigenvalues(evals, _shift(ctx), ctx.rcond)  # T(T + Nρ)⁻¹
        return (lk.total_ntk - (ZU * ratio) @ ZU.T) / _shift(ctx)

    def forward(lk, n_b, ctx):
        S = np.asarray(pattern_of(ctx, lk.depth), float)
        nb = sample_rows(lk.total_ntk, lk, n_b)
        cross = [t[:, :nb] for t in lk.ntk]
        G = sum(S[a, b] * cross[a] @ cross[b].T for a in range(lk.depth) for b in range(lk.depth) if S[a, b] != 0)
        return plus_damped(lk.total_ntk, ctx.n, ctx, G / ctx.n**2)

    def direction(lk, n_b, ctx, w):
        if is_diagonal(lk, ctx):
            return _block_diag_direction(lk, n_b, ctx, w)
        S = np.asarray(pattern_of(ctx, lk.depth), float)
        nb, Z, evals, evecs, roots = _pattern_parts(lk, n_b, ctx, S)
        q = (evecs * linalg.inverse_eigenvalues(evals, _shift(ctx), ctx.rcond)) @ (evecs.T @ (Z.T @ w))
        q = q.reshape(lk.depth, nb)
        coeffs = []
        for a in range(lk.depth):
            mixed = sum((S[a, b] * roots[b] @ q[b] for b in range(lk.depth) if S[a, b] != 0), jnp.zeros(nb, w.dtype))
            coeffs.append((w - pad_rows(mixed, w.shape[0])) / ctx.damping.value)
        return jt_all(lk, coeffs)

    return Metric(inverse, forward, direction)


def _warn_if_divergent(name: str, ZU, evals, rcond) -> None:
    """Warn when Z(X)ᵀ has weight on null(T): the ρ → 0⁺ kernel is then infinite (host check)."""
    if _validate.is_traced(evals):
        return
    rcond = linalg.default_rcond(evals.shape[0]) if rcond is None else rcond
    null = np.abs(np.asarray(evals)) <= rcond * float(jnp.max(jnp.abs(evals)))
    if null.any():
        leak = float(jnp.linalg.norm(ZU[:, null]) / jnp.linalg.norm(ZU))
        if leak > 1e-6:
            _warn.warn(name, f"J has weight {leak:.1e} outside the range of the layer-pattern Fisher T, so the "
                       "kernel diverges as damping -> 0 (returned: its pseudo-inverse value)",
                       "pass damping > 0 (or use block_diag, whose blocks always cover J)", key="outside_range",
                       stacklevel=4)


def damped_lambda_min(lk, ctx, S) -> float:
    """λ_min of the symmetric part of the damped training kernel Z(T + NρI)⁻¹Zᵀ in Gram form (module docstring).
    For a banded S, T = K^{1/2}(S ⊗ I)K^{1/2} is indefinite, so at intermediate ρ (below |λ_min(T)|/N and above
    ρ → 0, where the kernel tends to α·I) the kernel can have negative eigenvalues: NGD ascends along them
    (docs/THEORY.md#finding-indefinite-damped-kernel)."""
    K = np.asarray(pattern_kernel(lk, None, ctx, S).train, float)
    return float(np.linalg.eigvalsh(0.5 * (K + K.T))[0])


def damped_positive(lk, ctx, S) -> Condition:
    """ρ > 0 with an indefinite T: the damped kernel must be positive definite for NGD to descend on every mode."""
    lam = damped_lambda_min(lk, ctx, S)
    rho = float(ctx.damping.value)
    return Condition("damped_kernel_positive", lam > 0, f"indefinite at damping {rho:g} (lambda_min = {lam:.3g})"
                     if lam <= 0 else f"positive definite at damping {rho:g} (lambda_min = {lam:.3g})")


def pattern_predict(name: str, lk, ctx, S):
    """α = 1ᵀS⁺1 when every Θ_l has full rank, 1 ∈ range(S) and ρ = 0 (claim 2); at ρ > 0 with an indefinite
    pattern Gram T (any S ≠ I with a negative eigenvalue) also whether the damped kernel stays positive
    definite (:func:`damped_positive`; listed first, so that the summary names it)."""
    S = np.asarray(S, float)
    ones = np.ones(S.shape[0])
    in_range = bool(np.linalg.norm(S @ np.linalg.lstsq(S, ones, rcond=None)[0] - ones) < 1e-10)
    alpha = float(ones @ np.linalg.pinv(S) @ ones)
    ones_cond = Condition("ones_in_range", in_range, "1 is in the range of the pattern S" if in_range
                          else "1 is not in the range of the pattern S")
    indefinite_s = bool(np.linalg.eigvalsh(S)[0] < 0)
    damped = (damped_positive(lk, ctx, S),) if (ctx.damping.positive and indefinite_s) else ()
    cond = (*damped, *_conditions.layer_blocks_full_rank(lk, ctx.rcond), ones_cond, _conditions.undamped(ctx.damping))
    return verdict(name, alpha, cond)


def pattern_options() -> tuple[Option, ...]:
    def check_matrix(value, depth):
        return None if value is None else as_static(check_pattern(value, depth))

    def check_bandwidth(value, depth):
        return None if value is None else _validate.positive_int("bandwidth", value, minimum=0)

    return (Option("pattern", None, check_matrix, "any symmetric L×L matrix S"),
            Option("bandwidth", None, check_bandwidth, "k: S_ab = 1 for |a − b| ≤ k"))


def check_pattern_options(options: dict, depth: int) -> None:
    if options["pattern"] is None and options["bandwidth"] is None:
        raise ValueError(f"method 'pattern' needs pattern=<{depth}x{depth} symmetric matrix> or bandwidth=<int>")
    if options["pattern"] is not None and options["bandwidth"] is not None:
        raise ValueError("pass pattern= or bandwidth=, not both")


def pattern_of(ctx, depth: int) -> np.ndarray:
    """S from the normalised options of method 'pattern'."""
    S = ctx.option("pattern")
    return np.asarray(S, float) if S is not None else banded_pattern(depth, ctx.option("bandwidth"))
