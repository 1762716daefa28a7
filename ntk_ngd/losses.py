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
and g_y = −q_y for one-hot labels keep full relative accuracy when p_y → 1. The whitening is computed
from log-probabilities (THEORY.md "Saturation"): S_n = e^{m_n}S̃_n with m_n = max_c log Λ_n,cc, so S̃_n
is O(1) at any logit gap; R_n = e^{m_n/2}S̃_n^{1/2}Vᵀ and u_n = S̃_n^{+1/2}Vᵀ(g_ne^{−m_n/2}), each entry one
exponential of a sum of logs. They stay finite and accurate where p_c underflows (gaps > ~745), are 0
where the exact value underflows, and ±inf only where it overflows.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate, linalg


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
        y = jax.random.categorical(key, f, axis=-1, shape=(samples, n))  # (samples, N) classes ~ Cat(p_n)
        # the whitened score of p − e_y (the model's score in logit space) is u at the label e_y
        metric = _ScaledMetric.of(f)
        xi = jax.vmap(metric.whiten)(jax.nn.one_hot(y, c, dtype=f.dtype))  # (samples, N, k)
        return jnp.transpose(xi, (1, 2, 0))


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
    """(1/N) Σ_n −Σ_c y_nc log p_nc, with log p from :func:`log_probabilities` (finite for any finite f,
    relatively accurate for confident samples)."""
    return -jnp.mean(jnp.sum(jnp.asarray(Y) * log_probabilities(f), axis=-1))


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


def log_probabilities(f):
    """log p along the last axis, finite for any finite f: with t = argmax f and z = f − f_t ≤ 0,
    log p = z − log1p(Σ_{d≠t} e^{z_d}), so log p_t = −log1p(q_t/p_t) keeps full relative accuracy as q_t → 0
    (``log_softmax``'s log(1 + ·) rounds it to 0 once q_t < eps/2)."""
    f = jnp.asarray(f)
    z = f - jnp.max(f, axis=-1, keepdims=True)
    top = jax.nn.one_hot(jnp.argmax(f, axis=-1), f.shape[-1], dtype=bool)
    rest = jnp.sum(jnp.where(top, 0.0, jnp.exp(z)), axis=-1, keepdims=True)
    return z - jnp.log1p(rest)


def log_complement(logp):
    """log q_c = log Σ_{d≠c} p_d from log p (log-sum-exp over the other classes: finite where q_c underflows)."""
    c = logp.shape[-1]
    others = jnp.where(jnp.eye(c, dtype=bool), -jnp.inf, logp[..., None, :])
    return jax.nn.logsumexp(others, axis=-1)


def scaled_fisher_blocks(f):
    """(Λ̃, m, log p, log q) with Λ_n = e^{m_n} Λ̃_n and m_n = max_c log Λ_n,cc = max_c (log p_c + log q_c).

    Every entry is one exponential of a sum of log-probabilities, Λ̃_cc = exp(log p_c + log q_c − m) and
    Λ̃_cd = −exp(log p_c + log p_d − m) (≤ 1 in size: p_d ≤ q_c), so Λ̃ keeps full relative accuracy
    at any logit gap while Λ itself underflows to 0 once the gaps exceed ~745 (THEORY.md "Saturation")."""
    logp = log_probabilities(f)
    logq = log_complement(logp)
    m = jnp.max(logp + logq, axis=-1)
    c = logp.shape[-1]
    eye = jnp.eye(c, dtype=bool)  # masks go on the exponents (no inf·0 in gradients)
    off = -jnp.exp(jnp.where(eye, -jnp.inf, logp[..., :, None] + logp[..., None, :] - m[..., None, None]))
    lam = jnp.where(eye, jnp.exp(logp + logq - m[..., None])[..., None, :], off)
    return lam, m, logp, logq


#: log-magnitude above which ĝ is computed scaled (e^{500} is far from float64's e^{709.78} overflow)
_OVERFLOW_GUARD = 500.0


def _weighted_exp(weight, log_x):
    """weight · exp(log_x) as one exponential (0 where weight = 0; no 0·inf)."""
    pos = weight > 0
    return jnp.exp(jnp.where(pos, jnp.log(jnp.where(pos, weight, 1.0)) + log_x, -jnp.inf))


@dataclasses.dataclass(frozen=True)
class _ScaledMetric:
    """S_n = VᵀΛ_nV = e^{m_n} Q_n diag(σ̃_n) Q_nᵀ, with the log-probabilities it came from."""

    evals: jax.Array
    evecs: jax.Array
    m: jax.Array
    logp: jax.Array
    logq: jax.Array

    @classmethod
    def of(cls, f):
        lam, m, logp, logq = scaled_fisher_blocks(f)
        V = null_basis(lam.shape[-1], lam.dtype)
        S = jnp.einsum("ci,ncd,dj->nij", V, lam, V)
        evals, evecs = jnp.linalg.eigh(0.5 * (S + jnp.swapaxes(S, 1, 2)))
        return cls(evals, evecs, m, logp, logq)

    def root(self):
        """S̃^{1/2} (N, C−1, C−1); an eigenvalue rounded below 0 is the exact 0 of an underflowed class."""
        return jnp.einsum("nij,nj,nkj->nik", self.evecs, jnp.sqrt(jnp.maximum(self.evals, 0.0)), self.evecs)

    def whiten(self, Y):
        """u_n = S_n^{+1/2}Vᵀg_n = S̃_n^{+1/2}Vᵀĝ_n with ĝ = g e^{−m/2}, each ĝ_c one exponential of
        log-probabilities: ĝ_c = (1 − y_c) p_c e^{−m/2} − y_c q_c e^{−m/2}. An eigen-direction below the cut-off (C−1)·eps·σ̃_max is
        dropped where Vᵀĝ has no resolvable component along it (|c_k| ≤ sqrt(cut-off)·||c||): the exact limit 0 of
        a class whose probability underflows with y_c = 0 (THEORY.md "Saturation"). Elsewhere the division stays:
        the label then sits on such a class, whose exact u_n is beyond float64 resolution (huge or inf). Where
        ĝ would overflow, the solve runs on ĝe^{−L} and is rescaled: u_n = ±inf, not NaN, iff it overflows."""
        Y = jnp.asarray(Y, self.logp.dtype)
        log_a = jnp.where(Y < 1, self.logp - 0.5 * self.m[..., None], -jnp.inf)  # log of |ĝ|'s two terms
        log_b = jnp.where(Y > 0, self.logq - 0.5 * self.m[..., None], -jnp.inf)
        top = jnp.max(jnp.maximum(log_a, log_b), axis=-1, keepdims=True)
        shift = jnp.where(top > _OVERFLOW_GUARD, top, 0.0)  # only where ĝ would overflow: u = e^{shift}·(...)
        g_hat = _weighted_exp(1.0 - Y, log_a - shift) - _weighted_exp(Y, log_b - shift)
        V = null_basis(Y.shape[-1], Y.dtype)
        coeff = jnp.einsum("nji,cj,nc->ni", self.evecs, V, g_hat)  # Qᵀ Vᵀ ĝ
        rcond = linalg.default_rcond(self.evals.shape[-1], self.evals.dtype)
        kept = self.evals > rcond * jnp.max(jnp.abs(self.evals), axis=-1, keepdims=True)
        kept |= jnp.abs(coeff) > jnp.sqrt(rcond) * jnp.linalg.norm(coeff, axis=-1, keepdims=True)
        scaled = jnp.where(kept, coeff / jnp.sqrt(jnp.where(kept, jnp.maximum(self.evals, 0.0), 1.0)), 0.0)
        return jnp.exp(shift) * jnp.einsum("nij,nj->ni", self.evecs, scaled)


def whitening(f, Y):
    """(R, u, g): R (N, C−1, C) with R_nᵀR_n = Λ_n, the whitened gradient u (N, C−1) and g (N, C).

    R_n = e^{m_n/2} S̃_n^{1/2}Vᵀ and u_n = S̃_n^{+1/2}Vᵀĝ_n from log-probabilities (:class:`_ScaledMetric`;
    THEORY.md "Saturation"): finite and accurate at any logit gap, 0 where the exact value underflows."""
    f = jnp.asarray(f)
    V = null_basis(f.shape[-1], f.dtype)
    metric = _ScaledMetric.of(f)
    R = jnp.exp(0.5 * metric.m)[:, None, None] * jnp.einsum("nij,cj->nic", metric.root(), V)
    return R, metric.whiten(Y), logit_gradient(f, Y)


__all__ = ["CROSS_ENTROPY", "LOSSES", "Loss", "MSE", "Whitening", "accuracy", "check_labels", "complement",
           "fisher_blocks", "get", "log_complement", "log_probabilities", "logit_gradient", "loss", "null_basis",
           "probabilities", "scaled_fisher_blocks", "whitening"]
