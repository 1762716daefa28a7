"""Gradient descent: G = I, so Θ_GD(x', X) = Θ(x', X)/N (THEORY.md "Setup")."""
from __future__ import annotations

from .base import Method, MethodKernel, register, test_kernel_or_none


def gd_kernel(train, test, *, n, **_) -> MethodKernel:
    """Θ_GD = Θ/N with Θ = Σ_l Θ_l the empirical (or infinite-width) NTK."""
    return MethodKernel(train.total_ntk / n, test_kernel_or_none(test, lambda t: t.total_ntk / n))


GD = register(Method("gd", gd_kernel, "plain gradient descent (for contrast): Θ/N"))
