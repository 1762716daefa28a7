"""Gradient descent: G = I, so Θ_GD(x', X) = Θ(x', X)/N and Δθ = −η J̃ᵀu/N (THEORY.md "Setup").

Damping is ignored (rule "none"). Its metric is M = I: every two-sided kernel is Θ_XY/N and the
parameter-space direction of coefficients w is J_Rᵀw (:mod:`._metric`). Theory: Θ/N is isotropic only if the NTK is, which it is not for
generic data; gd is the baseline every NGD method is compared with, and the negative control of the
isotropy checks. Step rule: 1/λ_max(Θ/N) (the largest stable constant step is 2/λ_max).
"""
from __future__ import annotations

from .. import linalg
from ._metric import Metric, jt_all
from ._cost import Cost, features
from .base import Method, MethodKernel, Prediction, register, test_kernel_or_none


def kernel(train, test, ctx) -> MethodKernel:
    """Θ/N with Θ = Σ_l Θ_l the empirical (or infinite-width) NTK."""
    return MethodKernel(train.total_ntk / ctx.n, test_kernel_or_none(test, lambda t: t.total_ntk / ctx.n))


def direction(train, ctx) -> list:
    """J̃ᵀu/N per layer: H̃ᵀV/N (the gradient itself)."""
    return [linalg.jt(H, d, ctx.residual) / ctx.n for H, d in zip(train.inputs, train.deltas)]


def predict(lk, ctx) -> Prediction:
    return Prediction("gd", None, False, (), note="gradient descent: Θ/N, isotropic only if the NTK is")


def _ntk(lk, n_b, ctx, *unused):
    """M = I: J_X M^{±1} J_Yᵀ/N = Θ_XY/N for every power (and every sandwich)."""
    return lk.total_ntk / ctx.n


#: M = M_o = I: the previous task's metric is the current one, S_o = S
METRIC = Metric(_ntk, _ntk, lambda lk, n_b, ctx, w: jt_all(lk, w), _ntk,
                old_sandwich=lambda K, S, old_rows, rho, n_b, n_old: S)

GD = register(Method("gd", "plain gradient descent (for contrast): Θ/N", kernel, direction, predict,
                     damping_rule="none", step_rule="1/lambda_max", metric=METRIC,
                     cost=lambda size, _: Cost(features(size), features(size))))
