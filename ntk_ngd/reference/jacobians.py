"""Parameters ↔ flat θ, the explicit Jacobian, and the reference's own forward pass.

Conventions (THEORY.md "Setup"; the Gram form uses the same):

* Layer l contributes W̃_l = concatenate([W_l, b_l[None, :]]) of shape (fan_in + bias, fan_out),
  flattened row-major (index ``i * fan_out + j``); layers in order 1..L (:func:`flatten_params`,
  :func:`unflatten_params`, :func:`layer_slices`).
* Outputs are flattened row-major, row ``n * C + c``: J = ∂f(X)/∂θ is (N·C, P).
* Row (n, c) of layer l's block is J_l[(n, c)] = h̃_{l−1}(x_n) ⊗ δ_{l,c}(x_n) with the scaled input
  h̃ = [σ_w h/√fan_in, σ_b] and δ_{l,c} = ∂f_c/∂z_l (:func:`layer_signals`, tested against J).

Nothing here uses ``Network.forward_with_taps`` or :mod:`ntk_ngd.kernels`: J comes from
``jax.jacrev`` of neural-tangents' ``apply`` and the signals from this module's own forward pass.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..networks import Network

#: Largest parameter count the dense reference accepts (a P×P float64 matrix is 3.2 GB there).
MAX_PARAMS = 20000


def check_net(net: Network) -> Network:
    """``net`` if it is a Network with P <= :data:`MAX_PARAMS` (one-line ValueError otherwise)."""
    if not isinstance(net, Network):
        raise ValueError(f"net must be an ntk_ngd.networks.Network (from mlp(...)), got {type(net).__name__}")
    if net.num_params > MAX_PARAMS:
        raise ValueError(f"the network has P={net.num_params} parameters; the dense reference is limited to "
                         f"P <= {MAX_PARAMS}")
    return net


def layer_slices(net: Network) -> list[slice]:
    """Slice of each Dense layer's parameters in the flat vector θ (layers 1..L in order)."""
    ends = np.cumsum((0,) + tuple(net.layer_param_counts))
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def flatten_params(net: Network, params) -> np.ndarray:
    """Flat θ (P,): per layer W̃ = [W; b] of shape (fan_in + bias, fan_out), row-major.

    neural-tangents stores b with shape (1, fan_out); (fan_out,) is accepted too.
    """
    parts = []
    for l in range(net.depth):
        W, b = params[2 * l]
        Wt = np.asarray(W, dtype=float)
        if net.bias:
            Wt = np.concatenate([Wt, np.asarray(b, dtype=float).reshape(1, -1)], axis=0)
        parts.append(Wt.reshape(-1))
    return np.concatenate(parts)


def unflatten_params(net: Network, theta):
    """neural-tangents params (list, Dense l at index 2l, ``()`` for activations) from θ."""
    theta = jnp.asarray(theta)
    if theta.shape != (net.num_params,):
        raise ValueError(f"theta must have shape ({net.num_params},), got {tuple(theta.shape)}")
    params = []
    for l, (sl, (fi, fo)) in enumerate(zip(layer_slices(net), net.layer_shapes)):
        Wt = theta[sl].reshape(fi + int(net.bias), fo)
        params.append((Wt[:fi], Wt[fi:] if net.bias else None))  # NT stores b as (1, fan_out)
        if l < net.depth - 1:
            params.append(())
    return params


def jacobian(net: Network, params, X) -> np.ndarray:
    """J = ∂f(X)/∂θ, shape (N·C, P), rows n·C + c, columns in the :func:`flatten_params` order.

    ``jax.jacrev`` of θ ↦ ``net.apply(unflatten_params(net, θ), X).reshape(-1)``, jit-compiled once per
    network and input shape (only to avoid op-by-op dispatch).
    """
    check_net(net)
    X = np.asarray(net.check_inputs(X), dtype=float)
    return np.asarray(_jacobian(net, jnp.asarray(flatten_params(net, params)), X), dtype=float)


@functools.partial(jax.jit, static_argnums=0)
def _jacobian(net, theta, X):
    return jax.jacrev(lambda t: net.apply(unflatten_params(net, t), X).reshape(-1))(theta)


def jacobians(net: Network, params, X, X_test=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(J(X), J(X_test) or None) from one Jacobian of the stacked inputs (rows are per sample)."""
    if X_test is None:
        return jacobian(net, params, X), None
    X = np.asarray(net.check_inputs(X), dtype=float)
    X_test = np.asarray(net.check_inputs(X_test, "X_test"), dtype=float)
    J = jacobian(net, params, np.concatenate([X, X_test]))
    n = X.shape[0] * net.out_dim
    return J[:n], J[n:]


def _forward(net: Network, params, X, taps):
    """f(X) and the scaled inputs h̃_{l−1} = [w_std h/√fan_in, b_std], with taps[l] added to z_l."""
    h = jnp.asarray(X)
    inputs = []
    for l in range(net.depth):
        W, b = params[2 * l]
        h_scaled = (net.w_std / np.sqrt(W.shape[0])) * h
        z = h_scaled @ W + taps[l]
        if net.bias:
            z = z + net.b_std * b
            h_scaled = jnp.concatenate([h_scaled, jnp.full((h.shape[0], 1), net.b_std)], axis=1)
        inputs.append(h_scaled)
        h = net.activate(z) if l < net.depth - 1 else z
    return h, inputs


@functools.partial(jax.jit, static_argnums=0)
def _signals(net, params, X, taps):
    return _forward(net, params, X, taps)[1], jax.jacrev(lambda t: _forward(net, params, X, t)[0])(taps)


def layer_signals(net: Network, params, X) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, deltas): ``inputs[l]`` (N, fan_in + bias) = h̃_{l−1}(x_n) and ``deltas[l]``
    (N, C, fan_out) = δ_{l,c}(x_n) = ∂f_c(x_n)/∂z_l(x_n), from this module's own forward pass
    (δ by ``jax.jacrev`` w.r.t. zero taps added to every pre-activation; samples do not interact,
    so the per-sample diagonal of that Jacobian is δ).

    J_l row (n, c) equals ``kron(inputs[l][n], deltas[l][n, c])`` (tested).
    """
    check_net(net)
    X = np.asarray(net.check_inputs(X), dtype=float)
    N = X.shape[0]
    taps = [jnp.zeros((N, fo)) for fo in net.fan_out]
    inputs, jac = _signals(net, params, X, taps)  # jac[l]: (N, C, N, fo)
    idx = np.arange(N)
    deltas = [np.asarray(j, dtype=float)[idx, :, idx, :] for j in jac]  # (N, C, fo)
    return [np.asarray(h, dtype=float) for h in inputs], deltas


__all__ = ["MAX_PARAMS", "check_net", "flatten_params", "jacobian", "jacobians", "layer_signals", "layer_slices",
           "unflatten_params"]
