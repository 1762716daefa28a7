"""Elementwise activations φ, written to match neural-tangents' stax layers bit for bit.

Each named activation records which infinite-width formula applies to it
(:mod:`ntk_ngd.backends.recursions`):

* ``"linear"``      φ(x) = x                                   (stax.Identity)
* ``"rectifier"``   φ(x) = a·min(x, 0) + b·max(x, 0)             (stax.ABRelu(a, b)):
  relu (a, b) = (0, 1), leaky_relu (0.1, 1), abs (−1, 1); closed form from the arc-cosine kernels
* ``"erf"``         φ(x) = erf(x)                               (stax.Erf(1, 1, 0)); arcsin formula
* ``"gelu"``        φ(x) = x·Φ(x)                               (stax.Gelu()); Tsuchida et al. (2020)
* ``"sin"``         φ(x) = sin(x)                               (stax.Sin(1, 1, 0)); exponentials
* ``None``          any other elementwise φ (a user callable): Gaussian quadrature

NT's ``Gelu()`` is the exact one, φ(x) = x·Φ(x) = jax.nn.gelu(x, approximate=False) (its
``approximate`` flag changes only the finite-width ``apply_fn``, never the kernel), and
``Sin()`` is 1·sin(1·x + 0). Every formula below repeats NT's arithmetic, multiplications by 1
included, so that finite-width outputs agree to the last bit.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf


@dataclasses.dataclass(frozen=True)
class Activation:
    """An elementwise φ and the infinite-width formula that applies to it.

    ``closed_form``: "linear", "rectifier", "erf", "gelu", "sin" or None (quadrature only).
    ``slopes``: (a, b) of φ(x) = a·min(x, 0) + b·max(x, 0) when ``closed_form == "rectifier"``.
    """

    name: str
    fn: Callable
    closed_form: str | None = None
    slopes: tuple[float, float] | None = None

    def __call__(self, x):
        return self.fn(x)

    def derivative(self, x):
        """φ'(x), elementwise, by forward-mode differentiation of φ (any elementwise jnp φ)."""
        return jax.jvp(self.fn, (x,), (jnp.ones_like(x),))[1]


def _rectifier(name: str, a: float, b: float) -> Activation:
    def fn(x):
        return a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0)  # stax.ABRelu's apply

    return Activation(name, fn, "rectifier", (float(a), float(b)))


def _identity(x):
    return x


def _erf(x):
    return 1.0 * erf(1.0 * x) + 0.0  # stax.Erf(a=1, b=1, c=0)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)  # stax.Gelu() (approximate=False is its default)


def _sin(x):
    return 1.0 * jnp.sin(1.0 * x + 0.0)  # stax.Sin(a=1, b=1, c=0)


#: The activations of ``ntk_ngd.networks.ACTIVATIONS``, by the same names.
ACTIVATIONS: dict[str, Activation] = {
    "relu": _rectifier("relu", 0.0, 1.0),
    "erf": Activation("erf", _erf, "erf"),
    "linear": Activation("linear", _identity, "linear"),
    "gelu": Activation("gelu", _gelu, "gelu"),
    "leaky_relu": _rectifier("leaky_relu", 0.1, 1.0),
    "abs": _rectifier("abs", -1.0, 1.0),
    "sin": Activation("sin", _sin, "sin"),
}


def get(activation) -> Activation:
    """An :class:`Activation` from a name in :data:`ACTIVATIONS`, an Activation, or an
    elementwise callable φ (jnp array → jnp array of the same shape; quadrature kernels)."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)} "
                             "or an elementwise callable")
        return ACTIVATIONS[activation]
    if callable(activation):
        return Activation(getattr(activation, "__name__", repr(activation)), activation)
    raise ValueError(f"activation must be a name in {sorted(ACTIVATIONS)} or a callable, got {activation!r}")
