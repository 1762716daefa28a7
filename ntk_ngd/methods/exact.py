"""Exact natural gradient: G = F = J̃ᵀJ̃/N (THEORY.md claim 1). Damping rule "tikhonov" (F + ρI).

Push-through identity: J (JᵀJ/N + ρI)⁻¹ Jᵀ/N = JJᵀ (JJᵀ + NρI)⁻¹, hence

    Θ_F(x', X) = Θ(x', X) (Θ(X, X) + NρI)⁻¹,    Θ_F(X, X) = Θ(Θ + Nρ)⁻¹ → I  (rank Θ = N·k),
    Δθ = −η J̃ᵀ(Θ + NρI)⁻¹u.

Between any rows (:mod:`._metric`, ρ > 0): J_X(F + ρ)⁻¹J_Yᵀ/N = [Θ_XY − Θ_XB(Θ_BB + Nρ)⁻¹Θ_BY]/(Nρ) and
J_X(F + ρ)J_Yᵀ/N = Θ_XBΘ_BY/N² + ρΘ_XY/N.
"""
from __future__ import annotations

from .. import linalg
from . import _conditions
from ._cost import gram_solve_cost
from ._metric import woodbury_metric
from .base import Method, MethodKernel, register, test_kernel_or_none, verdict


def _shift(ctx):
    return ctx.damping.shift("tikhonov", ctx.n)


def kernel(train, test, ctx) -> MethodKernel:
    theta = train.total_ntk
    factors = linalg.damped_inverse_factors(theta, _shift(ctx), ctx.rcond, ctx.damping.positive)  # once: train and test
    return MethodKernel(linalg.apply_factors(theta, factors),
                        test_kernel_or_none(test, lambda t: linalg.apply_factors(t.total_ntk, factors)))


def direction(train, ctx) -> list:
    u = linalg.solve(train.total_ntk, ctx.residual, _shift(ctx), ctx.rcond)
    return [linalg.jt(H, d, u) for H, d in zip(train.inputs, train.deltas)]


def predict(lk, ctx):
    rows = lk.ntk.shape[1]
    cond = (_conditions.full_rank("ntk", lk.total_ntk, rows, "the NTK", ctx.rcond, _conditions.rows_name(lk)),
            _conditions.undamped(ctx.damping))
    return verdict("exact", 1.0, cond)


EXACT = register(Method("exact", "exact natural gradient, F = JᵀJ/N", kernel, direction, predict,
                        damping_rule="tikhonov", metric=woodbury_metric(lambda lk: lk.total_ntk),
                        cost=gram_solve_cost(global_solves=1)))
