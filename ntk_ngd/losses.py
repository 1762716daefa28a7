"""Losses: mean squared error and softmax cross-entropy, in the one form every method uses
(THEORY.md "Setup" and "Cross-entropy NGD in function space").

A loss supplies, at outputs f (N, C) and targets Y, a *whitening*: per-sample factors R_n (k × C)
and a whitened residual u_n ∈ R^k such that, with J̃ = RJ (R = blockdiag(R_n)),

    Fisher  F = J̃ᵀJ̃/N,      gradient  ∇L = J̃ᵀu/N.

Every Fisher approximation, kernel, dynamics and training step is then written once, for J̃ and u
(MSE-form NGD on the whitened Jacobian):

* MSE, L = (1/2N) Σ_n ||f_n − y_n||²: R_n = I_C (k = C), u = r = f − Y.
* Cross-entropy, L = (1/N) Σ_n −Σ_c y_nc log p_nc, p = softmax(f): the categorical Fisher is
  Λ_n = diag(p_n) − p_np_nᵀ (PSD, Λ_n1 = 0) and g_n = p_n − y_n. With V (C × (C−1)) an orthonormal
  basis of 1^⊥ and S_n = VᵀΛ_nV, R_n = S_n^{1/2}Vᵀ (k = C − 1) satisfies R_nᵀR_n = Λ_n, and
  u_n = S_n^{−1/2}Vᵀg_n satisfies R_nᵀu_n = g_n. A logit step is defined up to multiples of 1_C
  (softmax ignores them); steps are returned orthogonal to 1: Δf = V (whitened-basis step).

Besides (R, u) a loss gives iEF's per-sample weight s_n (the squared norm of the per-sample loss
gradient: ||r_n||² for MSE, ||g_n||² for cross-entropy, as in the iEF paper), the sampled-Fisher
scores (model samples, whitened), the loss value and accuracy, and the check of its targets.

Numerics (cross-entropy): 1 − p_c is never formed as a difference: q_c = Σ_{d≠c} p_d, Λ_cc = p_cq_c
and g_y = −q_y for one-hot labels keep full relative accuracy when p_y → 1.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate


@dataclasses.dataclass(frozen=True)
class Whitening:
    """R (N, k, C) or None (identity), u (N, k), s (N,) (iEF weights), g (N, C) the loss gradient."""

    R: jax.Array | None
    u: jax.Array
    s: jax.Array
    g: jax.Array


class Loss:
    """Interface (see the module docstring); :data:`MSE` and :data:`CROSS_ENTROPY` are the instances."""

    name: str = ""
    #: whether whitened kernels keep the output-diagonal (Θ ⊗ I_C) structure of infinite width
    keeps_output_diagonal: bool = False

    def rows(self, out_dim: int) -> int:
        """k: whitened rows per sample."""
        raise NotImplementedError

    def check_targets(self, Y, n: int, out_dim: int) -> np.ndarray:
        raise NotImplementedError

    def whiten(self, f, Y) -> Whitening:
        raise NotImplementedError

    def value(self, f, Y):
        """Mean loss (jax, traceable)."""
        raise NotImplementedError

    def accuracy(self, f, Y):
        """Fraction classified correctly (argmax for cross-entropy; sign for ±1 MSE targets), or None."""
        raise NotImplementedError

    def output_step(self, step):
        """A whitened-basis step (N', k) as an output step (N', C)."""
        raise NotImplementedError

    def left_basis(self, n: int, out_dim: int, dtype):
        """(N, k, C) rows applied to the output side of cross kernels (test points), or None."""
        raise NotImplementedError

    def sample_scores(self, key, f, samples: int):
        """Whitened model-sampled scores ξ (N, k, samples) with E[ξξᵀ] = I_k per sample."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<loss {self.name}>"


class MeanSquaredError(Loss):
    name = "mse"
    keeps_output_diagonal = True

    def rows(self, out_dim: int) -> int:
        return out_dim

    def check_targets(self, Y, n: int, out_dim: int) -> np.ndarray:
        arr = np.asarray(Y)
        if arr.ndim == 1 and out_dim == 1:
            arr = arr.reshape(-1, 1)
        return np.asarray(_validate.finite_matrix("Y", arr, cols=out_dim, rows=n), dtype=float)

    def whiten(self, f, Y) -> Whitening:
        r = jnp.asarray(f) - jnp.asarray(Y)
        return Whitening(None, r, jnp.sum(r**2, axis=1), r)

    def value(self, f, Y):
        r = jnp.asarray(f) - jnp.asarray(Y)
        return 0.5 * jnp.sum(r**2) / r.shape[0]

    def accuracy(self, f, Y):
        f, Y = jnp.asarray(f), jnp.asarray(Y)
        if Y.shape[-1] == 1:
            return jnp.mean(jnp.sign(f[..., 0]) == jnp.sign(Y[..., 0]), axis=-1)
        return jnp.mean(jnp.argmax(f, axis=-1) == jnp.argmax(Y, axis=-1), axis=-1)

    def output_step(self, step):
        return step

    def left_basis(self, n: int, out_dim: int, dtype):
        return None

    def sample_scores(self, key, f, samples: int):
        n, c = f.shape
        eps = jax.random.normal(key, (samples, n, c), dtype=f.dtype)
        return jnp.transpose(eps, (1, 2, 0))


class SoftmaxCrossEntropy(Loss):
    name = "cross_entropy"

    def rows(self, out_dim: int) -> int:
        return out_dim - 1

    def check_targets(self, Y, n: int, out_dim: int) -> np.ndarray:
        if out_dim < 2:
            raise ValueError(f"cross_entropy needs a network with >= 2 outputs (one logit per class), got out_dim="
                             f"{out_dim}")
        return check_labels(Y, n, out_dim)

    def whiten(self, f, Y) -> Whitening:
        R, u, g = whitening(f, Y)
        return Whitening(R, u, jnp.sum(g**2, axis=1), g)

    def value(self, f, Y):
        return loss(f, Y)

    def accuracy(self, f, Y):
        return accuracy(f, Y)

    def output_step(self, step):
        return step @ null_basis(step.shape[-1] + 1, step.dtype).T

    def left_basis(self, n: int, out_dim: int, dtype):
        V = null_basis(out_dim, dtype)
        return jnp.broadcast_to(V.T, (n, out_dim - 1, out_dim))

    def sample_scores(self, key, f, samples: int):
        n, c = f.shape
        p = probabilities(f)
        y = jax.random.categorical(key, f, axis=-1, shape=(samples, n))  # (samples, N) classes ~ Cat(p_n)
        scores = p[None] - jax.nn.one_hot(y, c, dtype=f.dtype)  # p − e_y: the model's score in logit space
        S_inv_root = _whitening_blocks(f)[1]
        V = null_basis(c, f.dtype)
        xi = jnp.einsum("nij,cj,snc->nis", S_inv_root, V, scores)
        return xi


MSE = MeanSquaredError()
CROSS_ENTROPY = SoftmaxCrossEntropy()
LOSSES = {"mse": MSE, "cross_entropy": CROSS_ENTROPY}


def get(loss) -> Loss:
    """A :class:`Loss` from its name ("mse", "cross_entropy") or itself."""
    if isinstance(loss, Loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[loss]


# ---------------------------------------------------------------------------------------------
# softmax numerics
# ---------------------------------------------------------------------------------------------
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
    return jnp.mean(jnp.argmax(jnp.asarray(f), axis=-1) == jnp.argmax(jnp.asarray(Y), axis=-1), axis=-1)


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


def _whitening_blocks(f):
    """(S_n^{1/2}, S_n^{−1/2}) with S_n = VᵀΛ_nV, each (N, C−1, C−1). An eigenvalue that underflows to
    0 (a probability below ~1e-308) gives ±inf in S^{−1/2}, reported as a divergence downstream."""
    f = jnp.asarray(f)
    V = null_basis(f.shape[-1], f.dtype)
    S = jnp.einsum("ci,ncd,dj->nij", V, fisher_blocks(f), V)
    evals, evecs = jnp.linalg.eigh(0.5 * (S + jnp.swapaxes(S, 1, 2)))
    evals = jnp.maximum(evals, 0.0)
    root = jnp.einsum("nij,nj,nkj->nik", evecs, jnp.sqrt(evals), evecs)
    inv_root = jnp.einsum("nij,nj,nkj->nik", evecs, 1.0 / jnp.sqrt(evals), evecs)
    return root, inv_root


def whitening(f, Y):
    """(R, u, g): R (N, C−1, C) with R_nᵀR_n = Λ_n, the whitened gradient u (N, C−1) and g (N, C)."""
    f = jnp.asarray(f)
    V = null_basis(f.shape[-1], f.dtype)
    root, inv_root = _whitening_blocks(f)
    R = jnp.einsum("nij,cj->nic", root, V)
    g = logit_gradient(f, Y)
    u = jnp.einsum("nij,cj,nc->ni", inv_root, V, g)
    return R, u, g


__all__ = ["CROSS_ENTROPY", "LOSSES", "Loss", "MSE", "Whitening", "accuracy", "check_labels", "complement",
           "fisher_blocks", "get", "logit_gradient", "loss", "null_basis", "probabilities", "whitening"]
