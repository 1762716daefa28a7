"""Block-diagonal Fisher: one block J̃_lᵀJ̃_l/N per layer (S = I of THEORY.md claim 2; rule "tikhonov").

    Θ_BD(x', X) = Σ_l Θ_l(x', X)(Θ_l + NρI)⁻¹,   Δθ_l = −η J̃_lᵀ(Θ_l + NρI)⁻¹u,

which equals L·I on the training points when every Θ_l has full rank N·k (ρ → 0⁺).
"""
from __future__ import annotations

import numpy as np

from . import _pattern
from .base import Method, register


def predict(lk, ctx):
    return _pattern.pattern_predict("block_diag", lk, ctx, np.eye(lk.depth))


BLOCK_DIAG = register(Method("block_diag", "one Fisher block per layer (S = I)", _pattern.block_diag_kernel,
                             _pattern.block_diag_direction, predict, damping_rule="tikhonov", layerwise=True,
                             metric=_pattern.pattern_metric(lambda ctx, depth: np.eye(depth)),
                             cost=_pattern.block_diag_cost))
