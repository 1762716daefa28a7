"""Fisher approximations, one module each, and their registry (the only list of methods).

``METHODS`` lists the registered names in registration order; :func:`get` returns a :class:`Method`.
Adding an approximation: one module here that calls :func:`register`, a dense reference in
:mod:`ntk_ngd.reference` and its tests (the registry-wide suite picks it up).
"""
# Registration order is the order of METHODS.
from . import gd, exact, block_diag, block_tridiag, pattern, kfac, unit_wise, ef, ief, sf  # noqa: F401,I001
from . import kpsvd, ekfac, diag, kfac_cor  # noqa: F401,I001
from ._pattern import banded_pattern, tridiagonal_pattern
from .base import Condition, Context, Method, MethodKernel, Option, Prediction, get, names, registered

METHODS = names()

__all__ = ["METHODS", "Condition", "Context", "Method", "MethodKernel", "Option", "Prediction", "banded_pattern",
           "get", "names", "registered", "tridiagonal_pattern"]
