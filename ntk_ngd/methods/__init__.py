"""Fisher approximations in function space, one module each, and their registry.

``METHODS`` lists the registered names; :func:`get` returns a :class:`Method`.
"""
from . import empirical, exact, gd, kfac, layerwise, unitwise  # noqa: F401  (registration)
from .base import Method, MethodKernel, get, names
from .layerwise import banded_pattern, tridiagonal_pattern

METHODS = names()

__all__ = ["METHODS", "Method", "MethodKernel", "get", "banded_pattern", "tridiagonal_pattern"]
