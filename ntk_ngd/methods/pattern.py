"""Any symmetric L×L layer pattern S (``pattern=S``, or ``bandwidth=k`` for S_ab = 1[|a − b| ≤ k]):
G_ab = S_ab J̃_aᵀJ̃_b/N (THEORY.md claim 2; rule "tikhonov"). Algebra in :mod:`._pattern`.
"""
from __future__ import annotations

from . import _pattern
from .base import Method, register


def kernel(train, test, ctx):
    return _pattern.pattern_kernel(train, test, ctx, _pattern.pattern_of(ctx, train.depth))


def direction(train, ctx):
    return _pattern.pattern_direction(train, ctx, _pattern.pattern_of(ctx, len(train.inputs)))


def predict(lk, ctx):
    return _pattern.pattern_predict("pattern", lk, ctx, _pattern.pattern_of(ctx, lk.depth))


PATTERN = register(Method("pattern", "any symmetric L×L layer pattern S (pattern=S, or bandwidth=k)", kernel,
                          direction, predict, damping_rule="tikhonov", layerwise=True, options=_pattern.pattern_options(),
                          metric=_pattern.pattern_metric(_pattern.pattern_of),
                          check_options=_pattern.check_pattern_options,
                          example_options=(("bandwidth", 1),), cost=_pattern.pattern_cost))
