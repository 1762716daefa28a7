"""Per-layer features of the factored form: the same scaled inputs h̃ and loss-whitened backward signals δ̃ as
the Gram form (THEORY.md "Factored form (parameter space)").

Layer l's Jacobian row (n, j) is h̃_n ⊗ δ̃_{n,j} with h̃_n the scaled input of :func:`ntk_ngd.kernels.layer_features`
(the bias input already scaled by the network's σ_b convention) and δ̃_{n,j} = Σ_c R_{n,jc} δ_{n,c} the
whitened backward signal (:mod:`ntk_ngd.losses`; R = I for MSE). From them, with W̃ = [W; b] (d × m),

    A_l = H̃ᵀH̃/N  (d × d),    G_l = Σ_{n,j} δ̃_{n,j}δ̃_{n,j}ᵀ/N = Δ̃ᵀΔ̃/N  (m × m),    ∇_l = H̃ᵀV/N,  V[n] = Σ_j u_{nj}δ̃_{n,j},

and F_l = J̃_lᵀJ̃_l/N = (1/N) Σ_n (h̃_nh̃_nᵀ) ⊗ S_n, S_n = Σ_j δ̃_{n,j}δ̃_{n,j}ᵀ. Nothing here is N·C-squared.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import linalg
from ..kernels import layer_features


class Features(NamedTuple):
    """Per layer H̃ (N, d) and whitened δ̃ (N, k, m); u (N, k) the whitened residual; f (N, C) the outputs."""

    inputs: tuple
    deltas: tuple
    u: jax.Array
    f: jax.Array
    whitening: object


def whitened_features(net, params, X, Y, loss, offset=None) -> Features:
    """:class:`Features` at ``params`` on (X, Y): the deltas whitened exactly as :func:`ntk_ngd.optim.direction`
    whitens them (``offset`` is subtracted from the outputs: a centred model has the same Jacobian)."""
    inputs, deltas, f = layer_features(net, params, X, with_outputs=True)
    if offset is not None:
        f = f - offset
    w = loss.whiten(f, Y)
    if w.R is not None:
        deltas = [jnp.einsum("nkc,ncm->nkm", w.R, d) for d in deltas]
    return Features(tuple(inputs), tuple(deltas), w.u, f, w)


def reverse_signals(net, params, X):
    """(f, H̃ per layer, signals): one forward pass, and ``signals(v)`` the backward signals of the output
    cotangents v (N, S, C), per layer (N, S, m): δ_l[n, s] = Σ_c v[n, s, c] ∂f_c(x_n)/∂z_l(x_n), S reverse passes
    (vmapped) instead of the C of :func:`ntk_ngd.kernels.layer_features` (the same taps; by linearity
    signals(v)[n, s] = Σ_c v[n, s, c] δ_{l,c}(x_n)). A mini-batch step needs 1 + S of them, not C: the
    784-output autoencoder's sampled-Fisher K-FAC step needs 2 reverse passes, not 784."""
    X = jnp.asarray(X)
    taps = [jnp.zeros((X.shape[0], m), X.dtype) for m in net.fan_out]
    f, vjp_fn, inputs = jax.vjp(lambda t: net.forward_with_taps(params, X, t), taps, has_aux=True)

    def signals(v):
        (deltas,) = jax.vmap(vjp_fn, in_axes=1)(jnp.asarray(v, f.dtype))  # each (S, N, m)
        return tuple(jnp.moveaxis(d, 0, 1) for d in deltas)

    return f, tuple(inputs), signals


def flat_rows(delta):
    """Δ̃ (N·k, m): the whitened backward signals as rows (n, j)."""
    return delta.reshape(-1, delta.shape[-1])


def kron_factors(H, delta):
    """(A, G) = (H̃ᵀH̃/N, Δ̃ᵀΔ̃/N): the K-FAC factors of one layer (module docstring)."""
    n = H.shape[0]
    D = flat_rows(delta)
    return H.T @ H / n, D.T @ D / n


def gradient(H, delta, u):
    """∇_l = H̃ᵀV/N (d × m), V[n] = Σ_j u_{nj}δ̃_{n,j}: the layer's gradient of the loss."""
    return linalg.jt(H, delta, jnp.reshape(u, (-1,))) / H.shape[0]


__all__ = ["Features", "flat_rows", "gradient", "kron_factors", "reverse_signals", "whitened_features"]
