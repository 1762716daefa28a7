"""A fully connected network in pure jax with neural-tangents' NTK parameterisation and layout.

Depth L = len(hidden) + 1 Dense layers (THEORY.md "Setup"):

    z_1 = (σ_w/√D) x W_1 + σ_b b_1,   h_l = φ(z_l),   z_{l+1} = (σ_w/√M_l) h_l W_{l+1} + σ_b b_{l+1},

f(x) = z_L, every entry of W_l (fan_in, fan_out) and b_l (1, fan_out) drawn from N(0, 1).

``params`` has exactly the layout of ``stax.serial(Dense, act, Dense, ..., Dense)``: a list with
one ``(W, b)`` tuple per Dense layer (``b`` is None without bias) and ``()`` per activation, so
parameters move freely between this module and neural-tangents.

:func:`init` repeats the random-key use of NT's ``serial`` (jax.example_libraries.stax.serial) and
``Dense`` init functions:

    key ← PRNGKey(seed);  for every layer (Dense and activation alike): key, k_layer ← split(key)
    Dense: k_W, k_b ← split(k_layer);  W ← normal(k_W, (fan_in, fan_out));  b ← normal(k_b, (1, fan_out))

so that for one seed both give bit-identical parameters. jax 0.5 changed the default of
``jax_threefry_partitionable`` to True, which changes every random draw; :func:`init` draws
with it off by default (NT's jax 0.4.x setting), so a seed means the same parameters on every jax.
:func:`apply` repeats NT's Dense arithmetic, (σ_w/√fan_in)·tensordot(W, h) + σ_b·b.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import activations as _activations


def _widths(in_dim, hidden, out_dim) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, (list, tuple, np.ndarray)):
        raise ValueError(f"hidden must be a sequence of the L − 1 hidden widths, got {hidden!r}")
    widths = (in_dim, *tuple(hidden), out_dim)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ValueError(f"layer widths must be positive integers, got in_dim={in_dim}, hidden={hidden}, "
                             f"out_dim={out_dim}")
    return tuple(int(w) for w in widths)


def init(seed, in_dim: int, hidden: Sequence[int], out_dim: int, bias: bool = True,
         threefry_partitionable: bool | None = False) -> list:
    """N(0, 1) parameters in neural-tangents' stax layout, with NT's key splitting.

    ``seed``: an int (``PRNGKey(seed)``, as ``Network.init``) or a jax PRNG key.
    ``hidden``: the L − 1 hidden widths (M_1, ..., M_{L−1}); empty for a linear model.
    ``threefry_partitionable``: the jax PRNG mode for these draws; False (default) gives NT
    0.6.5's bits on jax 0.4.x and later alike, None follows the global jax setting.
    Returns ``[(W_1, b_1), (), (W_2, b_2), (), ..., (W_L, b_L)]``.
    """
    if threefry_partitionable is not None:
        with jax.threefry_partitionable(bool(threefry_partitionable)):
            return init(seed, in_dim, hidden, out_dim, bias, threefry_partitionable=None)
    widths = _widths(in_dim, hidden, out_dim)
    if isinstance(seed, (bool, float)) or (isinstance(seed, (int, np.integer)) and seed < 0):
        raise ValueError(f"seed must be a non-negative integer or a jax PRNG key, got {seed!r}")
    key = jax.random.PRNGKey(int(seed)) if isinstance(seed, (int, np.integer)) else seed
    depth = len(widths) - 1
    params = []
    for l in range(depth):
        key, k_layer = jax.random.split(key)
        k_w, k_b = jax.random.split(k_layer)
        W = jax.random.normal(k_w, (widths[l], widths[l + 1]))
        b = jax.random.normal(k_b, (1, widths[l + 1])) if bias else None
        params.append((W, b))
        if l < depth - 1:
            key, _ = jax.random.split(key)  # the activation layer's key: serial splits for it too
            params.append(())
    return params


def check_params(params) -> int:
    """Depth L of a stax-layout parameter list; one-line ValueError if it is not one."""
    ok = isinstance(params, (list, tuple)) and len(params) % 2 == 1
    if ok:
        for i, p in enumerate(params):
            if i % 2:
                ok = ok and (p == () or p is None)
            else:
                ok = ok and isinstance(p, (list, tuple)) and len(p) == 2 and getattr(p[0], "ndim", 0) == 2
    if not ok:
        raise ValueError("params must be a stax-layout list [(W_1, b_1), (), (W_2, b_2), ..., (W_L, b_L)]")
    return (len(params) + 1) // 2


def apply(params, X, activation="relu", w_std: float = 1.0, b_std: float = 0.1, taps=None):
    """f(X), shape (N, C), of the MLP with parameters ``params`` (stax layout).

    ``activation``: a name in :data:`ntk_ngd.backends.activations.ACTIVATIONS` or an elementwise
    callable. ``b_std`` multiplies the biases of layers that have one (``b`` not None).
    ``taps``: optional list of L arrays (N, fan_out_l) added to each pre-activation z_l;
    ∂f/∂taps[l] is the backward signal δ_l (as ``Network.forward_with_taps``).
    """
    depth = check_params(params)
    phi = _activations.get(activation)
    h = jnp.asarray(X)
    if h.ndim != 2 or h.shape[1] != params[0][0].shape[0]:
        raise ValueError(f"X must have shape (N, {params[0][0].shape[0]}), got {h.shape}")
    for l in range(depth):
        W, b = params[2 * l]
        # NT's Dense: moveaxis(tensordot(W, h, (0, channel)), 0, channel), then the scalar norm
        z = (w_std / h.shape[-1] ** 0.5) * jnp.moveaxis(jnp.tensordot(W, h, (0, 1)), 0, 1)
        if b is not None:
            z = z + b_std * b
        if taps is not None:
            z = z + taps[l]
        h = phi(z) if l < depth - 1 else z
    return h
