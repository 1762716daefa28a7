"""Unit-wise Fisher: one block per output unit j of each layer l (THEORY.md claim 4).

Unit j of layer l owns column j of W̃_l (incoming weights and bias); its Jacobian rows are
J_{l,j}[(n, c)] = δ_{l,j}(x_n, c) h̃_n, so its Gram is K_{l,j} = (K^H_l ⊗ 1_{C×C}) ⊙ d_j d_jᵀ with
d_j = δ_{l,j} flattened over (n, c). Each block contributes J_{l,j}(J_{l,j}ᵀJ_{l,j}/N + ρ)⁻¹J_{l,j}ᵀ/N:

    Θ_uw(x', X) = Σ_{l,j} K_{l,j}(x', X) (K_{l,j} + NρI)⁻¹.

At ρ = 0 each term is the projector onto range(diag(d_j) H̃_l); with K^H_l of full rank N and
C = 1 it is diag(1[δ_{l,j}(x_n) ≠ 0]), so Θ_uw = diag(a_n) + I with a_n the number of hidden units
whose backward signal is non-zero at x_n (the readout units give I). For ReLU a_n ≈ Σ_l M_l/2
with fluctuations ~ M^{1/2}: isotropic only as M → ∞ (relative deviation ~ M^{−1/2}). Smooth
activations (erf, ...) never have δ = 0, so they are exactly isotropic once every K^H_l is full rank.

Infinite width (no params): the leading-order kernel (Σ_{l<L} p_l M_l + 1)·I with p_l = P(φ'(z) ≠ 0)
(1/2 for ReLU, 1 otherwise) and M_l the network's nominal widths, valid when every K^H_l has full
rank N (checked); test kernels need a finite width.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _linalg
from .base import Method, MethodKernel, register

#: P(φ'(z) ≠ 0) for z ~ N(0, q), q > 0: ReLU is flat on half the line, the others nowhere.
ACTIVE_FRACTION = {"relu": 0.5}

_UNIT_CHUNK = 64


def _gram_factor(K):
    """(U, V) with K = U Uᵀ (U = eigvecs·√λ) and cross features U(x') = K(x', X) V (V = eigvecs/√λ)."""
    evals, evecs = _linalg.eigh_psd(K)
    kept = evals > _linalg.default_rcond(K.shape[0], K.dtype) * jnp.max(jnp.abs(evals))
    root = jnp.sqrt(jnp.where(kept, evals, 0.0))
    return evecs * root, evecs * jnp.where(kept, 1.0 / jnp.where(kept, root, 1.0), 0.0)


@functools.partial(jax.jit, static_argnums=4)
def _units_projection(features_cross, features, d_cross, d, shift):
    """Σ_j K_j(x', X)(K_j + shift)⁺ over a chunk of units (columns of d).

    K_j = A_j A_jᵀ with A_j = diag(d_j)·U (U the forward features), so the projector comes from
    the SVD A_j = P S Wᵀ: K_j(K_j + ε)⁺ = P diag(s²/(s² + ε)) Pᵀ and, for test rows,
    diag(d'_j) U(x') W diag(s/(s² + ε)) Pᵀ. An SVD resolves A_j to eps·cond(A_j), where the
    eigendecomposition of its Gram would square cond(A_j) (|δ_j| can span 1e-6 across samples).
    """

    def one(dc, dt):
        A = dt[:, None] * features
        P, sv, Wt = jnp.linalg.svd(A, full_matrices=False)
        if shift == 0:
            kept = sv > max(A.shape) * jnp.finfo(A.dtype).eps * jnp.max(sv)
            scale = jnp.where(kept, 1.0 / jnp.where(kept, sv, 1.0), 0.0)
        else:
            scale = sv / (sv**2 + shift)
        return ((dc[:, None] * features_cross) @ Wt.T * scale) @ P.T

    return jnp.sum(jax.vmap(one, in_axes=(1, 1))(d_cross, d), axis=0)


def _finite_kernel(cross, train, n, damping):
    c = train.n_outputs_per_sample
    total = 0.0
    for l in range(train.depth):
        features, inverse = _gram_factor(train.fwd_expanded()[l])
        features_cross = cross.fwd_expanded()[l] @ inverse
        d = cross.deltas2[l].reshape(-1, cross.deltas2[l].shape[-1])  # δ(X): (N·C, M_l)
        d_cross = cross.deltas[l].reshape(-1, d.shape[-1])  # δ(x'): (N'·C, M_l)
        assert d.shape[0] == features.shape[0] and c == cross.n_outputs_per_sample
        for start in range(0, d.shape[1], _UNIT_CHUNK):
            sl = slice(start, start + _UNIT_CHUNK)
            total = total + _units_projection(features_cross, features, d_cross[:, sl], d[:, sl], n * damping)
    return total


def unit_wise_kernel(train, test, *, n, damping, net=None, rcond=None, **_) -> MethodKernel:
    if train.deltas is None:
        return _infinite_width_kernel(train, test, net, rcond)
    K_test = None if test is None else _finite_kernel(test, train, n, damping)
    return MethodKernel(_finite_kernel(train, train, n, damping), K_test)


def _infinite_width_kernel(train, test, net, rcond) -> MethodKernel:
    if net is None:
        raise ValueError("unit_wise at infinite width needs the network (its nominal widths)")
    if test is not None:
        raise ValueError("unit_wise test kernels need a finite width: pass params=net.init(seed)")
    n = train.fwd.shape[1]
    for l, fwd in enumerate(train.fwd):
        r = _linalg.rank(fwd, rcond)
        if r < n:
            raise ValueError(
                f"unit_wise at infinite width needs full-rank layer inputs, but layer {l + 1}'s input Gram "
                f"has rank {r} < N = {n}; use a finite width"
            )
    p = ACTIVE_FRACTION.get(net.activation, 1.0)
    alpha = p * float(np.sum(net.hidden)) + 1.0
    return MethodKernel(alpha * jnp.eye(train.ntk.shape[1], dtype=train.ntk.dtype), None)


UNIT_WISE = register(
    Method("unit_wise", unit_wise_kernel, "one Fisher block per unit (column of each layer)", needs_unit_features=True)
)
