"""Public entry point: the function-space kernel Θ_G of a method (THEORY.md "Setup").

    Θ_G(x', X) = J̃(x') (G + ρI)⁻¹ J̃(X)ᵀ / N,    Δf(x') = −η Θ_G(x', X) u.

For MSE J̃ = J and u = f − Y. For cross-entropy (``loss="cross_entropy"``) the kernels are those of
the whitened Jacobian at the logits: on the training points the metric operator Θ̃_G = RΘ_GRᵀ
(N(C−1) square), on test points (I ⊗ Vᵀ)Θ_G(x', X)Rᵀ, whose product with u is the logit step in the
basis V of 1^⊥ (THEORY.md "Cross-entropy NGD in function space").
"""
from __future__ import annotations


import jax.numpy as jnp
import numpy as np

from . import _warn, methods, problem as _problem
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
    loss: str = "mse",
    outputs=None,
    targets=None,
    step: int = 0,
    **options,
) -> methods.MethodKernel:
    """Θ_G(X, X) and Θ_G(X_test, X) (``None`` without X_test) of ``method``.

    ``params=None`` uses the infinite-width kernels (MSE: output-diagonal, N×N standing for Θ_G ⊗ I_C,
    except residual-dependent methods, which return N·C×N·C); otherwise the finite-width Gram form at
    ``params`` (N·C×N·C). ``residual`` is f(X) − Y, shape (N, C), for ef/ief with MSE; alternatively
    ``targets`` (MSE: Y; cross-entropy: labels) with ``outputs`` (default f(X; params), or 0 at infinite
    width). ``damping`` ρ ≥ 0 (ρ = 0 is the ρ → 0⁺ limit), applied by the method's rule
    (:mod:`ntk_ngd.damping`). ``options`` go to the method (its ``Method.options``). ``step`` selects
    the sampled-Fisher draw. ``train_kernels`` reuses precomputed ``layer_kernels(net, X, params=params)``.
    """
    spec = methods.get(method)
    prob = _problem.prepare(net, X, params, loss, targets, outputs, residual, X_test)
    if spec.finite_width_only and params is None:
        raise ValueError(spec.finite_width_only)
    ctx = _problem.context(spec, prob, damping, rcond, options, step)
    train, test = _problem.whiten(prob, *_problem.kernels(prob, train_kernels))
    if not ctx.damping.positive and params is not None:
        warn_rank_deficient_layers(prob, spec)
    return spec.kernel(train, test, ctx)


def function_step(net: Network, X, method: str, params=None, damping: float = 0.0, X_test=None, loss: str = "mse",
                  outputs=None, targets=None, residual=None, rcond: float | None = None, step: int = 0, **options):
    """(Δf(X), Δf(X_test) or None) per unit learning rate with the sign of a step: the outputs move by
    −η·step. Output space (N, C): for cross-entropy the logit step orthogonal to 1_C (V times the
    whitened-basis step). Arguments as in :func:`method_kernels`; the step is Θ_G(·, X)u."""
    from .dynamics import stacked

    spec = methods.get(method)
    prob = _problem.prepare(net, X, params, loss, targets, outputs, residual, X_test)
    if spec.finite_width_only and params is None:
        raise ValueError(spec.finite_width_only)
    ctx = _problem.context(spec, prob, damping, rcond, options, step)
    if ctx.residual is None:
        raise ValueError("function_step needs the residual: pass targets= (or residual= for MSE)")
    train, test = _problem.kernels(prob)
    left = stacked(train, test)
    w = prob.whitening()
    train_w, left_w = (train, left) if w.R is None else _problem.whiten(prob, train, left, w.R)
    _, moved = spec.function_step(train_w, left_w, ctx)
    moved = prob.loss.output_step(jnp.reshape(moved, (left.fwd.shape[1], -1)))
    moved = np.asarray(moved)
    return moved[: prob.n], None if prob.X_test is None else moved[prob.n:]


def preconditioned_kernel(net: Network, X, method: str, params=None, damping: float = 0.0, residual=None,
                          X_test=None, **options):
    """Θ_G(X, X); with ``X_test`` the pair (Θ_G(X, X), Θ_G(X_test, X)). See :func:`method_kernels`."""
    out = method_kernels(net, X, method, params=params, damping=damping, residual=residual, X_test=X_test, **options)
    return out.train if X_test is None else (out.train, out.test)


def warn_rank_deficient_layers(prob, spec) -> None:
    """At ρ = 0 a layer with fewer parameters than N·k cannot give its block full rank (THEORY.md claim 2);
    this matters to the methods whose prediction needs full-rank layer blocks (block-structured ones)."""
    if not spec.layerwise:
        return
    rows = prob.n * prob.rows
    label = "N*C" if prob.loss.name == "mse" else "N*(C-1)"
    for l, count in enumerate(prob.net.layer_param_counts):
        if count < rows:
            _warn.warn(spec.name, f"layer {l + 1} has {count} parameters < {label} = {rows}, so its Fisher block is "
                       "rank-deficient at damping 0 and the kernel cannot be isotropic (THEORY.md claim 2)",
                       f"give layer {l + 1} at least {rows} parameters (a wider layer or fewer training points), or "
                       "pass damping > 0 for a finite, damped kernel", key=("rank_deficient_layer", l), stacklevel=3)


__all__ = ["LayerKernels", "function_step", "layer_kernels", "method_kernels", "preconditioned_kernel"]
