"""The independent check of the matrix-free γ: the dense P×P Fisher of :mod:`ntk_ngd.reference` (Jacobian from
``jax.jacrev``, Λ_n from ``jax.hessian``; nothing shared with the jvp path) on a small net (Gaussian inputs,
N = 6, 3 classes, width 16: the whitened Jacobian has full row rank N(C−1) = 12)."""
from __future__ import annotations

import jax
import numpy as np

from ...networks import mlp
from ...reference import sym_pinv, unflatten_params
from ...reference.problem import build
from . import _indicator


def _directions(net, p, F, rng, count):
    """Random directions, the gradient, the dense exact NG direction F⁺∇L and a damped one (flat θ)."""
    out = [rng.standard_normal(net.num_params) for _ in range(count)]
    out += [p.grad, sym_pinv(F) @ p.grad, np.linalg.solve(F + 1e-2 * np.eye(F.shape[0]), p.grad)]
    return out


def _like(params, tree):
    """``tree``'s leaves reshaped onto the structure of ``params`` (the backends store biases differently)."""
    leaves = [np.reshape(np.asarray(b), np.shape(a)) for a, b in
              zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(tree))]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), leaves)


def problem(cfg: dict):
    """(net, params, X, one-hot Y): Gaussian inputs (N, in_dim), labels n mod C, a 2-layer ReLU net of width M."""
    n, c = int(cfg["n"]), int(cfg["classes"])
    X = np.random.default_rng(3).standard_normal((n, int(cfg["in_dim"])))
    Y = np.eye(c)[np.arange(n) % c]
    net = mlp(depth=2, width=int(cfg["width"]), in_dim=X.shape[1], out_dim=c)
    return net, net.init(3), X, Y


def dense_agreement(cfg: dict) -> dict:
    """max relative difference of the matrix-free γ from the dense sqrt(vᵀFv)/|gᵀv|, and from the dense γ with the
    empirical Fisher Σ g̃_n g̃_nᵀ/N in its place (the control)."""
    net, params, X, Y = problem(cfg)
    p = build(net, params, X, "cross_entropy", targets=Y)
    F = p.J.T @ p.J / p.n
    per_sample = np.stack([p.J[n * p.k:(n + 1) * p.k].T @ p.u[n] for n in range(p.n)])  # g̃_n = J̃_nᵀu_n
    F_emp = per_sample.T @ per_sample / p.n
    rel, rel_emp = [], []
    for v in _directions(net, p, F, np.random.default_rng(0), int(cfg["random"])):
        mine = _indicator.gamma(net, params, X, Y, _like(params, unflatten_params(net, v)))
        dense = np.sqrt(v @ F @ v) / abs(p.grad @ v)
        wrong = np.sqrt(v @ F_emp @ v) / abs(p.grad @ v)
        rel.append(abs(mine - dense) / dense)
        rel_emp.append(abs(mine - wrong) / wrong)
    return {"num_params": net.num_params, "n": p.n, "classes": int(cfg["classes"]), "max_rel_diff": float(max(rel)),
            "max_rel_diff_empirical_fisher": float(max(rel_emp)), "directions": len(rel)}


__all__ = ["dense_agreement"]
