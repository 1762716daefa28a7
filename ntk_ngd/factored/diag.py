"""Diagonal Fisher in parameter space: D_ab = (1/N) Σ_{n,j} h̃_{n,a}² δ̃_{(n,j),b}², the mean squared
per-sample-per-row gradient of parameter (a, b), and W̃_l = ∇_l ⊘ (D_l + ρ) ("tikhonov"; ρ = 0 keeps every
D_ab > 0, as the Gram form does: rcond defaults to 0)."""
from __future__ import annotations

import jax.numpy as jnp

from .. import linalg
from .form import FactoredForm


def statistics(H, delta, ctx):
    return (H**2).T @ jnp.sum(delta**2, axis=1) / H.shape[0]


def inverse(D, H, delta, ctx, settings, l):
    rcond = 0.0 if ctx.rcond is None else ctx.rcond
    return linalg.inverse_eigenvalues(D.reshape(-1), ctx.damping.value, rcond).reshape(D.shape)


def apply(w, grad, ctx, settings):
    return grad * w


FORM = FactoredForm(statistics, inverse, apply)

__all__ = ["FORM"]
