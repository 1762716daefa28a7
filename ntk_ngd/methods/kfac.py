"""K-FAC: F_l ≈ A_l ⊗ B_l, block-diagonal over layers (THEORY.md claim 3).

A_l = (1/N) Σ_n h̃_n h̃_nᵀ = H̃ᵀH̃/N and B_l = (1/(N s_l)) Σ_{n,c} δ_{n,c}δ_{n,c}ᵀ = ΔᵀΔ/(N s_l), with
s_l = 1 except s_L = N for the readout layer in the ``"paper"`` convention. Damping is factored:
(A_l + √ρ I) ⊗ (B_l + √ρ I). Since J_l's row (n, c) is h̃_n ⊗ δ_{n,c}, the push-through identity
Φ(ΦᵀΦ/a + λI)⁻¹Φᵀ = a·K(K + aλI)⁻¹ (K = ΦΦᵀ) applied to each factor gives

    Θ_l(x', X) = [N K^H_l(x', X)(K^H_l + N√ρ)⁻¹ ⊗ 1_{C×C}] ⊙ [N s_l K^Δ_l(x', X)(K^Δ_l + N s_l √ρ)⁻¹] / N,

and Θ_kfac = Σ_l Θ_l. At ρ = 0 both brackets are N·(projectors): a hidden layer whose K^H_l and
K^Δ_l have full rank contributes N·I; the readout's K^Δ_L = 1_{N×N} ⊗ I_C has projector
(11ᵀ/N) ⊗ I_C, so it contributes I ("common": one learning rate for all layers, α = N(L−1)+1) or
N·I ("paper": the paper code's 1/N-rescaled readout factor, α = N·L). The first layer's
K^H_1 = X̃X̃ᵀ has rank ≤ D+1: for D+1 < N it contributes N·diag(leverage scores of X̃) and the
kernel is diagonal but not isotropic; :func:`ntk_ngd.preprocessing.forster_transform` repairs it.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from . import _linalg
from .base import Method, MethodKernel, register, test_kernel_or_none

CONVENTIONS = ("common", "paper")


def _backward_scale(layer: int, depth: int, n: int, convention: str) -> float:
    """N·s_l: N for every layer, N² for the readout in the "paper" convention."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown kfac_readout {convention!r}; choose one of: {', '.join(CONVENTIONS)}")
    return float(n * n) if (convention == "paper" and layer == depth - 1) else float(n)


def kfac_kernel(train, test, *, n, damping, kfac_readout="common", rcond=None, **_) -> MethodKernel:
    root = math.sqrt(damping)
    c = train.n_outputs_per_sample
    scales = [_backward_scale(l, train.depth, n, kfac_readout) for l in range(train.depth)]

    def layer_term(fwd_cross, bwd_cross, fwd, bwd, scale):
        a = n * _linalg.damped_solve_right(fwd_cross, fwd, n * root, rcond)
        b = scale * _linalg.damped_solve_right(bwd_cross, bwd, scale * root, rcond)
        a = jnp.repeat(jnp.repeat(a, c, axis=0), c, axis=1)
        return a * b / n

    def total(cross):
        return sum(
            layer_term(cross.fwd[l], cross.bwd[l], train.fwd[l], train.bwd[l], scales[l]) for l in range(train.depth)
        )

    return MethodKernel(total(train), test_kernel_or_none(test, total))


KFAC = register(
    Method(
        "kfac",
        kfac_kernel,
        "K-FAC, (A+√ρ)⊗(B+√ρ) per layer; kfac_readout='common' (α=N(L−1)+1) or 'paper' (α=NL)",
        options=("kfac_readout",),
    )
)
