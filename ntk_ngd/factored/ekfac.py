"""EKFAC in parameter space: the eigenbases U_A, U_G of K-FAC's factors and the per-entry second moments of the
per-sample, per-row gradients in that basis (George et al. 2018), + ρI ("tikhonov"):

    ĥ_n = U_Aᵀh̃_n,  δ̂_{n,j} = U_Gᵀδ̃_{n,j},  s_ab = (1/N) Σ_{n,j} ĥ_{n,a}² δ̂_{(n,j),b}²,
    W̃_l = U_A [(U_Aᵀ∇_lU_G) ⊘ (s + ρ)] U_Gᵀ.

Directions of A's or G's null space have s = 0 and zero gradient coordinates, so for ρ > 0 they add nothing and
this equals the Gram form, which works in the eigen-coordinates of K^H, K^Δ (the same basis on the data span).

The forward stage (``FactoredForm.forward``) keeps the same basis and moments and returns s + ρ instead of
1/(s + ρ), so ``apply`` gives the damped metric's product

    (M∇)_l = U_A [(U_Aᵀ∇_lU_G) ⊙ (s + ρ)] U_Gᵀ,   M_l = (U_A ⊗ U_G) diag(vec s + ρ) (U_A ⊗ U_G)ᵀ,

the inverse's exact counterpart for ρ > 0 (entries that ``inverse`` cuts as numerically zero, |s + ρ| ≤
rcond·max s, contribute ≈ 0 to M as well).
"""
from __future__ import annotations

import jax.numpy as jnp

from .. import linalg
from .features import kron_factors
from .form import FactoredForm


def statistics(H, delta, ctx):
    return kron_factors(H, delta)


def second_moments(H, delta, UA, UG):
    """s (d × m): the per-sample gradients' second moments in the basis U_A ⊗ U_G."""
    h = H @ UA
    d = jnp.einsum("njm,mb->njb", delta, UG)
    return (h**2).T @ jnp.sum(d**2, axis=1) / H.shape[0]


def basis(stats, H, delta):
    """(U_A, U_G, s): the eigenbases of K-FAC's factors and the second moments in them (``inverse`` and ``forward``)."""
    A, G = stats
    UA, UG = linalg.eigh_sym(A)[1], linalg.eigh_sym(G)[1]
    return UA, UG, second_moments(H, delta, UA, UG)


def inverse(stats, H, delta, ctx, settings, l):
    UA, UG, s = basis(stats, H, delta)
    rcond = linalg.kron_rcond(*s.shape, s.dtype) if ctx.rcond is None else ctx.rcond
    w = linalg.inverse_eigenvalues(s.reshape(-1), ctx.damping.value, rcond).reshape(s.shape)
    return UA, UG, w


def forward(stats, H, delta, ctx, settings, l):
    UA, UG, s = basis(stats, H, delta)
    return UA, UG, s + ctx.damping.value


def apply(inv, grad, ctx, settings):
    UA, UG, w = inv
    return UA @ ((UA.T @ grad @ UG) * w) @ UG.T


FORM = FactoredForm(statistics, inverse, apply, forward=forward)

__all__ = ["FORM", "basis", "second_moments"]
