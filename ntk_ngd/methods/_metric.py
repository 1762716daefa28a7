"""Two-sided kernels of a method's metric (docs/THEORY.md "Continual learning in function space").

A method G built on the rows of task B (N = N_B samples; the method's Context) has the metric
M = G + ρI (rule "tikhonov"; K-FAC: the factored (A + √ρ)⊗(B + √ρ); gd: M = I). Continual learning
needs it between *any* rows, not only B's:

    inverse   J_X M⁻¹ J_Yᵀ / N                  (ONG: the natural old-task directions)
    forward   J_X M J_Yᵀ / N                    (FOPNG: the Fisher-orthogonal constraint)
    sandwich  J_X M_b⁻¹ M_mid M_b⁻¹ J_Yᵀ / N     (M_mid = I: M_b⁻²; the Euclidean and stale-metric
                                                 projections of a naturalised basis)
    direction M⁻¹ J_Rᵀ w                        (a parameter-space update from coefficients w on rows R)

Every function here works on one :class:`~ntk_ngd.kernels.LayerKernels` over a row set R whose first
``n_b`` samples are task B (R × R kernels; finite width also carries the per-unit features, which may
come from different parameters for different rows: stored old-task directions). Nothing P×P is formed.

The push-through (Woodbury) identity behind most forms: for M = ρI + ΦᵀΦ/N (Φ the rows of B, any
weights folded in), (ρ + ΦᵀΦ/N)⁻¹ = ρ⁻¹[I − Φᵀ(ΦΦᵀ + Nρ)⁻¹Φ], hence

    J_X M⁻¹ J_Yᵀ / N = [K_XY − K_XB (K_BB + NρI)⁻¹ K_BY] / (Nρ)          (:func:`push_through`).

It needs ρ > 0: rows outside the span of B's directions see the 1/ρ of the damping (so do the
projections that use it). For tikhonov methods M_b⁻¹ M_mid M_b⁻¹ follows from the ρ-derivative of the
inverse kernel (:func:`tikhonov_sandwich`): d/dρ (G + ρ)⁻¹ = −(G + ρ)⁻², and
(G + ρ_b)⁻¹(G + ρ)(G + ρ_b)⁻¹ = (G + ρ_b)⁻¹ + (ρ − ρ_b)(G + ρ_b)⁻².
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from .. import linalg
from ..damping import Damping


@dataclasses.dataclass(frozen=True)
class Metric:
    """What a method declares for continual learning (module docstring). ``inverse``, ``forward``:
    ``(lk, n_b, ctx) -> (R·k × R·k)``; ``direction``: ``(lk, n_b, ctx, w) -> [per-layer (d_l, M_l)]``;
    ``sandwich``: ``(lk, n_b, ctx_basis, mid: Damping | None) -> (R·k × R·k)``, None: the tikhonov
    default through the ρ-derivative of ``inverse``. ``old_sandwich``: ``(K, S, old_rows, rho, n_b, n_old) ->
    S_o``, the previous task's metric M_o between two current inverses, J M⁻¹M_oM⁻¹Jᵀ/N_B, from the method's own
    kernel K = J M⁻¹Jᵀ/N_B and its square S over the rows R (``old_rows``: the previous task's rows in R, None if not
    stored); None: not offered (the continual projection ``ong_old_factors`` raises for the method)."""

    inverse: Callable
    forward: Callable
    direction: Callable
    sandwich: Callable | None = None
    old_sandwich: Callable | None = None

    def sandwich_kernel(self, lk, n_b: int, ctx, mid: Damping | None):
        if self.sandwich is not None:
            return self.sandwich(lk, n_b, ctx, mid)
        return tikhonov_sandwich(self.inverse, lk, n_b, ctx, mid)


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------
def block(lk, rows: slice, cols: slice):
    """The layer kernels between the sample ranges ``rows`` and ``cols`` of a square R × R LayerKernels
    (features sliced alike)."""
    from ..kernels import LayerKernels

    c = lk.n_outputs_per_sample

    def expanded(s: slice) -> slice:
        return slice(None if s.start is None else s.start * c, None if s.stop is None else s.stop * c)

    er, ec = expanded(rows), expanded(cols)

    def feats(fs, s):
        return None if fs is None else tuple(f[s] for f in fs)

    return LayerKernels(lk.fwd[:, rows, cols], lk.bwd[:, er, ec], lk.ntk[:, er, ec], lk.out_dim, lk.output_diagonal,
                        feats(lk.deltas, rows), feats(lk.deltas2, cols), feats(lk.inputs, rows),
                        feats(lk.inputs2, cols), lk.whitened, lk.finite)


def task_and_all(lk, n_b: int):
    """(B × B, R × B) kernels: the method's training kernels and every row against B."""
    return block(lk, slice(0, n_b), slice(0, n_b)), block(lk, slice(None), slice(0, n_b))


def pad_rows(x, total: int):
    """x (m, ...) placed in the first m of ``total`` rows (zeros below): coefficients on B within R."""
    return jnp.concatenate([x, jnp.zeros((total - x.shape[0],) + x.shape[1:], x.dtype)])


def push_through(K, nb: int, shift, rcond=None, E=None):
    """K − K_RB E (EᵀK_BB E + shift)⁻¹ Eᵀ K_BR for a PSD R × R Gram K whose first ``nb`` rows are B
    (E = I when None): ρ·N times the two-sided kernel of ρ + ΦᵀEEᵀΦ/N (module docstring)."""
    K_RB = K[:, :nb] if E is None else K[:, :nb] @ E
    inner = K[:nb, :nb] if E is None else E.T @ K[:nb, :nb] @ E
    return K - linalg.solve_right(K_RB, inner, shift, rcond) @ K_RB.T


def push_through_coefficients(K, nb: int, w, shift, rcond=None, E=None):
    """Coefficients c on R with (ρ + ΦᵀEEᵀΦ/N)⁻¹Φ_Rᵀw = Φ_Rᵀc/ρ: c = w − pad(E(EᵀK_BBE + shift)⁻¹EᵀK_BR w)."""
    rhs = K[:nb] @ w if E is None else E.T @ (K[:nb] @ w)
    inner = K[:nb, :nb] if E is None else E.T @ K[:nb, :nb] @ E
    sol = linalg.solve(inner, rhs, shift, rcond)
    return w - pad_rows(sol if E is None else E @ sol, w.shape[0])


# ---------------------------------------------------------------------------------------------
# defaults
# ---------------------------------------------------------------------------------------------
def tikhonov_sandwich(inverse, lk, n_b: int, ctx, mid: Damping | None):
    """J M_b⁻¹ M_mid M_b⁻¹ Jᵀ/N for M = G + ρI from the ρ-derivative of ``inverse`` at ρ_b = ctx's damping:
    M_b⁻² = −∂_ρ M⁻¹ (mid None: the Euclidean metric), else M_b⁻¹ + (ρ_mid − ρ_b)M_b⁻²."""
    rho = ctx.damping.value

    def at(value):
        return inverse(lk, n_b, ctx.replace(damping=Damping(value, True)))

    K, dK = jax.jvp(at, (rho,), (jnp.ones_like(rho),))
    return -dK if mid is None else K - (mid.value - rho) * dK


def plus_damped(theta, n: int, ctx, G_part):
    """J_X G J_Yᵀ/N + ρ Θ_XY/N: the forward kernel of a tikhonov metric from its G part."""
    return G_part + ctx.damping.value * theta / n


def sample_rows(theta, lk, n_b: int) -> int:
    """Rows of B in a kernel ``theta`` over R (output-diagonal N×N or full N·k square)."""
    return n_b * (theta.shape[0] // lk.fwd.shape[1])


def exact_fisher_old_sandwich(K, S, old_rows, rho, n_b: int, n_old: int):
    """S_o for M_o = J̃_OᵀJ̃_O/N_O + ρI, the exact Fisher of the previous task's samples O: with M⁻¹J_Oᵀ = the
    columns O of N_B·K, J M⁻¹M_oM⁻¹Jᵀ/N_B = ρS + (N_B/N_O) K_{·O}K_{O·}."""
    if old_rows is None:
        raise ValueError("projection 'ong_old_factors' needs the previous task's samples (its metric M_o)")
    return rho * S + (n_b / n_old) * K[:, old_rows] @ K[old_rows, :]


def woodbury_metric(theta_of, factor_of=None) -> Metric:
    """The metric of G = J_BᵀEEᵀJ_B/N + ρI, all from the R × R NTK ``theta_of(lk)`` and the per-sample
    factor ``factor_of(ctx)`` (E; None: E = I, exact NGD):

        inverse   [Θ − Θ_RB E(EᵀΘ_BBE + Nρ)⁻¹EᵀΘ_BR]/(Nρ),
        forward   Θ_RB EEᵀ Θ_BR/N² + ρΘ/N,
        direction J_Rᵀc,  c = [w − pad(E(EᵀΘ_BBE + Nρ)⁻¹EᵀΘ_BR w)]/ρ.
    """

    def parts(lk, n_b, ctx):
        theta = theta_of(lk)
        return theta, sample_rows(theta, lk, n_b), None if factor_of is None else factor_of(ctx)

    def inverse(lk, n_b, ctx):
        theta, nb, E = parts(lk, n_b, ctx)
        shift = ctx.damping.shift("tikhonov", ctx.n)
        return push_through(theta, nb, shift, ctx.rcond, E) / shift

    def forward(lk, n_b, ctx):
        theta, nb, E = parts(lk, n_b, ctx)
        T = theta[:, :nb] if E is None else theta[:, :nb] @ E
        return plus_damped(theta, ctx.n, ctx, T @ T.T / ctx.n**2)

    def direction(lk, n_b, ctx, w):
        theta, nb, E = parts(lk, n_b, ctx)
        shift = ctx.damping.shift("tikhonov", ctx.n)
        return jt_all(lk, push_through_coefficients(theta, nb, w, shift, ctx.rcond, E) / ctx.damping.value)

    # E = I: G is the exact Fisher of the samples, so the previous task's metric has the closed form above
    return Metric(inverse, forward, direction, old_sandwich=exact_fisher_old_sandwich if factor_of is None else None)


def jt_all(lk, coefficients) -> list:
    """Σ_rows c_r J_{l,r}ᵀ per layer (one coefficient vector, or one per layer)."""
    per_layer = isinstance(coefficients, (list, tuple))
    return [linalg.jt(H, d, coefficients[l] if per_layer else coefficients)
            for l, (H, d) in enumerate(zip(lk.inputs, lk.deltas))]


__all__ = ["exact_fisher_old_sandwich", "Metric", "block", "jt_all", "pad_rows", "plus_damped", "push_through",
           "push_through_coefficients", "sample_rows", "task_and_all", "tikhonov_sandwich", "woodbury_metric"]
