"""Real parameter-space training of a finite network with the softmax-Fisher preconditioners
(THEORY.md "Cross-entropy NGD in function space"). Not linearised: every step recomputes the
features, the whitening at the current logits and the update at the current parameters.

    Δθ = −η (G + ρI)⁻¹ ∇L,   ∇L = Jᵀg/N,   G built from J̃ = RJ (R_nᵀR_n = Λ_n, :mod:`.softmax`).

Since g = Rᵀũ, ∇L = J̃ᵀũ/N and every preconditioner is its MSE Gram form on the *whitened* features:
the scaled layer inputs h̃ are unchanged and the backward signals become δ̃_{n,k} = Σ_c R_{n,kc} δ_{n,c}
(k = 1..C−1), so J̃_l rows are h̃_n ⊗ δ̃_{n,k}. The updates of :mod:`ntk_ngd.training`
(``_exact``: J̃ᵀ(Θ̃ + Nρ)⁻¹ũ; ``_block_diag``; ``_kfac`` with B_l = Σ_n Δ_nᵀΛ_nΔ_n/N; ``_ef`` with the
per-sample gradients J_nᵀg_n = J̃_nᵀũ_n) are applied to these whitened features — never a P×P
matrix. iEF uses s_n = ||g_n||² (the iEF paper's logit-gradient norm): Δθ = −η J̃ᵀŨ(ŨᵀΘ̃Ũ + λ)⁻¹s.
``gd`` is ``jax.grad`` of the cross-entropy.

``center=True`` trains the centred model f(x; θ) − f(x; θ_0), whose initial logits are 0 like the
infinite-width prior mean (same Jacobian, same Fisher), so that finite-width training can be compared
with the infinite-width logit dynamics started at f = 0.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate
from .. import training as _mse
from ..kernels import _check_params
from .dynamics import default_lr
from .kernels import check_method, check_problem, logit_kernels, normalise_options
from .softmax import check_labels, loss as ce_loss, whitening

#: A run is declared divergent when the loss is non-finite or exceeds this × the initial loss.
DIVERGENCE_FACTOR = _mse.DIVERGENCE_FACTOR


def _whitened_features(ft, R):
    delta = [jnp.einsum("nkc,ncm->nkm", R, d) for d in ft.delta]
    flat = [d.reshape(-1, d.shape[-1]) for d in delta]
    k = R.shape[1]
    ntk = [_mse._expand(fwd, k) * (fl @ fl.T) for fwd, fl in zip(ft.fwd, flat)]
    return _mse._Features(ft.H, delta, flat, ntk, ft.fwd)


def _ief(ft, u, g, n, damping, rcond):
    k = u.shape[1]
    U = _mse._per_sample(u.reshape(n, k, 1), n, k)
    gram = U.T @ sum(ft.ntk) @ U
    w = U @ _mse._solve(gram, jnp.sum(g**2, axis=1), damping, rcond)
    return [_mse._jt(h, d, w) for h, d in zip(ft.H, ft.delta)]


def _direction(net, method, opts, params, X, Y, offset, damping):
    """(G + ρI)⁻¹∇L (ief: J̃ᵀŨ(ŨᵀΘ̃Ũ + λ)⁻¹s) as a params-shaped pytree; traceable."""
    o = dict(opts)
    o.setdefault("rcond", None)
    o.setdefault("kfac_readout", "common")
    o["kfac_route"] = "auto"
    apply_fn = _mse._apply_fn(net)
    n = X.shape[0]
    if method == "gd":
        return jax.grad(lambda p: ce_loss(apply_fn(p, X) - offset, Y))(params)
    R, u, g = whitening(apply_fn(params, X) - offset, Y)
    ft = _whitened_features(_mse._features(net, params, X), R)
    ur = u.reshape(-1)
    if method == "exact":
        tildes = _mse._exact(ft, ur, n, damping, o)
    elif method == "block_diag":
        tildes = _mse._block_diag(ft, ur, n, damping, o)
    elif method == "kfac":
        tildes = _mse._kfac(ft, ur, n, damping, o, net.depth)
    elif method == "ef":
        tildes = _mse._ef(ft, ur, n, damping, o, u.shape[1], improved=False)
    else:  # ief (validated before)
        tildes = _ief(ft, u, g, n, damping, o["rcond"])
    return _mse._tildes_to_tree(net, params, tildes)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _delta_jit(net, method, opts, params, X, Y, offset, lr, damping):
    d = _direction(net, method, opts, params, X, Y, offset, damping)
    return jax.tree_util.tree_map(lambda v: -lr * v, d)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _step_jit(net, method, opts, params, X, Y, offset, lr, damping, X_all, offset_all):
    d = _direction(net, method, opts, params, X, Y, offset, damping)
    new = jax.tree_util.tree_map(lambda p, v: p - lr * v, params, d)
    return new, _mse._apply_fn(net)(new, X_all) - offset_all


def _check(net, params, X, labels):
    X, Y, _ = check_problem(net, X, labels)
    _check_params(net, params)
    return X, Y


def parameter_update(net, params, X, labels, method: str, lr: float, damping: float = 0.0, **options):
    """One update Δθ (a pytree shaped like ``params``, −lr included) at the uncentred logits f(X; θ)."""
    check_method(method)
    opts = normalise_options(method, options)
    lr = _mse._check_lr(lr)
    damping = _validate.nonnegative("damping", damping)
    X, Y = _check(net, params, X, labels)
    zero = jnp.zeros(Y.shape)
    return _delta_jit(net, method, opts, params, jnp.asarray(X), jnp.asarray(Y), zero, lr, damping)


@dataclasses.dataclass(frozen=True)
class CETrainResult:
    """Outcome of :func:`train`; arrays have steps + 1 rows (index 0: initial), NaN after a divergence."""

    method: str
    lr: float
    lr_rule: str
    damping: float
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    train_logits: np.ndarray
    test_loss: np.ndarray | None
    test_accuracy: np.ndarray | None
    test_logits: np.ndarray | None
    params: Any
    diverged_at: int | None
    steps_run: int

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None


def train(net, params, X, labels, method: str, lr: float | None = None, steps: int = 10, damping: float = 0.0,
          X_test=None, labels_test=None, center: bool = False, **options) -> CETrainResult:
    """Full-batch softmax-Fisher training of the finite network for ``steps`` steps.

    ``lr=None``: :func:`ntk_ngd.cross_entropy.dynamics.default_lr` from the finite-width operator at
    the initial parameters and logits. ``center``: train f(x; θ) − f(x; θ_0) (module docstring).
    """
    check_method(method)
    opts = normalise_options(method, options)
    X, Y = _check(net, params, X, labels)
    steps = _validate.positive_int("steps", steps, minimum=0)
    damping = _validate.nonnegative("damping", damping)
    n = X.shape[0]
    Xt = None if X_test is None else np.asarray(net.check_inputs(X_test, "X_test"), dtype=float)
    Yt = None
    if labels_test is not None:
        if Xt is None:
            raise ValueError("labels_test given without X_test")
        Yt = check_labels(labels_test, Xt.shape[0], net.out_dim)
    X_all = X if Xt is None else np.concatenate([X, Xt])
    f_all0 = np.asarray(net.apply(params, X_all), dtype=float)
    offset_all = f_all0 if center else np.zeros_like(f_all0)
    f_all = f_all0 - offset_all
    if lr is None:
        k = logit_kernels(net, X, Y, method, params=params, damping=damping, logits=f_all[:n], **dict(opts))
        lr, rule = default_lr(method, k.metric, f_all[:n], Y)
    else:
        lr, rule = _mse._check_lr(lr), "given"
    logits = np.full((steps + 1,) + f_all.shape, np.nan)
    logits[0] = f_all
    loss0 = float(ce_loss(f_all[:n], Y))
    diverged_at, steps_run = None, 0
    Xj, Yj, Xaj = jnp.asarray(X), jnp.asarray(Y), jnp.asarray(X_all)
    off, off_all = jnp.asarray(offset_all[:n]), jnp.asarray(offset_all)
    for t in range(1, steps + 1):
        new, f = _step_jit(net, method, opts, params, Xj, Yj, off, lr, damping, Xaj, off_all)
        f = np.asarray(f)
        value = float(ce_loss(f[:n], Y)) if np.all(np.isfinite(f)) else np.inf
        if not np.isfinite(value) or value > DIVERGENCE_FACTOR * max(loss0, np.finfo(float).tiny):
            diverged_at = t
            break
        params, steps_run = new, t
        logits[t] = f
    from .dynamics import _losses

    loss, acc = _losses(logits[:, :n], Y)
    test_logits = None if Xt is None else logits[:, n:]
    test_loss = test_acc = None
    if Yt is not None:
        test_loss, test_acc = _losses(test_logits, Yt)
    return CETrainResult(method, float(lr), rule, damping, loss, acc, logits[:, :n], test_loss, test_acc,
                         test_logits, params, diverged_at, steps_run)


__all__ = ["CETrainResult", "parameter_update", "train"]
