"""Residual-dependent approximations: empirical Fisher, sampled Fisher, improved EF
(THEORY.md claims 5–7).

EF and SF are *weighted Fishers* G = JᵀQJ/N with Q = EEᵀ block-diagonal over samples:
  EF: E = R̃ (N·C × N), column n holds r_n in sample n's rows, so G = Σ_n g_n g_nᵀ/N with the
      per-sample gradients g_n = J_nᵀr_n (for C = 1, Q = diag(r²)).
  SF: E (N·C × kN) holds ε_n^{(s)}/√k, ε ~ N(0, I) (k samples, ``seed``), Q_n = (1/k)Σ_s εεᵀ.
When Q is invertible, with K̃ = Q^{1/2}ΘQ^{1/2} (push-through on J̃ = Q^{1/2}J):

    Θ_G(x', X) = Θ(x', X) Q^{1/2} (K̃ + NρI)⁻¹ Q^{−1/2},

so at ρ = 0 (Θ invertible) Θ_EF = diag(1/r²) and Δf = −η Θ_EF r = −η/r (claim 5), and
Θ_SF = Q⁻¹: Δf = −η r ⊘ mean(ε²) (claim 7). When Q is singular (a zero residual; EF with C > 1,
whose Q_n = r_n r_nᵀ has rank 1) the kernel is finite only for ρ > 0, through Woodbury:
Θ_G(x', X) = [Θ(x', X) − Θ(x', X)E(EᵀΘE + Nρ)⁻¹EᵀΘ] / (Nρ).

iEF is defined by its update Δθ = −η Gᵀ(GGᵀ + λI)⁻¹s with G the N×P per-sample gradients and
s_n = ||r_n||² = (R̃ᵀr)_n. With GGᵀ = R̃ᵀΘR̃ its function-space kernel (Δf = −η Θ_iEF r) is

    Θ_iEF(x', X) = Θ(x', X) R̃ (R̃ᵀΘR̃ + λI)⁻¹ R̃ᵀ,

which is I on the training points at λ = 0 for C = 1 (claim 6: the exact-NGD step with no
Fisher). For C > 1 it is the oblique projector onto range(ΘR̃) along null(R̃ᵀ): every sample's
loss still falls at exact NGD's first-order rate (r_nᵀΔf_n = −η||r_n||²), but Δf ≠ −ηr.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import _linalg
from .base import Method, MethodKernel, register, test_kernel_or_none


def full_output_ntk(lk):
    """Θ on the flattened (n, c) index: expands an output-diagonal kernel to Θ ⊗ I_C."""
    theta = lk.total_ntk
    if lk.output_diagonal and lk.out_dim > 1:
        theta = jnp.kron(theta, jnp.eye(lk.out_dim, dtype=theta.dtype))
    return theta


def per_sample_factor(columns_per_sample, out_dim: int):
    """E (N·C × N·m) from per-sample columns (N, C, m): sample n's block in rows n·C..n·C+C−1."""
    n, c, m = columns_per_sample.shape
    eye = jnp.eye(n, dtype=columns_per_sample.dtype)
    return jnp.einsum("ncm,nk->nckm", columns_per_sample, eye).reshape(n * c, n * m)


def residual_factor(residual, n: int, out_dim: int):
    """R̃ (N·C × N): column n is r_n placed in sample n's rows."""
    return per_sample_factor(jnp.reshape(residual, (n, out_dim, 1)), out_dim)


def weighted_fisher_kernel(theta, theta_test, E, *, n, damping, rcond=None, label="this Fisher"):
    """Θ_G for G = JᵀEEᵀJ/N (module docstring), stable form when Q = EEᵀ is invertible."""
    Q = E @ E.T
    q_evals, q_vecs = _linalg.eigh_psd(Q)
    cutoff = _linalg.default_rcond(Q.shape[0]) * float(jnp.max(q_evals))
    if float(jnp.min(q_evals)) > cutoff:
        root = (q_vecs * jnp.sqrt(q_evals)) @ q_vecs.T
        inv_root = (q_vecs / jnp.sqrt(q_evals)) @ q_vecs.T
        weighted = root @ theta @ root

        def apply(cross):
            return _linalg.damped_solve_right(cross @ root, weighted, n * damping, rcond) @ inv_root

    elif damping > 0:
        inner = E.T @ theta @ E

        def apply(cross):
            return (cross - _linalg.damped_solve_right(cross @ E, inner, n * damping, rcond) @ E.T @ theta) / (
                n * damping
            )

    else:
        raise ValueError(
            f"{label} is singular (rank {int(np.sum(np.asarray(q_evals) > cutoff))} < N·C = {Q.shape[0]}): "
            "its kernel is infinite at damping 0; pass damping > 0"
        )
    return MethodKernel(apply(theta), None if theta_test is None else apply(theta_test))


def _residual_and_kernels(train, test, residual, n):
    theta = full_output_ntk(train)
    theta_test = None if test is None else full_output_ntk(test)
    r = jnp.reshape(jnp.asarray(residual), (-1,))
    return theta, theta_test, r


def ef_kernel(train, test, *, n, damping, residual, rcond=None, **_) -> MethodKernel:
    theta, theta_test, r = _residual_and_kernels(train, test, residual, n)
    zeros = np.flatnonzero(np.all(np.asarray(r).reshape(n, -1) == 0, axis=1))
    if zeros.size and damping == 0:
        raise ValueError(
            f"ef: residual is exactly zero at samples {zeros[:5].tolist()}: the empirical Fisher has no "
            "curvature there and its step -eta/r is infinite; pass damping > 0"
        )
    E = residual_factor(r, n, train.out_dim)
    return weighted_fisher_kernel(theta, theta_test, E, n=n, damping=damping, rcond=rcond, label="ef: the empirical Fisher")


def sf_noise(n: int, out_dim: int, samples: int, seed: int):
    """ε of shape (k, N, C) from numpy's default_rng(seed) (the sampled-Fisher draws)."""
    return np.random.default_rng(seed).standard_normal((samples, n, out_dim))


def sf_kernel(train, test, *, n, damping, samples=1, seed=0, rcond=None, **_) -> MethodKernel:
    theta = full_output_ntk(train)
    theta_test = None if test is None else full_output_ntk(test)
    eps = jnp.asarray(sf_noise(n, train.out_dim, int(samples), int(seed)), dtype=theta.dtype)
    columns = jnp.transpose(eps, (1, 2, 0)) / np.sqrt(samples)  # (N, C, k)
    E = per_sample_factor(columns, train.out_dim)
    return weighted_fisher_kernel(theta, theta_test, E, n=n, damping=damping, rcond=rcond, label="sf: the sampled Fisher")


def ief_kernel(train, test, *, n, damping, residual, rcond=None, **_) -> MethodKernel:
    theta, theta_test, r = _residual_and_kernels(train, test, residual, n)
    R = residual_factor(r, n, train.out_dim)
    gram = R.T @ theta @ R  # GGᵀ: Gram of the per-sample gradients

    def apply(cross):
        return _linalg.damped_solve_right(cross @ R, gram, damping, rcond) @ R.T

    return MethodKernel(apply(theta), test_kernel_or_none(theta_test, apply))


EF = register(Method("ef", ef_kernel, "empirical Fisher Σ_n g_n g_nᵀ/N (step −η/r)", needs_residual=True))
IEF = register(Method("ief", ief_kernel, "improved EF (step −η r, no Fisher)", needs_residual=True))
SF = register(
    Method("sf", sf_kernel, "sampled Fisher, k Monte Carlo targets (samples=, seed=)", options=("samples", "seed"))
)
