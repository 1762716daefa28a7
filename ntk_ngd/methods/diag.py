"""Diagonal Fisher: G = diag(F) + ρI, d_p = (1/N) Σ_{n,c} J̃_{(n,c),p}² (THEORY.md "Kronecker-basis
approximations: KPSVD, EKFAC, diagonal Fisher"); rule "tikhonov" (ρ added to d_p).

Parameter p = (i, j) of layer l has Jacobian column J̃_{(n,c),p} = h̃_{n,i} δ̃_{(n,c),j}, so diag(F) is
the true Fisher's diagonal in the *standard* Kronecker basis and (:mod:`._kron`)

    Θ(x', X) = (1/N) Σ_l Σ_ij h̃_i(x')h̃_i(X) δ_j(x')δ_j(X) / (d_ij + ρ),   d_ij = (1/N) Σ_{n,c} h̃_{n,i}² δ_{(n,c),j}²,
    ΔW̃_l = −η ∇_l ⊘ (D_l + ρ),   ∇_l = H̃ᵀV/N,  D_l = (H̃∘H̃)ᵀ(Δ̃∘Δ̃)/N.

Finite width only: it needs every unit's input h̃_{n,i} and backward signal δ_{(n,c),j}, not Grams
(which are invariant under rotations of the units, while diag(F) is not), hence no infinite-width
limit of this form; untiled finite-width kernels carry both (``inputs``, ``deltas``).

Isotropy (ρ = 0): Θ = Σ_{p: d_p>0} J_pJ_pᵀ/||J_p||², a sum of unit-vector projectors over the
parameters, so tr Θ = #{p : d_p > 0} and α = (number of active parameters)/(N·k) grows with the
width; Θ is isotropic only if the unit-normalised Jacobian columns form a tight frame (generically
not: their directions are correlated through the shared h̃ and δ). ρ = 0 drops only parameters with
d_p = 0 exactly unless ``rcond`` is given: each kept term is a unit-vector projector, bounded however
small d_p is (the ρ → 0⁺ limit).

Between any rows (continual learning) the standard basis is complete, so the same sums over every parameter
give J_X(G + ρ)^{±1}J_Yᵀ/N (weights 1/(d_ij + ρ), resp. d_ij plus ρΘ_XY/N) and (G + ρ)⁻¹J_Rᵀw = (J_Rᵀw) ⊘ (D + ρ),
with d fitted on task B's rows (the first n_b).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import linalg
from ..factored import diag as factored_diag
from . import _conditions, _cost, _kron
from ._fitted import diagonal_verdict, fitted_basis_diagonal
from ._metric import Metric
from .base import Method, MethodKernel, register

INFINITE_WIDTH = ("diag needs a finite width (individual parameters, not Grams): pass params=net.init(seed); "
                  "the diagonal Fisher has no infinite-width Gram form")


def unit_features(lk, l: int, second: bool = False):
    """(h̃ expanded to rows (n, c), δ as rows (n, c)) of layer l, for X (or X2 with ``second``)."""
    inputs, deltas = (lk.inputs2, lk.deltas2) if second else (lk.inputs, lk.deltas)
    d = deltas[l]
    return _kron.expand_rows(inputs[l], d.shape[1]), d.reshape(-1, d.shape[-1])


def _check_finite(lk, what: str):
    if lk.deltas is None or lk.inputs is None:
        raise ValueError(INFINITE_WIDTH if not lk.finite else
                         f"diag needs the per-unit features of the {what} points, which tiled kernels do not carry: "
                         "use untiled layer_kernels")


def kernel(train, test, ctx) -> MethodKernel:
    _check_finite(train, "training")
    if test is not None:
        _check_finite(test, "test")
    rcond = 0.0 if ctx.rcond is None else ctx.rcond

    def total(cross):
        out = 0.0
        for l in range(train.depth):
            h, d = unit_features(train, l)
            h_cross, d_cross = unit_features(cross, l)
            s = _kron.fitted_scales(h, d, ctx.n)
            out = out + _kron.diagonal_basis_kernel(h_cross, d_cross, h, d, s, ctx.damping.value, ctx.n, rcond)
        return out

    return MethodKernel(total(train), None if test is None else total(test))


def direction(train, ctx) -> list:
    rcond = 0.0 if ctx.rcond is None else ctx.rcond
    out = []
    for H, delta in zip(train.inputs, train.deltas):
        grad = linalg.jt(H, delta, ctx.residual) / ctx.n
        d = (H**2).T @ jnp.sum(delta**2, axis=1) / ctx.n  # D_ij = (1/N) Σ_n h̃_ni² Σ_c δ_ncj²
        w = linalg.inverse_eigenvalues(d.reshape(-1), ctx.damping.value, rcond).reshape(d.shape)
        out.append(grad * w)
    return out


def _fitted(lk, n_b, ctx, l):
    """(h, δ over all rows, d fitted on B's rows) of layer l."""
    h, d = unit_features(lk, l)
    rows = n_b * lk.n_outputs_per_sample
    return h, d, _kron.fitted_scales(h[:rows], d[:rows], ctx.n)


def metric_inverse(lk, n_b, ctx):
    _check_finite(lk, "continual")
    rcond = 0.0 if ctx.rcond is None else ctx.rcond
    return sum(_kron.diagonal_basis_kernel(h, d, h, d, s, ctx.damping.value, ctx.n, rcond)
               for h, d, s in (_fitted(lk, n_b, ctx, l) for l in range(lk.depth)))


def metric_forward(lk, n_b, ctx):
    _check_finite(lk, "continual")
    span = sum(_kron.diagonal_basis_form(h, d, h, d, s, ctx.n) for h, d, s in (_fitted(lk, n_b, ctx, l)
                                                                                for l in range(lk.depth)))
    return span + ctx.damping.value * lk.total_ntk / ctx.n


def metric_direction(lk, n_b, ctx, w):
    rcond = 0.0 if ctx.rcond is None else ctx.rcond
    out = []
    for H, delta in zip(lk.inputs, lk.deltas):
        HB, dB = H[:n_b], delta[:n_b]
        D = (HB**2).T @ jnp.sum(dB**2, axis=1) / ctx.n
        out.append(linalg.jt(H, delta, w) * linalg.inverse_eigenvalues(D.reshape(-1), ctx.damping.value, rcond)
                   .reshape(D.shape))
    return out


def cost(size, options) -> _cost.Cost:
    """Per layer the diagonal-basis kernel in the standard basis (r_H = d_l, r_Δ = m_l: 2R²m_ld_l); an update is
    the gradient divided by D_l (4Rd_lm_l)."""
    r = size.rows
    kernel = sum(_cost.diagonal_basis_kernel(r, d, m) for d, m in size.layers)
    update = sum(4.0 * r * d * m for d, m in size.layers)
    return _cost.Cost(_cost.features(size) + kernel, _cost.features(size) + update)


def predict(lk, ctx):
    """α = #{active parameters}/(N·k) (tr Θ = #{d_p > 0}); diagonal from the unit frame of J's columns."""
    _check_finite(lk, "training")
    n, rows = lk.fwd.shape[1], lk.ntk.shape[1]
    feats = [tuple(np.asarray(f, float) for f in unit_features(lk, l)) for l in range(lk.depth)]
    active = sum(int(np.sum(((h != 0).T.astype(float) @ (d != 0).astype(float)) > 0)) for h, d in feats)
    diag = sum(fitted_basis_diagonal(h, d, n) for h, d in feats)
    return diagonal_verdict("diag", active / rows, diag, (_conditions.undamped(ctx.damping),), False,
                            f"sum over {active} active parameters of unit projectors")


DIAG = register(Method("diag", "diagonal Fisher diag(F) + ρI (finite width only)", kernel, direction, predict,
                       damping_rule="tikhonov", finite_width_only=INFINITE_WIDTH,
                       metric=Metric(metric_inverse, metric_forward, metric_direction), cost=cost,
                       factored=factored_diag.FORM))
