"""Diagonal Fisher: G = diag(F) + ρI, d_p = (1/N) Σ_{n,c} J_{(n,c),p}² (THEORY.md "Kronecker-basis
approximations: KPSVD, EKFAC, diagonal Fisher").

Parameter p = (i, j) of layer l has Jacobian column J_{(n,c),p} = h̃_{n,i} δ_{(n,c),j}, so diag(F) is
the true Fisher's diagonal in the *standard* Kronecker basis and (:mod:`._kron`)

    Θ(x', X) = (1/N) Σ_l Σ_ij h̃_i(x')h̃_i(X) δ_j(x')δ_j(X) / (d_ij + ρ),   d_ij = (1/N) Σ_{n,c} h̃_{n,i}² δ_{(n,c),j}².

Finite width only: it needs every unit's input h̃_{n,i} and backward signal δ_{(n,c),j}, not Grams
(which are invariant under rotations of the units, while diag(F) is not), hence no infinite-width
limit of this form. Untiled finite-width :class:`LayerKernels` carry both (``inputs``, ``deltas``);
tiled ones carry neither, so diag (like unit_wise) needs the untiled kernels.

Isotropy (ρ = 0): Θ = Σ_{p: d_p>0} J_pJ_pᵀ/||J_p||², a sum of unit-vector projectors over the
parameters, so tr Θ = #{p : d_p > 0} and α = (number of active parameters)/(N·C) grows with the
width; Θ is isotropic only if the unit-normalised Jacobian columns form a tight frame (generically
not: their directions are correlated through the shared h̃ and δ).
"""
from __future__ import annotations

import dataclasses

from .. import _validate
from ..kernels import LayerKernels, layer_features, layer_kernels
from . import _kron
from .base import Method, MethodKernel, register

INFINITE_WIDTH = ("diag needs a finite width (individual parameters, not Grams): pass params=net.init(seed); "
                  "the diagonal Fisher has no infinite-width Gram form")


@dataclasses.dataclass(frozen=True)
class FeatureKernels(LayerKernels):
    """:class:`LayerKernels` plus the scaled layer inputs h̃_{l−1} of X and of X2, per layer (N, d_l)."""

    inputs: tuple | None = dataclasses.field(default=None, repr=False)
    inputs2: tuple | None = dataclasses.field(default=None, repr=False)


def with_inputs(lk: LayerKernels, net, params, X, X2=None) -> LayerKernels:
    """``lk`` (finite width, between X and X2) with the per-unit layer inputs attached."""
    if getattr(lk, "inputs", None) is not None:
        return lk
    if params is None or lk.deltas is None:
        raise ValueError(INFINITE_WIDTH)
    inputs = tuple(layer_features(net, params, X)[0])
    inputs2 = inputs if X2 is None else tuple(layer_features(net, params, X2)[0])
    fields = {f.name: getattr(lk, f.name) for f in dataclasses.fields(LayerKernels)}
    fields.update(inputs=inputs, inputs2=inputs2)
    return FeatureKernels(**fields)


def unit_features(lk, l: int, c: int):
    """(h̃ expanded to rows (n, c), δ as rows (n, c)) of layer l for the first input set of ``lk``."""
    d = lk.deltas[l]
    return _kron.expand_rows(lk.inputs[l], c), d.reshape(-1, d.shape[-1])


def _check_finite(lk, what: str):
    if lk.deltas is None:
        raise ValueError(INFINITE_WIDTH)
    if getattr(lk, "inputs", None) is None:
        raise ValueError(f"diag needs the per-unit layer inputs of the {what} points, which these LayerKernels do "
                         "not carry; use ntk_ngd.methods.diagonal.diag_kernels(net, X, params, ...)")


def diag_kernel(train, test, *, n, damping, rcond=None, **_) -> MethodKernel:
    """ρ = 0 drops only parameters with d_p = 0 exactly unless ``rcond`` is given: each kept term is a
    unit-vector projector J_pJ_pᵀ/||J_p||², bounded however small d_p is (the ρ → 0⁺ limit)."""
    _check_finite(train, "training")
    rcond = 0.0 if rcond is None else rcond
    if test is not None:
        _check_finite(test, "test")
    c = train.n_outputs_per_sample

    def total(cross):
        out = 0.0
        for l in range(train.depth):
            h, d = unit_features(train, l, c)
            h_cross, d_cross = unit_features(cross, l, c)
            s = _kron.fitted_scales(h, d, n)
            out = out + _kron.diagonal_basis_kernel(h_cross, d_cross, h, d, s, damping, n, rcond)
        return out

    return MethodKernel(total(train), None if test is None else total(test))


def diag_kernels(net, X, params, damping: float = 0.0, X_test=None, rcond=None) -> MethodKernel:
    """Θ_diag(X, X) and Θ_diag(X_test, X) at finite width (attaches the layer inputs itself)."""
    if params is None:
        raise ValueError(INFINITE_WIDTH)
    damping = _validate.nonnegative("damping", damping)
    X = net.check_inputs(X, "X")
    train = with_inputs(layer_kernels(net, X, params=params), net, params, X)
    test = None
    if X_test is not None:
        X_test = net.check_inputs(X_test, "X_test")
        test = with_inputs(layer_kernels(net, X_test, X, params=params), net, params, X_test, X)
    return diag_kernel(train, test, n=X.shape[0], damping=damping, rcond=rcond)


DIAG = register(
    Method("diag", diag_kernel, "diagonal Fisher diag(F) + ρI (finite width only)", needs_unit_features=True)
)
