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

Between any rows (:mod:`._metric`; s = √ρ > 0): the Kronecker structure splits every two-sided kernel
into a forward and a backward factor, each a push-through on its own Gram,

    a(s) = h̃_X(A + s)⁻¹h̃_Yᵀ = [K^H_XY − K^H_XB(K^H_BB + Ns)⁻¹K^H_BY]/s,
    b(s) = δ_X(B + s)⁻¹δ_Yᵀ = [K^Δ_XY − K^Δ_XB(K^Δ_BB + Ns_l s)⁻¹K^Δ_BY]/s,
    J_{l,X}M_l⁻¹J_{l,Y}ᵀ/N = (a ⊗ 1) ⊙ b / N,
    J_{l,X}M_lJ_{l,Y}ᵀ/N = ([K^H_XBK^H_BY/N + sK^H_XY] ⊗ 1) ⊙ [K^Δ_XBK^Δ_BY/(Ns_l) + sK^Δ_XY] / N;

the sandwich M_b⁻¹M_midM_b⁻¹ is factor by factor (A + s_b)⁻¹(A + s_mid)(A + s_b)⁻¹ = a(s_b) − (s_mid − s_b)a'(s_b)
(a Euclidean middle: −a'(s_b)), and the direction is (A + s)⁻¹[H̃_Rᵀ W Δ_R](B + s)⁻¹ = H̃_RᵀC_H W C_ΔᵀΔ_R with the
push-through coefficients C_H, C_Δ of the two factors (W places the coefficients w_{n,c} of row (n, c)).
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import _validate, linalg
import jax

from . import _conditions
from ..factored import kfac as factored_kfac
from ._cost import Cost, eigh, features, matmul, per_layer
from ._metric import Metric, push_through, push_through_coefficients
from .base import Method, MethodKernel, Option, register, test_kernel_or_none, verdict

CONVENTIONS = ("common", "paper")
ROUTES = ("auto", "factor", "gram")


def readout_scale(layer: int, depth: int, n: int, convention: str) -> float:
    """s_l: N for the readout in the "paper" convention, else 1."""
    return float(n) if (convention == "paper" and layer == depth - 1) else 1.0


def kernel(train, test, ctx) -> MethodKernel:
    n, c, depth = ctx.n, train.n_outputs_per_sample, train.depth
    convention = ctx.option("kfac_readout")

    def factors(l):  # each factor's Gram factorised once, for the train and the test kernel
        s = readout_scale(l, depth, n, convention)
        return (linalg.damped_inverse_factors(train.fwd[l], ctx.damping.shift("factored", n), ctx.rcond,
                                              ctx.damping.positive),
                linalg.damped_inverse_factors(train.bwd[l], ctx.damping.shift("factored", n, s), ctx.rcond,
                                              ctx.damping.positive), s)

    layers = [factors(l) for l in range(depth)]

    def layer_term(l, cross):
        fa, fb, s = layers[l]
        a = n * linalg.apply_factors(cross.fwd[l], fa)
        b = n * s * linalg.apply_factors(cross.bwd[l], fb)
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


def cost(size, options) -> Cost:
    """Per layer the factor solves: kernel K^H (N) and K^Δ (R) solves against the training Grams; update the
    smaller of the Gram and the d×d (m×m) route for each factor (``kfac_route="auto"``)."""
    n, r = size.n, size.rows

    def kernel(d, m):
        return eigh(n) + eigh(r) + 2 * matmul(n, n, n) + 2 * matmul(r, r, r)

    def update(d, m):
        return eigh(min(n, d)) + eigh(min(r, m)) + matmul(d, n, r) + matmul(d, r, m)

    return Cost(features(size) + per_layer(size, kernel), features(size) + per_layer(size, update))


# ---------------------------------------------------------------------------------------------
# the metric between any rows (module docstring)
# ---------------------------------------------------------------------------------------------
def _factor_inverses(lk, n_b, ctx, l):
    """(a(s), b(s)) as functions of s = √ρ: the two factors' two-sided kernels of layer l."""
    n, c = ctx.n, lk.n_outputs_per_sample
    scale = readout_scale(l, lk.depth, n, ctx.option("kfac_readout"))

    def a(root):
        return push_through(lk.fwd[l], n_b, n * root, ctx.rcond) / root

    def b(root):
        return push_through(lk.bwd[l], n_b * c, n * scale * root, ctx.rcond) / root

    return a, b


def _layer(lk, ctx, a, b):
    return linalg.expand_outputs(a, lk.n_outputs_per_sample) * b / ctx.n


def metric_inverse(lk, n_b, ctx):
    root = jnp.sqrt(ctx.damping.value)
    out = 0.0
    for l in range(lk.depth):
        a, b = _factor_inverses(lk, n_b, ctx, l)
        out = out + _layer(lk, ctx, a(root), b(root))
    return out


def metric_forward(lk, n_b, ctx):
    n, c, root = ctx.n, lk.n_outputs_per_sample, jnp.sqrt(ctx.damping.value)
    out = 0.0
    for l in range(lk.depth):
        scale = readout_scale(l, lk.depth, n, ctx.option("kfac_readout"))
        H, D = lk.fwd[l][:, :n_b], lk.bwd[l][:, : n_b * c]
        out = out + _layer(lk, ctx, H @ H.T / n + root * lk.fwd[l], D @ D.T / (n * scale) + root * lk.bwd[l])
    return out


def metric_sandwich(lk, n_b, ctx, mid):
    """Factor by factor (A + s_b)⁻¹(A + s_mid)(A + s_b)⁻¹ (module docstring); ``mid`` None: the identity."""
    root = jnp.sqrt(ctx.damping.value)
    out = 0.0
    for l in range(lk.depth):
        factors = []
        for f in _factor_inverses(lk, n_b, ctx, l):
            value, slope = jax.jvp(f, (root,), (jnp.ones_like(root),))
            factors.append(-slope if mid is None else value - (jnp.sqrt(mid.value) - root) * slope)
        out = out + _layer(lk, ctx, *factors)
    return out


def metric_direction(lk, n_b, ctx, w):
    n, root = ctx.n, jnp.sqrt(ctx.damping.value)
    out = []
    for l, (H, delta) in enumerate(zip(lk.inputs, lk.deltas)):
        rows, k = delta.shape[0], delta.shape[1]
        scale = readout_scale(l, lk.depth, n, ctx.option("kfac_readout"))
        C_H = push_through_coefficients(lk.fwd[l], n_b, jnp.eye(rows), n * root, ctx.rcond) / root
        C_D = push_through_coefficients(lk.bwd[l], n_b * k, jnp.eye(rows * k), n * scale * root, ctx.rcond) / root
        mixed = jnp.einsum("nc,ncm->nm", jnp.reshape(w, (rows, k)), C_D.T.reshape(rows, k, rows * k))
        out.append(H.T @ (C_H @ mixed) @ delta.reshape(rows * k, -1))
    return out


METRIC = Metric(metric_inverse, metric_forward, metric_direction, metric_sandwich)


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
                       kernel, direction, predict, damping_rule="factored", layerwise=True, options=OPTIONS,
                       metric=METRIC, cost=cost, factored=factored_kfac.make(readout_scale)))
