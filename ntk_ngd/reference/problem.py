"""The explicit whitened problem every builder works on (THEORY.md "Setup").

A loss gives per-sample factors R_n (k × C) and a whitened residual u_n with

    F = J̃ᵀJ̃/N,   ∇L = J̃ᵀu/N = Jᵀg/N,   J̃ = RJ,   R = blockdiag(R_n),

* MSE, L = (1/2N) Σ ||f_n − y_n||²: R_n = I_C (k = C), u = g = r = f − Y; iEF weight s_n = ||r_n||².
* Cross-entropy: R_n, u_n from :mod:`.softmax` (autodiff g_n and Λ_n, k = C − 1); s_n = ||g_n||².

Test rows are J̃(x') = J(x') for MSE and (I ⊗ Vᵀ)J(x') for cross-entropy (logit steps in the basis V
of 1^⊥). The K-FAC signals are whitened like J: δ̃_{l,n,i} = Σ_c R_n[i, c] δ_{l,c}(x_n), so that
J̃_l row (n, i) = h̃_{l−1}(x_n) ⊗ δ̃_{l,n,i}.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from .. import _validate
from ..losses import null_basis
from ..networks import Network
from . import softmax
from .jacobians import check_net, jacobians, layer_signals, layer_slices

LOSSES = ("mse", "cross_entropy")


@dataclasses.dataclass
class Whitened:
    """J̃ (N·k, P), J̃ at test points or None, u (N, k), s (N,), ∇L (P,) (None without targets), R (N, k, C)
    (None: identity), the logits f, the raw J (N·C, P) and J(x') (or None), the layer signals h̃ (N, d_l)
    and whitened δ̃ (N, k, m_l)."""

    net: Network
    loss: str
    f: np.ndarray
    J_raw: np.ndarray
    J_raw_test: np.ndarray | None
    J: np.ndarray
    J_test: np.ndarray | None
    R: np.ndarray | None
    u: np.ndarray | None
    s: np.ndarray | None
    grad: np.ndarray | None
    inputs: list
    deltas: list

    @property
    def n(self) -> int:
        return self.f.shape[0]

    @property
    def k(self) -> int:
        return self.J.shape[0] // self.n

    @property
    def slices(self) -> list[slice]:
        return layer_slices(self.net)

    def per_sample(self) -> np.ndarray:
        """J̃ as (N, k, P)."""
        return self.J.reshape(self.n, self.k, -1)

    def model_scores(self, samples: int, seed: int, step: int) -> np.ndarray:
        """Whitened model samples ξ (N, k, samples) of the sampled Fisher's draw ``step``, key
        fold_in(PRNGKey(seed), step): MSE ε ~ N(0, I_C) by ``jax.random.normal(key, (samples, N, C))``;
        cross-entropy y ~ Cat(p) and R_nᵀξ_n = p_n − e_y (:mod:`.softmax`)."""
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        n, c = self.f.shape
        if self.loss == "mse":
            eps = np.asarray(jax.random.normal(key, (samples, n, c), dtype=np.float64))
            return eps.transpose(1, 2, 0)
        scores = softmax.sampled_scores(self.f, key, samples)
        return np.stack([softmax.whiten_vectors(self.R, sc) for sc in scores], axis=-1)


def check_loss(loss: str) -> str:
    return _validate.choice("loss", loss, LOSSES)


def check_targets(net: Network, loss: str, Y, n: int) -> np.ndarray:
    """MSE targets (N, C) (or (N,) with C = 1), cross-entropy labels as (N, C) probability rows."""
    if loss == "cross_entropy":
        return softmax.check_labels(Y, n, net.out_dim)
    arr = np.asarray(Y)
    if arr.ndim == 1 and net.out_dim == 1:
        arr = arr.reshape(-1, 1)
    return np.asarray(_validate.finite_matrix("Y", arr, cols=net.out_dim, rows=n), dtype=float)


def check_residual(residual, n: int, c: int) -> np.ndarray:
    r = np.asarray(residual, dtype=float)
    if r.size != n * c or r.ndim not in (1, 2) or (r.ndim == 2 and r.shape != (n, c)):
        raise ValueError(f"residual must have shape ({n}, {c}) or ({n * c},), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("residual contains NaN or inf")
    return r.reshape(n, c)


def build(net: Network, params, X, loss: str = "mse", targets=None, residual=None, outputs=None,
          X_test=None) -> Whitened:
    """The :class:`Whitened` problem at ``params``; ``outputs`` (default f(X; params)) are the logits the
    whitening and residual are taken at; ``residual`` f − Y is an MSE-only alternative to ``targets``."""
    check_net(net)
    loss = check_loss(loss)
    X = np.asarray(net.check_inputs(X), dtype=float)
    n, c = X.shape[0], net.out_dim
    if loss == "cross_entropy" and c < 2:
        raise ValueError(f"cross_entropy needs a network with >= 2 outputs (one logit per class), got out_dim={c}")
    if residual is not None and (loss != "mse" or targets is not None):
        raise ValueError("residual= is the MSE residual f - Y; pass it or targets=, not both (cross_entropy: targets=)")
    Y = None if targets is None else check_targets(net, loss, targets, n)
    f = (np.asarray(net.apply(params, X), dtype=float) if outputs is None
         else np.asarray(_validate.finite_matrix("outputs", outputs, cols=c, rows=n), dtype=float))
    J_raw, J_raw_test = jacobians(net, params, X, X_test)
    J_test = J_raw_test
    inputs, deltas = layer_signals(net, params, X)
    if loss == "mse":
        g = check_residual(residual, n, c) if residual is not None else (None if Y is None else f - Y)
        R, u, s = None, g, None if g is None else np.sum(g**2, axis=1)
        J = J_raw
    else:
        g, lam = softmax.logit_derivatives(f, np.eye(c)[np.zeros(n, int)] if Y is None else Y)
        R = softmax.whitening_factors(lam)  # Λ_n does not depend on the labels
        g = None if Y is None else g
        u, s = (None, None) if g is None else (softmax.whiten_vectors(R, g), np.sum(g**2, axis=1))
        J = np.einsum("nkc,ncp->nkp", R, J_raw.reshape(n, c, -1)).reshape(n * (c - 1), -1)
        if J_raw_test is not None:
            V = np.asarray(null_basis(c), dtype=float)
            J_test = np.einsum("ck,ncp->nkp", V, J_raw_test.reshape(-1, c, J.shape[1])).reshape(-1, J.shape[1])
        deltas = [np.einsum("nkc,ncm->nkm", R, d) for d in deltas]
    grad = None if g is None else J_raw.T @ g.reshape(-1) / n
    return Whitened(net, loss, f, J_raw, J_raw_test, J, J_test, R, u, s, grad, inputs, deltas)


__all__ = ["LOSSES", "Whitened", "build", "check_loss", "check_residual", "check_targets"]
