"""Public functions of the dense reference, for both losses (``loss="mse"`` default, ``"cross_entropy"``).

With the whitened problem of :mod:`.problem` (J̃ = RJ, u, ∇L = J̃ᵀu/N = Jᵀg/N) and a method's explicit G
(:data:`.builders.BUILDERS`; M = (G + ρI)⁻¹, blockwise pseudo-inverse at ρ = 0):

    Θ̃_G(X, X) = J̃ M J̃ᵀ/N,   Θ̃_G(x', X) = J̃(x') M J̃ᵀ/N,   Δθ = −η M∇L,   Δf(x') = J(x')Δθ,

with J̃(x') = J(x') for MSE and (I ⊗ Vᵀ)J(x') for cross-entropy (V the basis of 1^⊥ of
:func:`ntk_ngd.losses.null_basis`): exactly the quantities ``ntk_ngd.method_kernels`` returns. iEF has no
G: its update and kernel come from :class:`.builders.Update`. MSE residual-dependent methods take
``residual`` = f − Y (or ``targets``); cross-entropy ones take ``targets`` = labels (class indices or
(N, C) probability rows). ``outputs`` (default f(X; params)) are the outputs the whitening and residual
are taken at. Method options are the registry's (:mod:`._checks`; sf's former ``k`` is an alias of
``samples``, and sf's ``step`` selects the draw, as in ``method_kernels``).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .. import _validate
from ..networks import Network
from ..trajectory import check_lr
from . import _checks, softmax
from .builders import BUILDERS
from .jacobians import check_net
from .problem import build, check_loss, check_targets
from .solves import sym_pinv


def _approximation(net, params, X, method, damping, rcond, opts, **problem):
    """(whitened problem, built approximation): every input is checked before anything is computed."""
    check_net(net)
    _checks.check_method(method)
    damping = _validate.nonnegative("damping", damping)
    rcond = None if rcond is None else _validate.nonnegative("rcond", rcond)
    opts = _checks.normalise_options(method, opts, net.depth)
    p = build(net, params, X, **problem)
    return p, BUILDERS[method](p, damping, rcond, **opts)


def fisher_approximation(net: Network, params, X, method: str, damping: float = 0.0, residual=None, *,
                         loss: str = "mse", targets=None, outputs=None, **opts) -> np.ndarray:
    """The approximation G (P×P) of the Fisher F = J̃ᵀJ̃/N.

    Undamped for every method (the damping enters as G + ρI elsewhere) except ``kfac``, whose factored
    damping is part of the approximation: blockdiag_l kron(A_l + √ρ I, B_l + √ρ I). ``gd``: the identity.
    """
    _checks.no_fisher(method)
    _, approx = _approximation(net, params, X, method, damping, None, opts, loss=loss, targets=targets,
                               residual=residual, outputs=outputs)
    return approx.G


def inverse_preconditioner(net: Network, params, X, method: str, damping: float = 0.0, residual=None, rcond=None,
                           *, loss: str = "mse", targets=None, outputs=None, **opts) -> np.ndarray:
    """The explicit P×P M = (G + ρI)⁻¹ (blockwise pseudo-inverse at ρ = 0; ``kfac`` blockdiag
    kron((A + √ρ)⁻¹, (B + √ρ)⁻¹); the identity for ``gd``)."""
    _checks.no_fisher(method)
    _, approx = _approximation(net, params, X, method, damping, rcond, opts, loss=loss, targets=targets,
                               residual=residual, outputs=outputs)
    return approx.inverse()


def preconditioned_kernel(net: Network, params, X, method: str, damping: float = 0.0, X_test=None, residual=None,
                          rcond: float | None = None, *, loss: str = "mse", targets=None, outputs=None,
                          **opts) -> tuple[np.ndarray, np.ndarray | None]:
    """(Θ̃_G(X, X), Θ̃_G(X_test, X) or None) (module docstring): MSE NC×NC and N_test·C × NC; cross-entropy
    the metric RΘ_GRᵀ (N(C−1) square) and (I ⊗ Vᵀ)Θ_G(x', X)Rᵀ. iEF: J̃(x')U (:class:`.builders.Update`)."""
    p, approx = _approximation(net, params, X, method, damping, rcond, opts, loss=loss, targets=targets,
                               residual=residual, outputs=outputs, X_test=X_test)
    U = approx.operator(p)
    return p.J @ U, (None if p.J_test is None else p.J_test @ U)


def residual_of(net: Network, params, X, Y, loss: str = "mse") -> np.ndarray:
    """g = ∇_f ℓ per sample, shape (N, C): MSE r = f(X) − Y; cross-entropy p − y (autodiff)."""
    loss = check_loss(loss)
    X = net.check_inputs(X)
    f = np.asarray(net.apply(params, X), dtype=float)
    Y = check_targets(net, loss, Y, X.shape[0])
    return f - Y if loss == "mse" else softmax.logit_derivatives(f, Y)[0]


def _update(net, params, X, Y, method, lr, damping, rcond, X_test, loss, opts):
    """(Δθ, problem): the work of :func:`parameter_update`, sharing the Jacobians with :func:`function_step`."""
    lr = check_lr(lr, positive=False)
    if "residual" in opts:
        raise ValueError("parameter_update computes the residual from Y; do not pass residual=")
    if Y is None:
        raise ValueError("an update needs targets Y (MSE) or labels (cross_entropy)")
    p, approx = _approximation(net, params, X, method, damping, rcond, opts, loss=loss, targets=Y, X_test=X_test)
    return -lr * approx.direction(p), p


def parameter_update(net: Network, params, X, Y, method: str, lr: float, damping: float = 0.0,
                     rcond: float | None = None, *, loss: str = "mse", **opts) -> np.ndarray:
    """Δθ (P,), flat in :func:`.jacobians.flatten_params` order, for one step of ``method``.

    Δθ = −lr (G + ρI)⁻¹∇L, ∇L = Jᵀg/N (MSE g = f − Y, also the residual of ``ef``; cross-entropy
    g = p − y); ``gd``: −lr ∇L. ``ief``: −lr Φᵀ(ΦΦᵀ + ρI)⁻¹s, rows g̃_n = J̃_nᵀu_n, s_n = ||g_n||², and at
    ρ = 0 −lr Φ⁺s (SVD cut-off max(N, P)·eps·σ_max, or ``rcond``·σ_max). Y: targets or labels.
    """
    return _update(net, params, X, Y, method, lr, damping, rcond, None, loss, opts)[0]


def function_step(net: Network, params, X, Y, method: str, lr: float, damping: float = 0.0, X_test=None,
                  rcond: float | None = None, *, loss: str = "mse", **opts) -> tuple[np.ndarray, np.ndarray | None]:
    """Linearised output step (Δf(X) (N, C), Δf(X_test) (N_test, C) or ``None``), Δf(x') = J(x')Δθ with Δθ
    from :func:`parameter_update` (cross-entropy: raw logit steps, not projected orthogonal to 1)."""
    dtheta, p = _update(net, params, X, Y, method, lr, damping, rcond, X_test, loss, opts)
    C = net.out_dim
    return (p.J_raw @ dtheta).reshape(-1, C), (None if p.J_raw_test is None else (p.J_raw_test @ dtheta).reshape(-1, C))


def fisher_efficiency_ratio(net: Network, params, X, Y, update, loss: str = "mse") -> float:
    """γ(v)/γ(v_NG) (THEORY.md claim 7b), γ(v) = sqrt(vᵀFv)/(gᵀv), F = J̃ᵀJ̃/N, g = ∇L.

    v_NG = −F⁺g is the exact (pseudo-inverse) natural-gradient update, so a descent update has ratio
    >= 1 (Cauchy–Schwarz) and exact NG has 1. Scale-invariant; returns ``inf`` if gᵀv = 0.
    """
    check_net(net)
    v = np.asarray(update, dtype=float).reshape(-1)
    if v.shape != (net.num_params,):
        raise ValueError(f"update must have {net.num_params} entries (flat θ), got {np.asarray(update).shape}")
    p = build(net, params, X, loss, targets=Y)
    F = p.J.T @ p.J / p.n
    g = p.grad
    v_ng = -sym_pinv(F) @ g

    def gamma(w):
        return np.sqrt(max(w @ F @ w, 0.0)) / (g @ w)

    return float("inf") if g @ v == 0 else float(gamma(v) / gamma(v_ng))


def metric_operator(net: Network, params, X, labels, method: str, damping: float = 0.0, rcond: float | None = None,
                    **opts) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy: (Λ^{1/2}Θ_GΛ^{1/2}, Θ_GΛ), both NC×NC, Θ_G = J(G + ρI)⁻¹Jᵀ/N, Λ = blockdiag(Λ_n) and
    Λ^{1/2} its symmetric root (= V Θ̃_G Vᵀ for the first). At ρ = 0 Θ_GΛ is finite where JᵀΛ ∈ range(G)."""
    _checks.no_fisher(method)
    p, approx = _approximation(net, params, X, method, damping, rcond, opts, loss="cross_entropy", targets=labels)
    lam = softmax.logit_derivatives(p.f, np.eye(net.out_dim)[np.zeros(p.n, int)])[1]
    root = scipy.linalg.block_diag(*softmax.symmetric_roots(lam))
    Lam = scipy.linalg.block_diag(*lam)
    k = root.shape[0]
    out = p.J_raw @ approx.solve(p.J_raw.T @ np.concatenate([root, Lam], axis=1)) / p.n
    return root @ out[:, :k], out[:, k:]


__all__ = ["fisher_approximation", "fisher_efficiency_ratio", "function_step", "inverse_preconditioner",
           "metric_operator", "parameter_update", "preconditioned_kernel", "residual_of"]
