"""Public entry point: the function-space kernel Θ_G of a method (THEORY.md "Setup").

    Θ_G(x', X) = J(x') (G + ρI)⁻¹ J(X)ᵀ / N,    Δf(x') = −η Θ_G(x', X) r.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import _validate, methods
from .kernels import LayerKernels, layer_kernels
from .networks import Network


def method_kernels(
    net: Network,
    X,
    method: str,
    params=None,
    damping: float = 0.0,
    residual=None,
    X_test=None,
    rcond: float | None = None,
    train_kernels: LayerKernels | None = None,
    **options,
) -> methods.MethodKernel:
    """Θ_G(X, X) and Θ_G(X_test, X) (``None`` without X_test) of ``method``.

    ``params=None`` uses the infinite-width kernels (output-diagonal: N×N standing for Θ_G ⊗ I_C,
    except residual-dependent methods, which return N·C×N·C); otherwise the finite-width Gram
    form at ``params`` (N·C×N·C). ``residual`` is f(X) − Y, shape (N, C), for ef/ief.
    ``damping`` ρ ≥ 0; ρ = 0 is the ρ → 0⁺ limit. ``options`` go to the method
    (pattern=/bandwidth= for 'pattern', kfac_readout= for 'kfac', samples=/seed= for 'sf').
    ``train_kernels`` reuses precomputed ``layer_kernels(net, X, params=params)``.
    """
    spec = methods.get(method)
    damping = _validate.nonnegative("damping", damping)
    X = net.check_inputs(X, "X")
    n = X.shape[0]
    unknown = set(options) - set(spec.options)
    if unknown:
        raise ValueError(
            f"method {method!r} takes no option(s) {sorted(unknown)}; its options: {list(spec.options) or 'none'}"
        )
    if spec.needs_residual:
        if residual is None:
            raise ValueError(f"method {method!r} needs residual= (f(X) - Y, shape ({n}, {net.out_dim}))")
        residual = _validate.finite_matrix("residual", np.reshape(np.asarray(residual), (n, -1)), cols=net.out_dim)
    train = layer_kernels(net, X, params=params) if train_kernels is None else train_kernels
    test = None if X_test is None else layer_kernels(net, net.check_inputs(X_test, "X_test"), X, params=params)
    if damping == 0 and params is not None:
        warn_rank_deficient_layers(net, n, method)
    return spec.kernel(train, test, n=n, damping=damping, residual=residual, rcond=rcond, net=net, **options)


def preconditioned_kernel(net: Network, X, method: str, params=None, damping: float = 0.0, residual=None,
                          X_test=None, **options):
    """Θ_G(X, X); with ``X_test`` the pair (Θ_G(X, X), Θ_G(X_test, X)). See :func:`method_kernels`."""
    out = method_kernels(net, X, method, params=params, damping=damping, residual=residual, X_test=X_test, **options)
    return out.train if X_test is None else (out.train, out.test)


LAYER_STRUCTURED = ("block_diag", "block_tridiag", "pattern", "kfac", "unit_wise")


def warn_rank_deficient_layers(net: Network, n: int, method: str) -> None:
    """At ρ = 0 a layer with fewer parameters than N·C cannot give Θ_l full rank (THEORY.md claim 2)."""
    if method not in LAYER_STRUCTURED:
        return
    rows = n * net.out_dim
    for l, count in enumerate(net.layer_param_counts):
        if count < rows:
            warnings.warn(
                f"{method}: layer {l + 1} has {count} parameters < N*C = {rows}; its block is rank-deficient "
                "at damping 0 and the kernel cannot be isotropic",
                RuntimeWarning,
                stacklevel=3,
            )


__all__ = ["LayerKernels", "method_kernels", "preconditioned_kernel"]
