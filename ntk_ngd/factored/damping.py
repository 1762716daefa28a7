"""Damping of Kronecker factors in the factored form (THEORY.md "Damping" and "Factored form").

K-FAC's Gram-form rule ("factored", :mod:`ntk_ngd.damping`) is (A + √ρ I) ⊗ (B + √ρ I). Martens & Grosse
(2015, §6.3) split the same total instead with π_l = sqrt((tr A/d) / (tr B/m)) (d, m the factor sizes):

    (A + π√ρ I) ⊗ (B + (√ρ/π) I),

whose product's damping term ρ·I is the same and whose cross terms balance the two factors' scales (π = 1 when
their mean eigenvalues agree). ``factored_damping="pi"`` selects it; "rule" (default) is the Gram form's.
"""
from __future__ import annotations

import jax.numpy as jnp


def pi_split(A, B):
    """π = sqrt((tr A/d)/(tr B/m)); 1 where either trace vanishes (nothing to balance)."""
    ta, tb = jnp.trace(A) / A.shape[0], jnp.trace(B) / B.shape[0]
    ok = (ta > 0) & (tb > 0)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, ta / jnp.where(ok, tb, 1.0), 1.0)), 1.0)


def factor_shifts(A, B, damping, split: str):
    """(shift of A, shift of B): (√ρ, √ρ) for "rule", (π√ρ, √ρ/π) for "pi"."""
    root = jnp.sqrt(damping.value)
    if split == "pi":
        p = pi_split(A, B)
        return p * root, root / p
    return root, root


__all__ = ["factor_shifts", "pi_split"]
