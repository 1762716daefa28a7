"""Exact natural gradient: G = F = JᵀJ/N (THEORY.md claim 1).

Push-through identity: J (JᵀJ/N + ρI)⁻¹ Jᵀ/N = JJᵀ (JJᵀ + NρI)⁻¹, hence

    Θ_F(x', X) = Θ(x', X) (Θ(X, X) + NρI)⁻¹,    Θ_F(X, X) = Θ(Θ + Nρ)⁻¹ → I  (rank Θ = NC).
"""
from __future__ import annotations

from . import _linalg
from .base import Method, MethodKernel, register, test_kernel_or_none


def exact_kernel(train, test, *, n, damping, rcond=None, **_) -> MethodKernel:
    theta = train.total_ntk
    shift = n * damping
    return MethodKernel(
        _linalg.damped_projector(theta, shift, rcond),
        test_kernel_or_none(test, lambda t: _linalg.damped_solve_right(t.total_ntk, theta, shift, rcond)),
    )


EXACT = register(Method("exact", exact_kernel, "exact natural gradient, F = JᵀJ/N"))
