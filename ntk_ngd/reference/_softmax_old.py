"""Explicit P×P softmax-Fisher reference (small networks only), independent of the Gram form.

Everything here comes from automatic differentiation and dense linear algebra: the Jacobian
J = ∂f(X)/∂θ from ``jax.jacrev`` (:func:`ntk_ngd.dense.jacobian`), the per-sample logit gradient
g_n = ∇_f ℓ_n from ``jax.grad`` and Λ_n = ∇²_f ℓ_n from ``jax.hessian`` of ℓ_n(f) = −Σ_c y_c log
softmax(f)_c, the K-FAC signals from :func:`ntk_ngd.dense.layer_signals` (its own forward pass).
Nothing from :mod:`ntk_ngd.kernels` or :mod:`ntk_ngd.cross_entropy.softmax` is used.

    F = JᵀΛJ/N (Λ = blockdiag(Λ_n)),   ∇L = Jᵀg/N,   Δθ = −η (G + ρI)⁻¹∇L,   Δf(x') = J(x')Δθ.

G per method: ``gd`` I · ``exact`` F · ``block_diag`` the diagonal layer blocks of F · ``kfac``
blockdiag_l (A_l + √ρI) ⊗ (B_l + √ρI), A_l = Σ_n h̃h̃ᵀ/N, B_l = Σ_n Δ_nᵀΛ_nΔ_n/(N s_l) (s_L = N for the
readout with ``kfac_readout="paper"``, else 1) · ``ef`` Σ_n g̃_n g̃_nᵀ/N, g̃_n = J_nᵀg_n · ``ief`` (an
update) Δθ = −η Φᵀ(ΦΦᵀ + λI)⁻¹s, rows of Φ = g̃_nᵀ, s_n = ||g_n||². ρ = 0: Moore–Penrose
pseudo-inverse per block (:func:`ntk_ngd.dense.sym_pinv`), which equals the ρ → 0⁺ limit on every
right-hand side in range(G) (all used here are).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from .. import _validate
from .. import dense as _dense
from ..methods.kfac import CONVENTIONS
from .kernels import METHODS, check_method, check_problem


def _per_sample_loss(z, y):
    return -jnp.sum(y * jax.nn.log_softmax(z))


def logit_derivatives(f, labels):
    """(g (N, C), Λ (N, C, C)): gradient and Hessian of ℓ_n w.r.t. the logits, by autodiff."""
    f = jnp.asarray(f, dtype=jnp.float64)
    Y = jnp.asarray(labels, dtype=jnp.float64)
    g = jax.vmap(jax.grad(_per_sample_loss))(f, Y)
    lam = jax.vmap(jax.hessian(_per_sample_loss))(f, Y)
    return np.asarray(g), np.asarray(lam)


def _setup(net, params, X, labels, X_test=None):
    X, Y, X_test = check_problem(net, X, labels, X_test)
    if X_test is None:
        J, Jt = _dense.jacobian(net, params, X), None
    else:
        J_all = _dense.jacobian(net, params, np.concatenate([X, X_test]))
        J, Jt = J_all[: X.shape[0] * net.out_dim], J_all[X.shape[0] * net.out_dim:]
    f = np.asarray(net.apply(params, X), dtype=float)
    g, lam = logit_derivatives(f, Y)
    return X, Y, J, Jt, g, lam


def _blockdiag(blocks):
    return scipy.linalg.block_diag(*blocks)


def _solve(G, rhs, damping):
    if damping > 0:
        return scipy.linalg.solve(0.5 * (G + G.T) + damping * np.eye(G.shape[0]), rhs, assume_a="sym")
    return _dense.sym_pinv(G) @ rhs


def _kfac_factors(net, params, X, lam, readout):
    inputs, deltas = _dense.layer_signals(net, params, X)
    n = X.shape[0]
    out = []
    for l, (H, D) in enumerate(zip(inputs, deltas)):  # D (N, C, fan_out)
        A = H.T @ H / n
        B = np.einsum("ncm,ncd,ndk->mk", D, lam, D) / n
        if readout == "paper" and l == net.depth - 1:
            B = B / n
        out.append((A, B))
    return out


def preconditioner_apply(net, params, X, labels, method: str, rhs, damping: float = 0.0, kfac_readout="common"):
    """(G + ρI)⁻¹ rhs (pinv at ρ = 0) for a kernel method; ``rhs`` (P,) or (P, k)."""
    X, Y, J, _, g, lam = _setup(net, params, X, labels)
    return _apply(net, params, X, J, g, lam, method, np.asarray(rhs, float), damping, kfac_readout)


def _apply(net, params, X, J, g, lam, method, rhs, damping, readout):
    n, P = X.shape[0], net.num_params
    if method == "gd":
        return rhs.copy()
    Lam = _blockdiag(list(lam))
    if method == "exact":
        return _solve(J.T @ Lam @ J / n, rhs, damping)
    if method == "ef":
        Jn = J.reshape(n, net.out_dim, P)
        per = np.einsum("ncp,nc->np", Jn, g)
        return _solve(per.T @ per / n, rhs, damping)
    out = np.zeros_like(rhs)
    slices = _dense.layer_slices(net)
    if method == "block_diag":
        for sl in slices:
            Jl = J[:, sl]
            out[sl] = _solve(Jl.T @ Lam @ Jl / n, rhs[sl], damping)
        return out
    if method == "kfac":
        s = np.sqrt(damping)
        for sl, (A, B) in zip(slices, _kfac_factors(net, params, X, lam, readout)):
            if damping > 0:
                M = np.kron(np.linalg.inv(A + s * np.eye(len(A))), np.linalg.inv(B + s * np.eye(len(B))))
            else:
                M = np.kron(_dense.sym_pinv(A), _dense.sym_pinv(B))
            out[sl] = M @ rhs[sl]
        return out
    raise ValueError(f"method {method!r} has no preconditioner matrix here")


def parameter_update(net, params, X, labels, method: str, lr: float, damping: float = 0.0,
                     kfac_readout: str = "common") -> np.ndarray:
    """Δθ (P,) of one softmax-Fisher step (module docstring), flat in :func:`ntk_ngd.dense.flatten_params` order."""
    check_method(method)
    _validate.choice("kfac_readout", kfac_readout, CONVENTIONS)
    damping = _validate.nonnegative("damping", damping)
    X, Y, J, _, g, lam = _setup(net, params, X, labels)
    return _update(net, params, X, J, g, lam, method, lr, damping, kfac_readout)


def _update(net, params, X, J, g, lam, method, lr, damping, readout):
    n = X.shape[0]
    grad = J.T @ g.reshape(-1) / n
    if method == "ief":
        per = np.einsum("ncp,nc->np", J.reshape(n, net.out_dim, -1), g)
        s = np.sum(g**2, axis=1)
        if damping > 0:
            return -lr * per.T @ np.linalg.solve(per @ per.T + damping * np.eye(n), s)
        return -lr * np.linalg.pinv(per, rcond=max(per.shape) * np.finfo(float).eps) @ s
    return -lr * _apply(net, params, X, J, g, lam, method, grad, damping, readout)


def function_step(net, params, X, labels, method: str, lr: float, damping: float = 0.0, X_test=None,
                  kfac_readout: str = "common"):
    """Linearised logit steps (Δf(X) (N, C), Δf(X_test) or None) = J Δθ — not projected orthogonal to 1."""
    check_method(method)
    damping = _validate.nonnegative("damping", damping)
    X, Y, J, Jt, g, lam = _setup(net, params, X, labels, X_test)
    d = _update(net, params, X, J, g, lam, method, lr, damping, kfac_readout)
    c = net.out_dim
    return (J @ d).reshape(-1, c), (None if Jt is None else (Jt @ d).reshape(-1, c))


def metric_operator(net, params, X, labels, method: str, damping: float = 0.0, kfac_readout: str = "common"):
    """(Λ^{1/2}Θ_GΛ^{1/2}, Θ_GΛ), both NC×NC, with Θ_G = J(G + ρI)⁻¹Jᵀ/N and Λ^{1/2} the symmetric root.

    Θ_GΛ (ρ = 0, pseudo-inverse) is finite: JᵀΛ ∈ range(G) for exact, block_diag and kfac.
    """
    if method not in ("gd", "exact", "block_diag", "kfac"):
        raise ValueError(f"metric_operator needs a fixed-kernel method (gd, exact, block_diag, kfac), got {method!r}")
    X, Y, J, _, g, lam = _setup(net, params, X, labels)
    n = X.shape[0]
    roots = []
    for block in lam:
        w, U = np.linalg.eigh(0.5 * (block + block.T))
        w = np.where(w > len(w) * np.finfo(float).eps * np.max(np.abs(w)), w, 0.0)  # Λ_n 1 = 0 exactly
        roots.append((U * np.sqrt(w)) @ U.T)
    root = _blockdiag(roots)
    Lam = _blockdiag(list(lam))
    MJ = _apply(net, params, X, J, g, lam, method, J.T @ np.concatenate([root, Lam], axis=1), damping, kfac_readout)
    out = J @ MJ / n
    k = root.shape[0]
    return root @ out[:, :k], out[:, k:]


__all__ = ["METHODS", "function_step", "logit_derivatives", "metric_operator", "parameter_update",
           "preconditioner_apply"]
