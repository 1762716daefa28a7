"""Damping ρ ≥ 0: one object, traced by jax, applied by each method by its declared rule
(THEORY.md "Damping").

Every method regularises its curvature G with one number ρ; the literature applies it in three
ways, and each method states which (``Method.damping_rule``):

* ``"tikhonov"`` — G + ρI. In Gram form the N·k-sized Grams get the shift N·ρ
  (J(G + ρ)⁻¹Jᵀ/N = Θ(Θ + NρI)⁻¹ by push-through). exact, block_diag, block_tridiag, pattern,
  unit_wise, ef, sf, kpsvd, ekfac, diag, kfac_cor.
* ``"factored"`` — K-FAC's (A + √ρ I) ⊗ (B + √ρ I): each Kronecker factor gets √ρ; the N-sized
  factor Grams get N·√ρ (and N·s_l·√ρ for a rescaled readout factor).
* ``"gram"`` — iEF's λ = ρ added to the N×N Gram of the per-sample gradients GGᵀ, with no factor N.
* ``"none"`` — gradient descent ignores ρ.

ρ = 0 is the limit ρ → 0⁺: a pseudo-inverse of the Gram (:mod:`ntk_ngd.linalg`). Whether ρ > 0 is
the only thing jit specialises on (``positive``, static: it selects the pseudo-inverse structure
where one differs); the value itself is a traced array, so a sweep over positive values compiles once.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import _validate

RULES = ("tikhonov", "factored", "gram", "none")


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class Damping:
    """ρ (``value``, traced) and whether it is positive (``positive``, static)."""

    value: jax.Array | float
    positive: bool

    @classmethod
    def of(cls, damping) -> "Damping":
        """A Damping from a number ≥ 0 (validated) or an existing Damping."""
        if isinstance(damping, Damping):
            return damping
        if _validate.is_traced(damping):  # a traced ρ (e.g. jax.grad w.r.t. the damping) is taken as positive
            return cls(damping, True)
        rho = _validate.nonnegative("damping", damping)
        return cls(jnp.asarray(rho, dtype=jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32),
                   rho > 0)

    def shift(self, rule: str, n: int, scale: float = 1.0):
        """The shift added to the method's N·k-sized Gram under ``rule`` (module docstring):
        tikhonov N·ρ, factored scale·N·√ρ (``scale`` = s_l, the readout rescaling of K-FAC), gram ρ, none 0."""
        if rule == "tikhonov":
            return n * self.value
        if rule == "factored":
            return scale * n * jnp.sqrt(self.value)
        if rule == "gram":
            return self.value
        if rule == "none":
            return 0.0 * self.value
        raise ValueError(f"unknown damping rule {rule!r}; choose one of: {', '.join(RULES)}")

    def __float__(self) -> float:
        return float(self.value)

    # pytree: value is a leaf, positive is static (aux data)
    def tree_flatten(self):
        return (self.value,), self.positive

    @classmethod
    def tree_unflatten(cls, positive, children):
        return cls(children[0], positive)


__all__ = ["Damping", "RULES"]
