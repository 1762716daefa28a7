"""Block-tridiagonal Fisher: layer blocks on the main and first off-diagonals (THEORY.md claim 2;
rule "tikhonov"). The layer pattern S = tridiagonal(L); α = 1ᵀS⁺1 = ceil(L/3) when 1 ∈ range(S),
including L ≡ 2 (mod 3) where S is singular. Algebra in :mod:`._pattern`.
"""
from __future__ import annotations

from . import _pattern
from .base import Method, register


def kernel(train, test, ctx):
    return _pattern.pattern_kernel(train, test, ctx, _pattern.tridiagonal_pattern(train.depth), "block_tridiag")


def direction(train, ctx):
    return _pattern.pattern_direction(train, ctx, _pattern.tridiagonal_pattern(len(train.inputs)))


def predict(lk, ctx):
    return _pattern.pattern_predict("block_tridiag", lk, ctx, _pattern.tridiagonal_pattern(lk.depth))


BLOCK_TRIDIAG = register(Method("block_tridiag", "layer blocks on the main and first off-diagonals", kernel,
                                direction, predict, damping_rule="tikhonov", layerwise=True,
                                metric=_pattern.pattern_metric(lambda ctx, depth: _pattern.tridiagonal_pattern(depth)),
                                cost=_pattern.pattern_cost))
