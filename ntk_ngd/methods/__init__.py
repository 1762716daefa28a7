"""Fisher approximations in function space, one module each, and their registry.

``METHODS`` lists the registered names; :func:`get` returns a :class:`Method`.
"""
# Registration order is the order of METHODS.
from . import gd, exact, layerwise, kfac, unitwise, empirical, kpsvd, ekfac, diagonal  # noqa: F401,I001
from .base import Method, MethodKernel, get, names
from .layerwise import banded_pattern, tridiagonal_pattern

METHODS = names()

__all__ = ["METHODS", "Method", "MethodKernel", "get", "banded_pattern", "tridiagonal_pattern"]
