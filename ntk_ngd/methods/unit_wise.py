"""Unit-wise Fisher: one block per output unit j of each layer l (THEORY.md claim 4); rule "tikhonov".

Unit j of layer l owns column j of W̃_l (incoming weights and bias); its Jacobian rows are
J_{l,j}[(n, c)] = δ_{l,j}(x_n, c) h̃_n, so its Gram is K_{l,j} = (K^H_l ⊗ 1_{k×k}) ⊙ d_j d_jᵀ with
d_j = δ_{l,j} flattened over (n, c). Each block contributes J_{l,j}(J_{l,j}ᵀJ_{l,j}/N + ρ)⁻¹J_{l,j}ᵀ/N:

    Θ_uw(x', X) = Σ_{l,j} K_{l,j}(x', X) (K_{l,j} + NρI)⁻¹,     Δw̃_{l,j} = −η J_{l,j}ᵀ(K_{l,j} + Nρ)⁻¹u.

At ρ = 0 each term is the projector onto range(diag(d_j) H̃_l); with K^H_l of full rank N and
k = 1 it is diag(1[δ_{l,j}(x_n) ≠ 0]), so Θ_uw = diag(a_n) + I with a_n the number of hidden units
whose backward signal is non-zero at x_n (the readout unit gives I).

Infinite width: none. The kernel grows with the width, Θ_uw ≈ diag(Σ_{l<L} p_l(x_n) M_l) + I with
p_l(x_n) = P_{z ~ N(0, q_l(x_n))}(φ'(z) ≠ 0) at the NNGP variance q_l (ReLU 1/2, smooth activations 1;
:func:`active_fraction` by Gauss–Hermite quadrature), so the method is ``finite_width_only``: that leading
order is a *theory* statement, judged only by finite-width measurements extrapolated in width (figure
unit_wise), never by a kernel built from the same formula.

Between any rows (continual learning; finite width, ρ > 0), unit by unit with K_j(X, Y) = (K^H_XY ⊗ 1) ⊙ d_{X,j}d_{Y,j}ᵀ:

    J_X(G + ρ)⁻¹J_Yᵀ/N = [Θ_XY − Σ_{l,j} K_j(X, B)(K_j(B, B) + Nρ)⁻¹K_j(B, Y)]/(Nρ),
    J_X(G + ρ)J_Yᵀ/N   = Σ_{l,j} K_j(X, B)K_j(B, Y)/N² + ρΘ_XY/N,
    column j of (G + ρ)⁻¹J_Rᵀw = H̃_Rᵀ[v_j − pad(Σ_c q_{n,c} δ_{B,n,c,j})]/ρ,  q = (K_j(B, B) + Nρ)⁻¹K_j(B, R)w,

with v_j[n] = Σ_c w_{n,c}δ_{n,c,j}; units are mapped in chunks of ``unit_chunk`` (bounded memory).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate, linalg
from . import _conditions
from ._cost import Cost, eigh, features, matmul, per_layer, svd
from ._metric import Metric, pad_rows
from .base import Condition, Method, MethodKernel, Option, register, verdict

#: Gauss–Hermite nodes for the active fraction: an even number (no node at z = 0, where φ' of a
#: kinked activation is a convention); 64 nodes resolve the indicator's half-line exactly by symmetry.
QUADRATURE_NODES = 64

_UNIT_CHUNK = 64


def _shift(ctx):
    return ctx.damping.shift("tikhonov", ctx.n)


@jax.jit
def _units_projection(features_cross, features, d_cross, d, shift, positive):
    """Σ_j K_j(x', X)(K_j + shift)⁺ over a chunk of units (columns of d).

    K_j = A_j A_jᵀ with A_j = diag(d_j)·U (U the forward features), so the projector comes from
    the SVD A_j = P S Wᵀ: K_j(K_j + ε)⁺ = P diag(s²/(s² + ε)) Pᵀ and, for test rows,
    diag(d'_j) U(x') W diag(s/(s² + ε)) Pᵀ. An SVD resolves A_j to eps·cond(A_j), where the
    eigendecomposition of its Gram would square cond(A_j) (|δ_j| can span 1e-6 across samples).
    """

    def one(dc, dt):
        P, scale, Wt = _svd_scale(dt[:, None] * features, shift, positive)
        return ((dc[:, None] * features_cross) @ Wt.T * scale) @ P.T

    return jnp.sum(jax.vmap(one, in_axes=(1, 1))(d_cross, d), axis=0)


def _forward_coordinates(fwd, fwd_cross, k: int):
    """(F, F(x')): the rows' coordinates in an orthonormal basis of the span of the layer inputs, from the
    N×N forward Gram (K^H = FFᵀ), expanded to the k rows of each sample. Factoring K^H ⊗ 1_{k×k} instead
    would give a sample's k rows coordinates differing by rounding (~1e-15), enough to lift an exactly
    rank-one unit block above the cut-off."""
    F, inverse = linalg.gram_factor(fwd)
    return linalg.expand_outputs_rows(F, k), linalg.expand_outputs_rows(fwd_cross @ inverse, k), inverse


def _finite_kernel(cross, train, ctx):
    k = train.n_outputs_per_sample
    total = 0.0
    for l in range(train.depth):
        features, features_cross, _ = _forward_coordinates(train.fwd[l], cross.fwd[l], k)
        d = cross.deltas2[l].reshape(-1, cross.deltas2[l].shape[-1])  # δ(X): (N·k, M_l)
        d_cross = cross.deltas[l].reshape(-1, d.shape[-1])  # δ(x'): (N'·k, M_l)
        for start in range(0, d.shape[1], _UNIT_CHUNK):
            sl = slice(start, start + _UNIT_CHUNK)
            total = total + _units_projection(features_cross, features, d_cross[:, sl], d[:, sl], _shift(ctx),
                                              ctx.damping.positive)
    return total


def _svd_scale(A, shift, positive):
    """SVD A = P diag(s) Wᵀ and s/(s² + shift) (ρ > 0) or the pseudo-inverse 1/s over s > max(A.shape)·eps·s_max."""
    P, sv, Wt = jnp.linalg.svd(A, full_matrices=False)
    kept = sv > max(A.shape) * jnp.finfo(A.dtype).eps * jnp.max(sv)
    pinv = jnp.where(kept, 1.0 / jnp.where(kept, sv, 1.0), 0.0)
    return P, jnp.where(positive, sv / (sv**2 + shift), pinv), Wt


@jax.jit
def _units_coefficients(features, d, u, shift, positive):
    """Columns c_j = A_j⁺u (ρ = 0) or A_jᵀ(A_jA_jᵀ + shift)⁻¹u in the forward coordinates, A_j = diag(d_j)F,
    for a chunk of units (columns of d)."""

    def one(dj):
        P, scale, Wt = _svd_scale(dj[:, None] * features, shift, positive)
        return Wt.T @ (scale * (P.T @ u))

    return jax.vmap(one, in_axes=1, out_axes=1)(d)


@functools.partial(jax.jit, static_argnums=0)
def active_fraction(net, variances):
    """p(q) = P_{z ~ N(0, q)}(φ'(z) ≠ 0) for each variance q (Gauss–Hermite, φ' by autodiff)."""
    x, w = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)  # weight e^{−x²/2}
    w = w / np.sqrt(2 * np.pi)
    z = jnp.sqrt(jnp.asarray(variances))[..., None] * x
    slope = jax.vmap(jax.grad(lambda t: net.activate(t)))(z.reshape(-1)).reshape(z.shape)
    return jnp.sum((slope != 0) * w, axis=-1)


def leading_order_fractions(net, X):
    """Theory, not a kernel: the leading order in M of the per-hidden-unit active fraction at each sample,
    φ_∞(x_n) = Σ_{l<L} M_l p_l(x_n) / Σ_l M_l, p_l by :func:`active_fraction` at the NNGP variances
    q_l(x_n) = K^H_l(x_n, x_n) of the infinite-width forward Grams (``layer_kernels(net, X)``). Finite-width
    kernels give (Θ_M[n, n] − 1)/ΣM → φ_∞(x_n) (figure unit_wise extrapolates them in width)."""
    from ..kernels import layer_kernels

    if not net.hidden:
        raise ValueError("unit_wise's active fraction needs hidden units: use depth >= 2")
    fwd = layer_kernels(net, X).fwd
    total = sum(width * active_fraction(net, jnp.diagonal(fwd[l])) for l, width in enumerate(net.hidden))
    return np.asarray(total) / float(sum(net.hidden))


#: why there is no infinite-width kernel (``finite_width_only``; raised for ``params=None``)
INFINITE_WIDTH = ("unit_wise needs a finite width (its kernel grows like the width, no infinite-width limit): "
                  "pass params=net.init(seed)")


def _infinite_width(lk) -> bool:
    """True for the infinite-width kernels; tiled finite-width kernels (no per-unit features) are an error."""
    if lk.finite and lk.deltas is None:
        raise ValueError("unit_wise needs the per-unit backward signals, which tiled kernels do not carry: "
                         "use untiled layer_kernels")
    return lk.deltas is None


def kernel(train, test, ctx) -> MethodKernel:
    if _infinite_width(train):
        raise ValueError(INFINITE_WIDTH)
    K_test = None if test is None else _finite_kernel(test, train, ctx)
    return MethodKernel(_finite_kernel(train, train, ctx), K_test)


def direction(train, ctx) -> list:
    """Δw̃_j = −η A_jᵀ(A_jA_jᵀ + Nρ)⁻¹u per unit, A_j = diag(d_j)H̃ = diag(d_j)F Vᵀ (H̃ = FVᵀ, V = H̃ᵀ·inverse
    orthonormal), so Δw̃_j = H̃ᵀ·inverse·c_j with c_j from an SVD of the small diag(d_j)F (as the kernel):
    the SVD keeps A_j's conditioning instead of squaring it in its Gram."""
    chunk = ctx.option("unit_chunk")
    out = []
    for H, delta in zip(train.inputs, train.deltas):
        k = delta.shape[1]
        features, _, inverse = _forward_coordinates(H @ H.T, H @ H.T, k)

        def one(dj):
            return _units_coefficients(features, dj.T, ctx.residual, _shift(ctx), ctx.damping.positive)

        C, m = _map_units(one, delta.reshape(-1, delta.shape[-1]), chunk)  # (chunks, r, size)
        C = jnp.moveaxis(C, 0, 1).reshape(C.shape[1], -1)[:, :m]
        out.append(H.T @ (inverse @ C))
    return out


# ---------------------------------------------------------------------------------------------
# the metric between any rows (module docstring)
# ---------------------------------------------------------------------------------------------
def _map_units(fn, flat, chunk: int):
    """fn over chunks of the unit columns of ``flat`` (rows, M), zero-padded (a zero unit adds nothing);
    returns the stacked per-chunk outputs (chunks, ...)."""
    m = flat.shape[1]
    size = min(chunk, m)
    n_chunks = -(-m // size)
    d = jnp.pad(flat, ((0, 0), (0, n_chunks * size - m))).T.reshape(n_chunks, size, -1)
    return jax.lax.map(fn, d), m


def _unit_grams(lk, l, n_b):
    """(K^H ⊗ 1 over R × R, B's rows count, δ over rows (R·k, M_l)) of layer l."""
    if _infinite_width(lk):
        raise ValueError("unit_wise two-sided (continual) kernels need a finite width: pass params=net.init(seed)")
    k = lk.n_outputs_per_sample
    return linalg.expand_outputs(lk.fwd[l], k), n_b * k, lk.deltas[l].reshape(-1, lk.deltas[l].shape[-1])


def _unit_sum(lk, n_b, ctx, term):
    """Σ_{l,j} term(K_j(R, B), K_j(B, B)) over every unit."""
    total = 0.0
    for l in range(lk.depth):
        KH, nb, d = _unit_grams(lk, l, n_b)

        def chunk(dc, KH=KH, nb=nb):
            def one(dj):
                KRB = KH[:, :nb] * dj[:, None] * dj[None, :nb]
                return term(KRB, KRB[:nb])
            return jnp.sum(jax.vmap(one)(dc), axis=0)

        sums, _ = _map_units(chunk, d, ctx.option("unit_chunk"))
        total = total + jnp.sum(sums, axis=0)
    return total


def metric_inverse(lk, n_b, ctx):
    shift = _shift(ctx)
    inner = _unit_sum(lk, n_b, ctx, lambda KRB, KBB: linalg.solve_right(KRB, KBB, shift, ctx.rcond) @ KRB.T)
    return (lk.total_ntk - inner) / shift


def metric_forward(lk, n_b, ctx):
    G = _unit_sum(lk, n_b, ctx, lambda KRB, KBB: KRB @ KRB.T)
    return G / ctx.n**2 + ctx.damping.value * lk.total_ntk / ctx.n


def metric_direction(lk, n_b, ctx, w):
    shift = _shift(ctx)
    out = []
    for l, H in enumerate(lk.inputs):
        KH, nb, d = _unit_grams(lk, l, n_b)
        rows, k = lk.deltas[l].shape[:2]

        def chunk(dc, KH=KH, nb=nb, k=k, rows=rows):
            def one(dj):
                KRB = KH[:, :nb] * dj[:, None] * dj[None, :nb]
                q = linalg.solve(KRB[:nb], KRB.T @ w, shift, ctx.rcond)
                v = jnp.sum(jnp.reshape(w * dj, (rows, k)), axis=1)
                return v - pad_rows(jnp.sum(jnp.reshape(q * dj[:nb], (-1, k)), axis=1), rows)
            return jax.vmap(one)(dc)  # (chunk, rows)

        cols, m = _map_units(chunk, d, ctx.option("unit_chunk"))
        out.append(H.T @ cols.reshape(-1, rows)[:m].T / ctx.damping.value)
    return out


def cost(size, options) -> Cost:
    """Per layer the forward factor (an eigendecomposition of K^H_l) and, for each of its m_l units, the SVD of
    the R×N block diag(d_j)F; the kernel adds the projector's products (2RN² + 2R²N per unit)."""
    n, r = size.n, size.rows

    def kernel(d, m):
        return eigh(n) + m * (svd(r, n) + matmul(r, n, n) + matmul(r, n, r))

    def update(d, m):
        return eigh(n) + m * (svd(r, n) + 2 * matmul(n, r, 1)) + matmul(d, n, m)

    return Cost(features(size) + per_layer(size, kernel), features(size) + per_layer(size, update))


#: P(φ'(z) ≠ 0) for z ~ N(0, q), q > 0, derived on paper: ReLU is flat on a half-line (1/2), the
#: other activations of ntk_ngd.networks have φ' ≠ 0 almost everywhere (1).
ACTIVE_PROBABILITY = {"relu": 0.5}


def _single_output(lk) -> Condition:
    return Condition("single_output", lk.n_outputs_per_sample == 1,
                     "k > 1 outputs per sample: unit blocks are not diagonal projectors")


def predict(lk, ctx):
    n = lk.fwd.shape[1]
    cond = _conditions.input_grams_full_rank(lk, ctx.rcond)
    if _infinite_width(lk):
        raise ValueError(INFINITE_WIDTH)
    cond.append(_single_output(lk))
    deltas = lk.deltas[:-1]
    active = sum(np.sum(np.asarray(d[:, 0, :]) != 0, axis=1) for d in deltas) if deltas else np.zeros(n)
    active = np.asarray(active, dtype=float)
    equal = bool(np.all(active == active[0]))
    cond.append(Condition("equal_active_counts", equal,
                          f"active hidden units per sample range {active.min():g}..{active.max():g} (~M^-1/2 spread)"))
    return verdict("unit_wise", float(np.mean(active) + 1.0), (*cond, _conditions.undamped(ctx.damping)))


OPTIONS = (Option("unit_chunk", 64, lambda v, _: _validate.positive_int("unit_chunk", v),
                  "units per vmapped chunk in parameter updates (memory)"),)

UNIT_WISE = register(Method("unit_wise", "one Fisher block per unit (column of each layer)", kernel, direction,
                            predict, damping_rule="tikhonov", layerwise=True, options=OPTIONS,
                            finite_width_only=INFINITE_WIDTH,
                            metric=Metric(metric_inverse, metric_forward, metric_direction), cost=cost))
