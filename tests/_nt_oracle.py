"""neural-tangents (NT) as a reference for the pure-jax backend, built from NT's stax directly.

Independent of ntk_ngd.networks and ntk_ngd.kernels (which may dispatch to the jax backend), so
a comparison against these values is never the backend against itself. Used by
tests/test_backends.py and scripts/make_nt_reference.py; needs neural_tangents (imported lazily).

The network is ``stax.serial(Dense, φ, Dense, ..., Dense)`` in the NTK parameterisation,
Dense(fan_out, W_std=σ_w, b_std=σ_b or None). Per-layer kernels as THEORY.md "Layer-wise
kernels": after Dense l, the kernel's nngp is K^H_l; the activation above it, fed a kernel with
ntk = 1, returns its derivative kernel Σ̇_l (NT's NTK recursion multiplies the incoming ntk by
Σ̇); K^Δ_L = 1 and K^Δ_l = Σ̇_l · σ_w² · K^Δ_{l+1}.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _activation_layer(name: str):
    from neural_tangents import stax

    return {"relu": stax.Relu, "erf": stax.Erf, "linear": stax.Identity, "gelu": stax.Gelu,
            "leaky_relu": lambda: stax.LeakyRelu(0.1), "abs": stax.Abs, "sin": stax.Sin}[name]()


def layers(act: str, hidden, out_dim: int, bias: bool, w_std: float, b_std: float) -> list:
    """The stax layers (init_fn, apply_fn, kernel_fn) of the MLP, Dense and activation alternating."""
    from neural_tangents import stax

    widths = (*hidden, out_dim)
    out = []
    for l, fan_out in enumerate(widths):
        out.append(stax.Dense(fan_out, W_std=w_std, b_std=b_std if bias else None, parameterization="ntk"))
        if l < len(widths) - 1:
            out.append(_activation_layer(act))
    return out


def init(stax_layers, seed: int, in_dim: int):
    """NT's parameters for PRNGKey(seed): [(W_1, b_1), (), ..., (W_L, b_L)]."""
    from neural_tangents import stax

    return stax.serial(*stax_layers)[0](jax.random.PRNGKey(seed), (-1, in_dim))[1]


def apply(stax_layers, params, X):
    from neural_tangents import stax

    return stax.serial(*stax_layers)[1](params, jnp.asarray(X))


def kernel_fn(stax_layers):
    from neural_tangents import stax

    return stax.serial(*stax_layers)[2]


def layer_grams(stax_layers, w_std: float, X, X2):
    """(fwd, bwd), each (L, N, N2): NT's K^H_l and K^Δ_l (module docstring), jit-compiled."""
    return jax.jit(functools.partial(_layer_grams, tuple(stax_layers), w_std))(jnp.asarray(X), jnp.asarray(X2))


def _layer_grams(stax_layers, w_std, X, X2):
    k = stax_layers[0][2](X, X2)
    fwd, derivative = [k.nngp], []
    for dense, act in zip(stax_layers[2::2], stax_layers[1::2]):
        derivative.append(act[2](k.replace(ntk=jnp.ones_like(k.nngp)), get="ntk"))
        k = dense[2](act[2](k))
        fwd.append(k.nngp)
    bwd = [jnp.ones_like(fwd[-1])]
    for dot in reversed(derivative):
        bwd.insert(0, dot * w_std**2 * bwd[0])
    return jnp.stack(fwd), jnp.stack(bwd)
