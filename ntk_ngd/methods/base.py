"""The method interface and registry.

A method maps per-layer kernels to its function-space kernel (THEORY.md "Setup"):

    Θ_G(x', X) = J(x') (G + ρI)⁻¹ J(X)ᵀ / N,     Δf(x') = −η Θ_G(x', X) r,

returned for the training points (x' ∈ X) and, when test kernels are given, for test points.
ρ = 0 means the limit ρ → 0⁺ (a pseudo-inverse of an N·C-sized Gram, never a P×P matrix).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax

from ..kernels import LayerKernels


class MethodKernel(NamedTuple):
    """Θ_G on the training points (NC×NC) and on test×train points (N_test·C×NC, or None)."""

    train: jax.Array
    test: jax.Array | None


@dataclasses.dataclass(frozen=True)
class Method:
    """A Fisher approximation in function space.

    ``kernel(train, test, *, n, damping, residual, rcond, **options) -> MethodKernel`` where
    ``train``/``test`` are :class:`LayerKernels` (X×X and X_test×X), ``n`` = N and ``residual``
    the flattened (n·C + c) residual f(X) − Y (only for residual-dependent methods).
    """

    name: str
    kernel: Callable[..., MethodKernel]
    summary: str
    needs_residual: bool = False
    needs_unit_features: bool = False
    options: tuple[str, ...] = ()


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def test_kernel_or_none(test: LayerKernels | None, fn):
    """Apply ``fn`` to the test kernels when there are any."""
    return None if test is None else fn(test)
