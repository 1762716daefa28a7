"""The softmax likelihood in logit space (THEORY.md "Cross-entropy NGD in function space").

Logits f_n ∈ R^C, p_n = softmax(f_n), one-hot (or soft) labels y_n, loss
L = (1/N) Σ_n −Σ_c y_nc log p_nc. Per sample:

    g_n = ∂ℓ_n/∂f_n = p_n − y_n            (1ᵀg_n = 0),
    Λ_n = ∂²ℓ_n/∂f_n² = diag(p_n) − p_n p_nᵀ   (the Fisher of the categorical model; PSD, Λ_n 1 = 0).

Whitening. V (C × (C−1)) is a fixed orthonormal basis of 1^⊥ (:func:`null_basis`). On 1^⊥,
Λ_n = V S_n Vᵀ with S_n = VᵀΛ_nV ((C−1)×(C−1), positive definite while every p_nc > 0). The factor
R_n = S_n^{1/2} Vᵀ ((C−1)×C) satisfies R_nᵀR_n = Λ_n and R_n 1 = 0, and the whitened gradient
ũ_n = S_n^{−1/2} Vᵀ g_n satisfies R_nᵀũ_n = g_n and ||ũ_n||² = g_nᵀΛ_n⁺g_n. With R = blockdiag(R_n)
and J̃ = RJ the softmax Fisher is F = JᵀΛJ/N = J̃ᵀJ̃/N and ∇L = Jᵀg/N = J̃ᵀũ/N: cross-entropy NGD
is MSE-form NGD on the whitened Jacobian J̃ with "residual" ũ (:mod:`.kernels`).

Numerics: 1 − p_c is never formed as a difference. q_c = Σ_{d≠c} p_d (a sum of positive terms), so
Λ_cc = p_c q_c and, for one-hot labels, g_y = −q_y keep full relative accuracy when p_y → 1
(1 − p_y ~ 1e-15 and below), which the dynamics reach.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate


def check_labels(labels, n: int | None = None, classes: int | None = None) -> np.ndarray:
    """Labels as an (N, C) float array of probability rows.

    Accepts integer class indices (N,) in 0..C−1 (``classes`` required, or taken as max + 1) or an
    (N, C) array whose rows are probability vectors (one-hot or soft). Raises a one-line ValueError
    otherwise (out-of-range classes, negative entries, rows not summing to 1, wrong N or C, NaN).
    """
    arr = np.asarray(labels)
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
                raise ValueError(f"integer labels must be whole numbers 0..C-1, got dtype {arr.dtype}")
            arr = arr.astype(int)
        c = int(arr.max()) + 1 if classes is None and arr.size else classes
        if c is None or c < 2:
            raise ValueError(f"cross-entropy needs at least 2 classes, got {c}")
        if arr.size and (arr.min() < 0 or arr.max() >= c):
            raise ValueError(f"labels must lie in 0..{c - 1} (C = {c} classes), got values in "
                             f"{int(arr.min())}..{int(arr.max())}")
        Y = np.eye(c)[arr]
    elif arr.ndim == 2:
        Y = _validate.finite_matrix("labels", arr, cols=classes).astype(float)
        if Y.shape[1] < 2:
            raise ValueError("cross-entropy needs at least 2 classes (labels with >= 2 columns); "
                             "for a single ±1 target column convert it to class indices first")
        if np.any(Y < 0) or not np.allclose(Y.sum(axis=1), 1.0, atol=1e-10):
            raise ValueError("label rows must be probability vectors (non-negative, summing to 1), e.g. one-hot")
    else:
        raise ValueError(f"labels must be class indices (N,) or an (N, C) one-hot array, got shape {arr.shape}")
    if n is not None and Y.shape[0] != n:
        raise ValueError(f"labels have {Y.shape[0]} rows but there are {n} inputs")
    if classes is not None and Y.shape[1] != classes:
        raise ValueError(f"labels have {Y.shape[1]} classes but the network has {classes} outputs")
    return Y


def probabilities(f):
    """p = softmax(f) along the last axis."""
    return jax.nn.softmax(jnp.asarray(f), axis=-1)


def complement(p):
    """q_c = Σ_{d≠c} p_d (= 1 − p_c without cancellation)."""
    c = p.shape[-1]
    return p @ (1.0 - jnp.eye(c, dtype=p.dtype))


def loss(f, Y):
    """(1/N) Σ_n −Σ_c y_nc log p_nc, with log p from ``log_softmax`` (finite for any finite f)."""
    return -jnp.mean(jnp.sum(jnp.asarray(Y) * jax.nn.log_softmax(jnp.asarray(f), axis=-1), axis=-1))


def accuracy(f, Y):
    """Fraction of rows whose largest logit is the label's largest entry."""
    return jnp.mean(jnp.argmax(jnp.asarray(f), axis=-1) == jnp.argmax(jnp.asarray(Y), axis=-1))


def logit_gradient(f, Y):
    """g_n = p_n − y_n, computed as p_c(1 − y_c) − y_c q_c (exact cancellation-free form)."""
    p = probabilities(f)
    Y = jnp.asarray(Y, p.dtype)
    return p * (1.0 - Y) - Y * complement(p)


def fisher_blocks(f):
    """Λ_n = diag(p_n) − p_n p_nᵀ, shape (N, C, C); the diagonal is p_c q_c."""
    p = probabilities(f)
    c = p.shape[-1]
    eye = jnp.eye(c, dtype=p.dtype)
    outer = -p[..., :, None] * p[..., None, :]
    return outer * (1.0 - eye) + eye * (p * complement(p))[..., None, :]


@functools.lru_cache(maxsize=None)
def _null_basis_np(c: int) -> np.ndarray:
    # Helmert contrasts: column k (k = 1..C−1) is (1, …, 1, −k, 0, …)/sqrt(k(k+1)); orthonormal, ⊥ 1.
    V = np.zeros((c, c - 1))
    for k in range(1, c):
        V[:k, k - 1] = 1.0
        V[k, k - 1] = -float(k)
        V[:, k - 1] /= np.sqrt(k * (k + 1))
    return V


def null_basis(c: int, dtype=jnp.float64):
    """V (C × (C−1)): an orthonormal basis of 1^⊥ (normalised Helmert contrasts)."""
    if c < 2:
        raise ValueError(f"cross-entropy needs at least 2 classes, got {c}")
    return jnp.asarray(_null_basis_np(int(c)), dtype=dtype)


def whitening(f, Y):
    """(R, ũ, g): R (N, C−1, C) with R_nᵀR_n = Λ_n, the whitened gradient ũ (N, C−1) and g (N, C).

    S_n = VᵀΛ_nV is inverted through its eigendecomposition; an eigenvalue that underflows to 0
    (a probability below ~1e-308) gives ũ = ±inf, reported as a divergence by the dynamics.
    """
    f = jnp.asarray(f)
    c = f.shape[-1]
    V = null_basis(c, f.dtype)
    lam = fisher_blocks(f)
    S = jnp.einsum("ci,ncd,dj->nij", V, lam, V)
    S = 0.5 * (S + jnp.swapaxes(S, 1, 2))
    evals, evecs = jnp.linalg.eigh(S)
    evals = jnp.maximum(evals, 0.0)
    root = jnp.einsum("nij,nj,nkj->nik", evecs, jnp.sqrt(evals), evecs)
    inv_root = jnp.einsum("nij,nj,nkj->nik", evecs, 1.0 / jnp.sqrt(evals), evecs)
    R = jnp.einsum("nij,cj->nic", root, V)
    g = logit_gradient(f, Y)
    u = jnp.einsum("nij,cj,nc->ni", inv_root, V, g)
    return R, u, g


__all__ = ["accuracy", "check_labels", "complement", "fisher_blocks", "logit_gradient", "loss", "null_basis",
           "probabilities", "whitening"]
