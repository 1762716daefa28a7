"""ntk-ngd: natural-gradient descent in wide networks, verified in function space.

Importing the package enables jax float64 (set NTK_NGD_X64=0 before import to opt out).
"""
from . import _config

_config.apply()

__version__ = "0.1.0"
