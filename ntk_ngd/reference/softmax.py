"""The cross-entropy side of the reference: logit derivatives by autodiff and an explicit whitening.

Per sample, ℓ_n(f) = −Σ_c y_nc log softmax(f)_c. Its gradient g_n = ∇_f ℓ_n comes from ``jax.grad``
and its Hessian Λ_n = ∇²_f ℓ_n from ``jax.hessian`` (for probability rows y this is the categorical
Fisher diag(p) − ppᵀ, independent of y). Nothing from :mod:`ntk_ngd.losses` is used except the basis
V (C × (C−1), orthonormal, ⊥ 1: the Helmert contrasts), so that whitened quantities are expressed in
the same basis as the Gram form's and can be compared entry by entry:

    S_n = VᵀΛ_nV = Q diag(σ) Qᵀ (eigendecomposition),   R_n = S_n^{1/2}Vᵀ = Q diag(√σ) QᵀVᵀ,

so R_nᵀR_n = VS_nVᵀ = Λ_n (Λ_n1 = 0, hence Λ_n = VVᵀΛ_nVVᵀ), and the whitened residual u_n solves
R_nᵀu_n = g_n (a least-squares solve of the C × (C−1) system, exact because g_n ⊥ 1 = range(R_nᵀ)^⊥).
Then F = JᵀΛJ/N = J̃ᵀJ̃/N and ∇L = Jᵀg/N = J̃ᵀu/N with J̃ = RJ (R = blockdiag R_n).

The sampled Fisher's model samples y ~ Cat(p_n) give logit-space scores p_n − e_y = ∇_f(−log p_y),
also by ``jax.grad``, whitened by the same solve.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..losses import null_basis


def per_sample_loss(z, y):
    """ℓ(z; y) = −Σ_c y_c log softmax(z)_c for one sample, written relative to the top logit t:
    ℓ = −Σ_{c≠t} y_c (z_c − z_t) + (Σ_c y_c) log1p(Σ_{d≠t} e^{z_d − z_t}). Its autodiff derivatives then keep
    full relative accuracy when p_t → 1 (g_t = Σ_{c≠t} y_c − q_t, Λ_tt = q_t − q_t², no 1 − p_t), where those of
    ``log_softmax`` round to 0 once 1 − p_t < eps (logit gaps above ~36). The class t itself is masked out of
    both sums, so no cotangent ±y_t reaches z_t to cancel against q_t."""
    others = jnp.arange(z.shape[0]) != jnp.argmax(z)
    rel = jnp.where(others, z - z[jnp.argmax(z)], 0.0)
    rest = jnp.sum(jnp.where(others, jnp.exp(rel), 0.0))
    return -jnp.sum(jnp.where(others, y * rel, 0.0)) + jnp.sum(y) * jnp.log1p(rest)


def logit_derivatives(f, labels) -> tuple[np.ndarray, np.ndarray]:
    """(g (N, C), Λ (N, C, C)): gradient and Hessian of ℓ_n w.r.t. the logits, by autodiff."""
    f = jnp.asarray(f, dtype=jnp.float64)
    Y = jnp.asarray(labels, dtype=jnp.float64)
    g = jax.vmap(jax.grad(per_sample_loss))(f, Y)
    lam = jax.vmap(jax.hessian(per_sample_loss))(f, Y)
    return np.asarray(g), np.asarray(lam)


def check_labels(labels, n: int, classes: int) -> np.ndarray:
    """Labels as (N, C) probability rows: class indices (N,) in 0..C−1, or (N, C) non-negative rows summing to 1."""
    if classes < 2:
        raise ValueError(f"cross_entropy needs a network with >= 2 outputs (one logit per class), got {classes}")
    arr = np.asarray(labels)
    if arr.ndim == 1 and arr.shape[0] == n:
        if not np.all(np.isfinite(arr.astype(float))) or np.any(arr != np.round(arr)):
            raise ValueError("integer labels must be whole numbers 0..C-1")
        if arr.size and (arr.min() < 0 or arr.max() >= classes):
            raise ValueError(f"labels must lie in 0..{classes - 1}, got values in {arr.min()}..{arr.max()}")
        return np.eye(classes)[arr.astype(int)]
    if arr.shape != (n, classes):
        raise ValueError(f"labels must be class indices ({n},) or probability rows ({n}, {classes}), got shape "
                         f"{arr.shape}")
    Y = arr.astype(float)
    if not np.all(np.isfinite(Y)) or np.any(Y < 0) or not np.allclose(Y.sum(axis=1), 1.0, rtol=0, atol=1e-10):
        raise ValueError("label rows must be probability vectors (non-negative, summing to 1), e.g. one-hot")
    return Y


def whitening_factors(lam) -> np.ndarray:
    """R (N, C−1, C) with R_n = S_n^{1/2}Vᵀ, S_n = VᵀΛ_nV, from an eigendecomposition of S_n (module docstring)."""
    lam = np.asarray(lam, dtype=float)
    V = np.asarray(null_basis(lam.shape[-1]), dtype=float)
    out = []
    for block in lam:
        S = V.T @ (0.5 * (block + block.T)) @ V
        sig, Q = np.linalg.eigh(S)
        out.append((Q * np.sqrt(np.maximum(sig, 0.0))) @ Q.T @ V.T)
    return np.stack(out)


def whiten_vectors(R, vectors) -> np.ndarray:
    """x (N, k): the solutions of R_nᵀx_n = v_n for logit-space vectors v (N, C) orthogonal to 1."""
    return np.stack([np.linalg.lstsq(Rn.T, v, rcond=None)[0] for Rn, v in zip(np.asarray(R), np.asarray(vectors))])


def symmetric_roots(lam) -> np.ndarray:
    """Λ_n^{1/2} (N, C, C), the symmetric PSD roots (eigenvalues below C·eps·max|λ| set to 0: Λ_n1 = 0 exactly)."""
    out = []
    for block in np.asarray(lam, dtype=float):
        w, U = np.linalg.eigh(0.5 * (block + block.T))
        w = np.where(w > len(w) * np.finfo(float).eps * np.max(np.abs(w)), w, 0.0)
        out.append((U * np.sqrt(w)) @ U.T)
    return np.stack(out)


def sampled_scores(f, key, samples: int) -> np.ndarray:
    """Logit-space model scores (samples, N, C): p_n − e_y = ∇_f(−log p_y) with y ~ Cat(p_n) drawn by
    ``jax.random.categorical(key, f, axis=-1, shape=(samples, N))`` (the sampled Fisher's draw)."""
    f = jnp.asarray(f, dtype=jnp.float64)
    y = np.asarray(jax.random.categorical(key, f, axis=-1, shape=(samples, f.shape[0])))
    eye = np.eye(f.shape[1])
    return np.stack([logit_derivatives(f, eye[ys])[0] for ys in y])


__all__ = ["check_labels", "logit_derivatives", "per_sample_loss", "sampled_scores", "symmetric_roots",
           "whiten_vectors", "whitening_factors"]
