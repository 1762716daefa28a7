r"""The iEF paper's approximation-quality indicator, matrix-free (Wu et al. 2024, THEORY.md claim 7b).

For an update Δθ on a batch (X, Y) of N samples with softmax cross-entropy,

    γ(Δθ) = (Δθᵀ F Δθ)^{1/2} / |Δθᵀ ∇L|,      F = (1/N) Σ_n J_nᵀ Λ_n J_n  (the exact Fisher = GGN),

Λ_n = diag(p_n) − p_n p_nᵀ, ∇L = (1/N) Σ_n J_nᵀ g_n, g_n = p_n − y_n. With v_n = J_n Δθ (one
forward-mode product through the network, no P×P matrix and no Jacobian):

    Δθᵀ F Δθ = (1/N) Σ_n v_nᵀ Λ_n v_n = (1/N) Σ_n Σ_c p_nc (v_nc − p_nᵀv_n)²,   Δθᵀ∇L = (1/N) Σ_n g_nᵀ v_n.

The centred form is the same number as Σ_c p_c v_c² − (pᵀv)² without its cancellation. γ is scale-invariant
(γ(cΔθ) = γ(Δθ)), lower is better, and by Cauchy–Schwarz in the F inner product γ(Δθ) ≥ γ_NG with equality for
the natural gradient Δθ ∝ F⁺∇L:

    γ_NG = (∇Lᵀ F⁺ ∇L)^{−1/2} = (||P ũ||²/N)^{−1/2},

ũ the whitened residual (F = J̃ᵀJ̃/N, ∇L = J̃ᵀũ/N, P the projector onto range J̃). When J̃ has full row rank
N(C−1) (P ≥ N(C−1) and generic θ), P = I and with one-hot labels ||ũ_n||² = g_nᵀΛ_n⁺g_n = (1 − p_{n,y})/p_{n,y}
(THEORY.md "Cross-entropy NGD"), so

    γ_NG = (mean_n (1 − p_{n,y})/p_{n,y})^{−1/2},

a closed form from the predicted probabilities alone, with (1 − p_y)/p_y = Σ_{c≠y} exp(log p_c − log p_y)
(no cancellation when p_y → 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ... import losses


def terms(net, params, X, Y, update):
    """(Δθᵀ F Δθ, Δθᵀ ∇L) on (X, Y) for one-hot or soft label rows Y (N, C), traceable."""
    f, v = jax.jvp(lambda p: net.apply(p, X), (params,), (update,))
    logp = jax.nn.log_softmax(f, axis=-1)
    p = jnp.exp(logp)
    centred = v - jnp.sum(p * v, axis=-1, keepdims=True)
    quad = jnp.mean(jnp.sum(p * centred**2, axis=-1))
    slope = jnp.mean(jnp.sum((p - Y) * v, axis=-1))
    return quad, slope


def from_terms(quad, slope):
    """γ from (Δθᵀ F Δθ, Δθᵀ ∇L); inf where Δθᵀ∇L = 0."""
    quad, slope = np.asarray(quad, float), np.asarray(slope, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(slope != 0, np.sqrt(np.maximum(quad, 0.0)) / np.abs(slope), np.inf)


def ng_closed_form(net, params, X, Y):
    """(mean_n (1 − p_{n,y})/p_{n,y})^{−1/2} for one-hot Y: γ of the exact natural gradient when J̃ has full row
    rank (module docstring). Traceable."""
    logp = jax.nn.log_softmax(net.apply(params, X), axis=-1)
    logp_y = jnp.sum(Y * logp, axis=-1, keepdims=True)
    odds = jnp.sum(jnp.where(Y > 0, 0.0, jnp.exp(logp - logp_y)), axis=-1)
    return 1.0 / jnp.sqrt(jnp.mean(odds))


def _check(net, params, X, Y, update):
    """Validated (X, Y one-hot float rows, update) with one-line errors that say what to change."""
    X = np.asarray(net.check_inputs(X), dtype=float)
    Y = losses.check_labels(Y, X.shape[0], net.out_dim)
    p_def, u_def = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(update)
    if p_def != u_def:
        raise ValueError("update must be a pytree shaped like params (the optimiser's update or a direction), "
                         f"got structure {u_def} for params {p_def}")
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(update)):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"update leaf of shape {np.shape(b)} does not match the parameter of shape {np.shape(a)}")
        if not np.all(np.isfinite(np.asarray(b))):
            raise ValueError("update has non-finite entries; pass a finite update (a diverged run has none)")
    return jnp.asarray(X), jnp.asarray(Y), update


def gamma(net, params, X, labels, update) -> float:
    """γ(Δθ) (module docstring) of the pytree ``update`` at ``params`` on (X, labels) under softmax cross-entropy;
    labels are class indices (N,) or one-hot rows (N, C)."""
    X, Y, update = _check(net, params, X, labels, update)
    quad, slope = terms(net, params, X, Y, update)
    return float(from_terms(quad, slope))


__all__ = ["from_terms", "gamma", "ng_closed_form", "terms"]
