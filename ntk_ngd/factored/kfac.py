"""K-FAC in parameter space: F_l ≈ A_l ⊗ B_l, B_l = G_l/s_l (s_L = N for ``kfac_readout="paper"``, else 1), with
the damped factors inverted once per refresh (Cholesky at ρ > 0, an eigendecomposition at ρ = 0; O(d³ + m³) a layer):

    W̃_l = (A_l + s_A I)⁻¹ ∇_l (B_l + s_B I)⁻¹,   (s_A, s_B) = (√ρ, √ρ) (the Gram form's rule) or (π√ρ, √ρ/π).

At ρ = 0 the factors' pseudo-inverses: ∇_l lies in span{h̃} ⊗ span{δ̃}, where (A⁺ ⊗ B⁺) is what the Gram form's
push-through gives, so the two forms agree at ρ = 0 as well.

The forward stage (``FactoredForm.forward``) returns the damped factors themselves, with the same readout scale
B_l = G_l/s_l and the same shifts, so that ``apply`` gives the metric's product

    (M∇)_l = (A_l + s_A I) ∇_l (B_l + s_B I),   i.e. M_l = (A_l + s_A I) ⊗ (B_l + s_B I) on vec_row(∇_l),

and forward ∘ inverse is the identity for ρ > 0 (both factors positive definite).
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import linalg
from .damping import factor_shifts
from .features import kron_factors
from .form import FactoredForm


def damped_inverse(K, shift, rcond=None, positive: bool = False):
    """(K + shift·I)⁻¹ of a symmetric factor: one Cholesky factorisation when ``positive`` (static: ρ > 0) and the
    condition bound of :func:`ntk_ngd.linalg.damped_inverse_factors` allows, else one eigendecomposition (the
    pseudo-inverse at shift 0)."""
    Q, R = linalg.damped_inverse_factors(K, shift, rcond, positive)
    return Q @ R.T


def statistics(H, delta, ctx):
    return kron_factors(H, delta)


def make(readout_scale) -> FactoredForm:
    """K-FAC's factored form; ``readout_scale(l, depth, n, convention)`` is s_l (:func:`ntk_ngd.methods.kfac.readout_scale`)."""

    def factors(stats, ctx, settings, l):
        """(A_l, B_l = G_l/s_l, s_A, s_B): the factors and shifts both ``inverse`` and ``forward`` use."""
        A, G = stats
        B = G / readout_scale(l, ctx.net.depth, ctx.n, ctx.option("kfac_readout"))
        return (A, B, *factor_shifts(A, B, ctx.damping, settings.factored_damping))

    def inverse(stats, H, delta, ctx, settings, l):
        A, B, sa, sb = factors(stats, ctx, settings, l)
        positive = ctx.damping.positive
        return damped_inverse(A, sa, ctx.rcond, positive), damped_inverse(B, sb, ctx.rcond, positive)

    def forward(stats, H, delta, ctx, settings, l):
        A, B, sa, sb = factors(stats, ctx, settings, l)
        return A + sa * jnp.eye(A.shape[0], dtype=A.dtype), B + sb * jnp.eye(B.shape[0], dtype=B.dtype)

    def apply(inv, grad, ctx, settings):
        return inv[0] @ grad @ inv[1]

    return FactoredForm(statistics, inverse, apply, splits=("rule", "pi"), forward=forward)


__all__ = ["damped_inverse", "make", "statistics"]
