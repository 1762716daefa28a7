"""K-FAC: F_l ≈ A_l ⊗ B_l, block-diagonal over layers (THEORY.md claim 3); rule "factored".

A_l = (1/N) Σ_n h̃_n h̃_nᵀ = H̃ᵀH̃/N and B_l = (1/(N s_l)) Σ_{n,c} δ̃_{n,c}δ̃_{n,c}ᵀ = Δ̃ᵀΔ̃/(N s_l) (δ̃ the
loss-whitened backward signals: for cross-entropy B_l = Σ_n Δ_nᵀΛ_nΔ_n/(N s_l)), with s_l = 1 except
s_L = N for the readout in the ``"paper"`` convention. Damping is factored: (A_l + √ρ I) ⊗ (B_l + √ρ I).
Since J_l's row (n, c) is h̃_n ⊗ δ̃_{n,c}, push-through on each factor gives

    Θ_l(x', X) = [N K^H_l(x', X)(K^H_l + N√ρ)⁻¹ ⊗ 1] ⊙ [N s_l K^Δ_l(x', X)(K^Δ_l + N s_l √ρ)⁻¹] / N,

and Θ_kfac = Σ_l Θ_l. At ρ = 0 both brackets are N·(projectors): a hidden layer whose K^H_l and K^Δ_l
have full rank contributes N·I; the readout's K^Δ_L = 1_{N×N} ⊗ B̄ has projector (11ᵀ/N) ⊗ I, so it
contributes I ("common": one learning rate for all layers, α = N(L−1)+1) or N·I ("paper": the paper
code's 1/N-rescaled readout factor, α = N·L). For cross-entropy the readout blocks are R_nR_mᵀ, equal
only when every Λ_n is (f = 0): otherwise the readout term is not isotropic. The first layer's
K^H_1 = X̃X̃ᵀ has rank ≤ D+1: for D+1 < N it contributes N·diag(leverage scores of X̃) and the kernel is
diagonal but not isotropic; :func:`ntk_ngd.preprocessing.forster_transform` repairs it.

Update: ΔW̃_l = −η (A_l + √ρ)⁻¹ ∇_l (B_l + √ρ)⁻¹ with ∇_l = H̃ᵀV/N, V[n] = Σ_c u_{nc}δ̃_{n,c}. Each factor
either explicitly ((fan_in+1)² and fan_out² eigendecompositions) or by push-through on the Grams:
(A + √ρ)⁻¹H̃ᵀ/N = H̃ᵀ(K^H + N√ρ)⁻¹ and V(B + √ρ)⁻¹ = a·R̃ᵀ(K^Δ + a√ρ)⁻¹Δ̃ with a = N s_l.
``kfac_route="auto"`` (default) takes the Gram route for a factor larger than N (A) or N·k (B).
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import _validate, linalg
from . import _conditions
from .base import Method, MethodKernel, Option, register, test_kernel_or_none, verdict

CONVENTIONS = ("common", "paper")
ROUTES = ("auto", "factor", "gram")


def readout_scale(layer: int, depth: int, n: int, convention: str) -> float:
    """s_l: N for the readout in the "paper" convention, else 1."""
    return float(n) if (convention == "paper" and layer == depth - 1) else 1.0


def kernel(train, test, ctx) -> MethodKernel:
    n, c, depth = ctx.n, train.n_outputs_per_sample, train.depth
    convention = ctx.option("kfac_readout")

    def layer_term(l, cross):
        s = readout_scale(l, depth, n, convention)
        a = n * linalg.solve_right(cross.fwd[l], train.fwd[l], ctx.damping.shift("factored", n), ctx.rcond)
        b = n * s * linalg.solve_right(cross.bwd[l], train.bwd[l], ctx.damping.shift("factored", n, s), ctx.rcond)
        return linalg.expand_outputs(a, c) * b / n

    def total(cross):
        return sum(layer_term(l, cross) for l in range(depth))

    return MethodKernel(total(train), test_kernel_or_none(test, total))


def direction(train, ctx) -> list:
    n, depth = ctx.n, len(train.inputs)
    convention, route = ctx.option("kfac_readout"), ctx.option("kfac_route")
    root = jnp.sqrt(ctx.damping.value)
    out = []
    for l, (H, delta) in enumerate(zip(train.inputs, train.deltas)):
        k = delta.shape[1]
        flat = delta.reshape(-1, delta.shape[-1])
        s = readout_scale(l, depth, n, convention)
        gram_a = route == "gram" or (route == "auto" and H.shape[1] > n)
        gram_b = route == "gram" or (route == "auto" and flat.shape[1] > n * k)
        if gram_a:  # (A + √ρ)⁻¹H̃ᵀ/N = H̃ᵀ(K^H + N√ρ)⁻¹
            left = linalg.solve(H @ H.T, H, ctx.damping.shift("factored", n), ctx.rcond).T
        else:
            left = linalg.solve(H.T @ H / n, H.T / n, root, ctx.rcond)
        if gram_b:  # V(B + √ρ)⁻¹ = a R̃ᵀ(K^Δ + a√ρ)⁻¹Δ̃
            mixed = linalg.solve(flat @ flat.T, flat, ctx.damping.shift("factored", n, s), ctx.rcond)
            right = n * s * linalg.weighted_sum(ctx.residual, mixed.reshape(delta.shape))
        else:
            V = linalg.weighted_sum(ctx.residual, delta)
            right = linalg.solve(flat.T @ flat / (n * s), V.T, root, ctx.rcond).T
        out.append(left @ right)
    return out


def predict(lk, ctx):
    """α = N(L−1)+1 ("common") or N·L ("paper") when every K^H_l has rank N, every hidden K^Δ_l full rank,
    the readout's per-sample backward blocks are equal, and ρ = 0."""
    n, L = lk.fwd.shape[1], lk.depth
    cond = []
    for l in range(L):
        cond += _conditions.input_grams_full_rank(lk, ctx.rcond, [l])
        if l < L - 1:
            cond += _conditions.backward_grams_full_rank(lk, ctx.rcond, [l])
    cond.append(_conditions.equal_readout_blocks(lk))
    alpha = float(n * L) if ctx.option("kfac_readout") == "paper" else float(n * (L - 1) + 1)
    return verdict("kfac", alpha, (*cond, _conditions.undamped(ctx.damping)))


OPTIONS = (
    Option("kfac_readout", "common", lambda v, _: _validate.choice("kfac_readout", v, CONVENTIONS),
           "'common' (one learning rate, α = N(L−1)+1) or 'paper' (readout B_L/N, α = N·L)"),
    Option("kfac_route", "auto", lambda v, _: _validate.choice("kfac_route", v, ROUTES),
           "parameter updates: explicit factors, Gram push-through, or auto (the smaller)"),
)

KFAC = register(Method("kfac", "K-FAC, (A+√ρ)⊗(B+√ρ) per layer; kfac_readout='common' (α=N(L−1)+1) or 'paper' (α=NL)",
                       kernel, direction, predict, damping_rule="factored", layerwise=True, options=OPTIONS))
