"""Variance of the two Fisher estimators (Soen & Sun 2021) and its consequence for the sampled-Fisher
step (THEORY.md "Variance of Fisher estimators").

Both output models are exponential families in the network output f = f(x; θ) ∈ R^C with sufficient
statistic t(y):  log p(y|x) = t(y)ᵀf − A(f) + const,

  gaussian  t = y,              A = ½||f||²,       y ~ N(f, I_C)        (MSE),
  softmax   t = e_y (one-hot),  A = logsumexp(f),  y ~ Cat(softmax f)   (cross-entropy).

With the centred statistic u = t(y) − E t, its covariance Λ = ∇²A (I_C, or diag(p) − ppᵀ), J = ∂f/∂θ
(C×P) and H_c = ∇²_θ f_c (P×P):

  score       ∇_θ log p = Jᵀu,        −Hessian  −∇²_θ log p = JᵀΛJ − Σ_c u_c H_c,

both with mean F = JᵀΛJ. From k draws y_1..y_k (ū their mean statistic):

  F̂₁ = (1/k) Σ_s Jᵀu_s u_sᵀJ,        F̂₂ = JᵀΛJ − Σ_c ū_c H_c,

and, entry by entry (J_i the i-th column of J, M₄ = E u⊗u⊗u⊗u the central 4th-moment tensor):

  Var(F̂₁)_ij = [M₄(J_i, J_j, J_i, J_j) − F_ij²] / k,      Var(F̂₂)_ij = Σ_ab (H_a)_ij Λ_ab (H_b)_ij / k.

Gaussian (Isserlis: M₄_abcd = δ_abδ_cd + δ_acδ_bd + δ_adδ_bc): Var(F̂₁)_ij = (F_ii F_jj + F_ij²)/k and
Var(F̂₂)_ij = Σ_c (H_c)_ij²/k, which is exactly 0 for a model linear in θ (every H_c = 0).
Categorical (expanding Π(e_y − p) with E[e_a e_b ...] = δ_ab... p_a):
  M₄ = δ₄∘p − Σ_{4 placements} δ₃∘p ⊗ p + Σ_{6 placements} δ₂∘p ⊗ p ⊗ p − 3 p^{⊗4}.
A batch of N inputs with F = (1/N) Σ_n F_n and independent draws per input has Var = (1/N²) Σ_n Var_n.

Sampled Fisher (``sf``, THEORY.md claim 7), C = 1: G = Jᵀ diag(q) J/N with q_n = mean_k ε² ~ χ²_k/k.
At ρ = 0 its step is Δf_SF = −η r ⊘ q, so with Δf_NG = −η r

  E||Δf_SF − Δf_NG||² / ||Δf_NG||² = E(1/q − 1)² = (2k + 8) / ((k − 2)(k − 4))   (k > 4; ∞ for k ≤ 4),
  E[Δf_SF] / Δf_NG = E[1/q] = k/(k − 2)   (k > 2; ∞ for k ≤ 2: F̂ is unbiased, F̂⁻¹ is not),
  cos(Δf_SF, Δf_NG) → E[1/q]/√E[1/q²] = √((k − 4)/(k − 2))   (N → ∞ with no residual dominating).

With damping ρ > 0, A = Θ(Θ + Nρ)⁻¹ (the damped exact-NG kernel, Δf_NG = −η A r), ∂Θ_SF/∂q_n = −A_{:,n}A_{n,:}
at q = 1, and to first order in Var q = 2/k (finite for every k because Θ_SF ≤ Θ/(Nρ)):

  E||Δf_SF − Δf_NG||²/||Δf_NG||² ≈ (2/k) Σ_n ||A_{:,n}||² (Ar)_n² / ||Ar||²,
  1 − E cos ≈ (1/k) Σ_n ||(I − vvᵀ) A_{:,n}||² (Ar)_n² / ||Ar||²,   v = Ar/||Ar||,

which at ρ = 0 (A = I) is 2/k and (1/k)(1 − Σ r⁴/(Σ r²)²).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from . import linalg, losses, methods
from .damping import Damping

MODELS = ("gaussian", "softmax")

__all__ = [
    "MODELS", "NetworkDerivatives", "FisherVariance", "MonteCarlo", "flat_network", "network_derivatives",
    "output_moments", "exact_fisher", "closed_form_variance", "variance_from_moments", "log_likelihood",
    "sample_estimates", "monte_carlo", "sf_scatter_exact", "sf_mean_step_ratio", "sf_cosine_limit",
    "sf_scatter_leading_order", "sampled_fisher_steps", "z_scores",
]


class NetworkDerivatives(NamedTuple):
    """f(x_n) (N, C), J_n = ∂f/∂θ (N, C, P) and H_{n,c} = ∇²_θ f_c (N, C, P, P) at one θ."""

    outputs: jax.Array
    jac: jax.Array
    hess: jax.Array


class FisherVariance(NamedTuple):
    """Element-wise variances (P, P) of F̂₁ (squared score) and F̂₂ (negative Hessian)."""

    score: jax.Array
    hessian: jax.Array


class MonteCarlo(NamedTuple):
    """Monte Carlo statistics of R replicate estimates, from B independent batches of R/B replicates.

    mean/var: per-entry mean and unbiased variance (averaged over batches); *_se their standard errors
    (standard deviation over the batches / √B); total_var = Σ_ij var_ij = E||F̂ − F||²_F with its error."""

    mean: np.ndarray
    mean_se: np.ndarray
    var: np.ndarray
    var_se: np.ndarray
    total_var: float
    total_var_se: float


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------
def _model(model: str) -> str:
    return _validate.choice("model", model, MODELS)


def _check_derivatives(d: NetworkDerivatives, model: str | None = None) -> NetworkDerivatives:
    out, jac, hess = (np.asarray(a) for a in d)
    if out.ndim != 2 or jac.ndim != 3 or hess.ndim != 4:
        raise ValueError(f"derivatives must have shapes (N, C), (N, C, P), (N, C, P, P); got {out.shape}, "
                         f"{jac.shape}, {hess.shape}")
    n, c = out.shape
    p = jac.shape[2]
    if jac.shape[:2] != (n, c) or hess.shape != (n, c, p, p):
        raise ValueError(f"shape mismatch: outputs {out.shape} need jac ({n}, {c}, P) and hess ({n}, {c}, P, P); "
                         f"got {jac.shape} and {hess.shape}")
    for name, a in zip(d._fields, (out, jac, hess)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf")
    if model == "softmax" and c < 2:
        raise ValueError("softmax needs C >= 2 outputs (with C = 1 the class is certain and the Fisher is 0)")
    return d


def _check_f(f: Callable, theta, X) -> int:
    """C, from evaluating the shape of f(θ, x) on X's first row; a one-line error if it does not fit."""
    try:
        shape = jax.eval_shape(f, theta, X[0]).shape
    except (TypeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"f(theta, x) fails on a row of X of length {X.shape[1]} with theta of size {theta.shape[0]} "
                         f"(does X have the network's input dimension?): {first}") from None
    if len(shape) != 1:
        raise ValueError(f"f(theta, x) must return a vector of C outputs, got shape {shape}")
    return shape[0]


# ---------------------------------------------------------------------------------------------
# the network as a function of one flat parameter vector
# ---------------------------------------------------------------------------------------------
def flat_network(net, params) -> tuple[Callable, jax.Array]:
    """(f, θ₀): f(θ, x) -> (C,) for one input x, θ₀ the flattened ``params`` (jax.flatten_util)."""
    from jax.flatten_util import ravel_pytree

    theta0, unravel = ravel_pytree(params)

    def f(theta, x):
        return net.forward_with_taps(unravel(theta), x[None])[0][0]

    return f, theta0


def network_derivatives(f: Callable, theta, X) -> NetworkDerivatives:
    """f(x_n), J = jax.jacrev and H = jax.hessian of f(θ, x_n) w.r.t. θ, for every row of X."""
    X = _validate.finite_matrix("X", X)
    theta = jnp.asarray(theta)
    if theta.ndim != 1:
        raise ValueError(f"theta must be a flat parameter vector, got shape {theta.shape}")
    _check_f(f, theta, jnp.asarray(X))
    per_input = jax.jit(jax.vmap(lambda x: (f(theta, x), jax.jacrev(f)(theta, x), jax.hessian(f)(theta, x))))
    return NetworkDerivatives(*per_input(jnp.asarray(X)))


# ---------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------
def _isserlis(c: int):
    eye = jnp.eye(c)
    return (jnp.einsum("ab,cd->abcd", eye, eye) + jnp.einsum("ac,bd->abcd", eye, eye)
            + jnp.einsum("ad,bc->abcd", eye, eye))


def _categorical_m4(p):
    """E Π_{i=1..4}(e_y − p)_{a_i} for y ~ Cat(p), by expanding the product (module docstring)."""
    c = p.shape[0]
    eye = jnp.eye(c)
    e2 = eye * p  # E[e_a e_b] = δ_ab p_a
    e3 = jnp.einsum("ab,ac,a->abc", eye, eye, p)
    e4 = jnp.einsum("ab,ac,ad,a->abcd", eye, eye, eye, p)
    idx = "abcd"
    m4 = e4 - 3 * jnp.einsum("a,b,c,d->abcd", p, p, p, p)
    for rest in itertools.combinations(range(4), 3):  # E over three slots, p in the fourth
        (lone,) = set(range(4)) - set(rest)
        m4 = m4 - jnp.einsum(f"{''.join(idx[i] for i in rest)},{idx[lone]}->abcd", e3, p)
    for pair in itertools.combinations(range(4), 2):  # E over two slots, p in the other two
        i, j = (idx[k] for k in set(range(4)) - set(pair))
        m4 = m4 + jnp.einsum(f"{idx[pair[0]]}{idx[pair[1]]},{i},{j}->abcd", e2, p, p)
    return m4


def output_moments(model: str, outputs) -> tuple[jax.Array, jax.Array]:
    """(Λ, M₄) per input: covariance (N, C, C) and central 4th moments (N, C, C, C, C) of t(y)."""
    model = _model(model)
    outputs = jnp.asarray(outputs)
    n, c = outputs.shape
    if model == "gaussian":
        return jnp.broadcast_to(jnp.eye(c), (n, c, c)), jnp.broadcast_to(_isserlis(c), (n, c, c, c, c))
    p = jax.nn.softmax(outputs, axis=-1)
    cov = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]
    return cov, jax.vmap(_categorical_m4)(p)


def exact_fisher(model: str, d: NetworkDerivatives) -> jax.Array:
    """F = (1/N) Σ_n J_nᵀ Λ_n J_n (P, P)."""
    d = _check_derivatives(d, _model(model))
    cov, _ = output_moments(model, d.outputs)
    return jnp.einsum("nai,nab,nbj->ij", d.jac, cov, d.jac) / d.jac.shape[0]


def variance_from_moments(d: NetworkDerivatives, cov, m4, samples: int = 1) -> FisherVariance:
    """Var(F̂₁), Var(F̂₂) for any output family from its moments Λ (N, C, C) and M₄ (N, C, C, C, C)."""
    k = _validate.positive_int("samples", samples)
    d = _check_derivatives(d)
    jac, hess = jnp.asarray(d.jac), jnp.asarray(d.hess)
    n, c = jac.shape[:2]
    if np.shape(cov) != (n, c, c) or np.shape(m4) != (n, c, c, c, c):
        raise ValueError(f"moments must have shapes ({n}, {c}, {c}) and ({n}, {c}, {c}, {c}, {c}); "
                         f"got {np.shape(cov)} and {np.shape(m4)}")
    fn = jnp.einsum("nai,nab,nbj->nij", jac, cov, jac)
    fourth = jnp.einsum("nabcd,nai,nbj,nci,ndj->ij", m4, jac, jac, jac, jac, optimize="optimal")
    v1 = (fourth - jnp.sum(fn**2, axis=0)) / (n * n * k)
    v2 = jnp.einsum("naij,nab,nbij->ij", hess, cov, hess) / (n * n * k)
    return FisherVariance(v1, v2)


def closed_form_variance(model: str, d: NetworkDerivatives, samples: int = 1) -> FisherVariance:
    """Element-wise Var(F̂₁), Var(F̂₂) with k = ``samples`` draws per input (module docstring).

    gaussian: (F_ii F_jj + F_ij²)/k and Σ_c (H_c)_ij²/k per input (Isserlis); softmax: categorical moments."""
    model = _model(model)
    k = _validate.positive_int("samples", samples)
    d = _check_derivatives(d, model)
    if model == "softmax":
        return variance_from_moments(d, *output_moments(model, d.outputs), samples=k)
    jac, hess = jnp.asarray(d.jac), jnp.asarray(d.hess)
    n = jac.shape[0]
    fn = jnp.einsum("nai,naj->nij", jac, jac)
    diag = jnp.diagonal(fn, axis1=1, axis2=2)
    v1 = jnp.sum(diag[:, :, None] * diag[:, None, :] + fn**2, axis=0) / (n * n * k)
    v2 = jnp.sum(hess**2, axis=(0, 1)) / (n * n * k)
    return FisherVariance(v1, v2)


# ---------------------------------------------------------------------------------------------
# Monte Carlo: the estimators themselves, by automatic differentiation of log p
# ---------------------------------------------------------------------------------------------
def log_likelihood(model: str, f: Callable, theta, x, y):
    """log p(y|x; θ) up to a θ-independent constant: −½||y − f||² or f_y − logsumexp(f)."""
    out = f(theta, x)
    if model == "gaussian":
        return -0.5 * jnp.sum((y - out) ** 2)
    return out[y] - jax.nn.logsumexp(out)


def _draw(model, outputs, key, k):
    if model == "gaussian":
        return outputs[None] + jax.random.normal(key, (k, *outputs.shape), outputs.dtype)
    return jax.random.categorical(key, outputs, shape=(k, outputs.shape[0]))


def sample_estimates(model: str, f: Callable, theta, X, samples: int, replicates: int, seed: int = 0):
    """R = ``replicates`` independent draws of (F̂₁, F̂₂), each (R, P, P), with k = ``samples`` targets
    y ~ p(y|x_n) per input and per replicate (jax.random, ``seed``). The score and Hessian of every
    sampled log p(y|x; θ) come from jax.grad and jax.hessian; F̂ = (1/N) Σ_n (per-input estimator)."""
    model = _model(model)
    k = _validate.positive_int("samples", samples)
    reps = _validate.positive_int("replicates", replicates)
    seed = _validate.positive_int("seed", seed, minimum=0)
    X = jnp.asarray(_validate.finite_matrix("X", X))
    theta = jnp.asarray(theta)
    if theta.ndim != 1:
        raise ValueError(f"theta must be a flat parameter vector, got shape {theta.shape}")
    if model == "softmax" and _check_f(f, theta, X) < 2:
        raise ValueError("softmax needs C >= 2 outputs (with C = 1 the class is certain and the Fisher is 0)")
    if model == "gaussian":
        _check_f(f, theta, X)
    outputs = jax.vmap(f, (None, 0))(theta, X)
    n = X.shape[0]

    def logp(th, x, y):
        return log_likelihood(model, f, th, x, y)

    per_draw = jax.vmap(jax.vmap(lambda x, y: (jax.grad(logp)(theta, x, y), -jax.hessian(logp)(theta, x, y)),
                                 (0, 0)), (None, 0))

    def one(key):
        g, h = per_draw(X, _draw(model, outputs, key, k))  # (k, N, P), (k, N, P, P)
        return jnp.einsum("snp,snq->pq", g, g) / (k * n), jnp.mean(h, axis=(0, 1))

    keys = jax.random.split(jax.random.PRNGKey(seed), reps)
    return jax.jit(lambda ks: jax.lax.map(one, ks))(keys)


def monte_carlo(estimates, batches: int) -> MonteCarlo:
    """Per-entry mean and variance of replicate estimates (R, ...) with standard errors from ``batches``
    independent batches (R must split into batches of at least 2)."""
    est = np.asarray(estimates, dtype=float)
    b = _validate.positive_int("batches", batches, minimum=2)
    r = est.shape[0]
    if r % b or r // b < 2:
        raise ValueError(f"{r} replicates do not split into {b} batches of >= 2 equal parts; change replicates or batches")
    grouped = est.reshape(b, r // b, *est.shape[1:])
    means, vars_ = grouped.mean(axis=1), grouped.var(axis=1, ddof=1)
    totals = vars_.reshape(b, -1).sum(axis=1)
    se = lambda a: a.std(axis=0, ddof=1) / math.sqrt(b)  # noqa: E731
    return MonteCarlo(means.mean(0), se(means), vars_.mean(0), se(vars_), float(totals.mean()), float(se(totals)))


def z_scores(measured, theory, se, variance, rel_floor: float = 1e-12) -> np.ndarray:
    """(measured − theory)/se per entry; NaN where the estimator's variance (closed form) is zero relative
    to its largest entry (a deterministic entry has no standard error: compare it exactly instead)."""
    variance = np.asarray(variance, dtype=float)
    mask = variance > rel_floor * np.max(np.abs(variance))
    se = np.asarray(se, dtype=float)
    if np.any(mask & ~(se > 0)):
        raise ValueError("a Monte Carlo entry with nonzero theoretical variance has standard error 0; use more replicates")
    z = np.full(variance.shape, np.nan)
    z[mask] = (np.asarray(measured, float)[mask] - np.asarray(theory, float)[mask]) / se[mask]
    return z


# ---------------------------------------------------------------------------------------------
# the sampled-Fisher step (THEORY.md claim 7)
# ---------------------------------------------------------------------------------------------
def sf_scatter_exact(samples: int) -> float:
    """E||Δf_SF − Δf_NG||²/||Δf_NG||² = E(1/q − 1)², q ~ χ²_k/k, at ρ = 0, C = 1: (2k+8)/((k−2)(k−4)), ∞ for k ≤ 4."""
    k = _validate.positive_int("samples", samples)
    return (2 * k + 8) / ((k - 2) * (k - 4)) if k > 4 else math.inf


def sf_mean_step_ratio(samples: int) -> float:
    """E[Δf_SF,n]/Δf_NG,n = E[1/q] = k/(k − 2) at ρ = 0, C = 1 (∞ for k ≤ 2)."""
    k = _validate.positive_int("samples", samples)
    return k / (k - 2) if k > 2 else math.inf


def sf_cosine_limit(samples: int) -> float:
    """N → ∞ limit of cos(Δf_SF, Δf_NG) at ρ = 0, C = 1: √((k−4)/(k−2)) (0 for k ≤ 4, where E[1/q²] = ∞)."""
    k = _validate.positive_int("samples", samples)
    return math.sqrt((k - 4) / (k - 2)) if k > 4 else 0.0


def sf_scatter_leading_order(theta, residual, damping: float, samples: int) -> tuple[float, float]:
    """(scatter, 1 − mean cosine) of the SF step around the damped exact-NG step −η Θ(Θ + Nρ)⁻¹ r, to
    first order in 1/k (module docstring), C = 1; ``theta`` the N×N training NTK."""
    k = _validate.positive_int("samples", samples)
    rho = _validate.nonnegative("damping", damping)
    theta = np.asarray(_validate.finite_matrix("theta", theta))
    n = theta.shape[0]
    if theta.shape != (n, n):
        raise ValueError(f"theta must be square (N, N), got {theta.shape}")
    r = np.asarray(residual, dtype=float).reshape(-1)
    if r.shape != (n,):
        raise ValueError(f"residual has {r.size} entries but theta is {n}×{n} (C = 1 only)")
    if not np.all(np.isfinite(r)) or not np.any(r):
        raise ValueError("residual must be finite and not all zero")
    A = np.asarray(linalg.projector(jnp.asarray(theta), n * rho))
    step = A @ r
    norm2 = float(step @ step)
    v = step / math.sqrt(norm2)
    perp = A - np.outer(v, v @ A)
    scatter = 2.0 / k * float(np.sum(np.sum(A**2, axis=0) * step**2)) / norm2
    one_minus_cos = 1.0 / k * float(np.sum(np.sum(perp**2, axis=0) * step**2)) / norm2
    return scatter, one_minus_cos


def sampled_fisher_steps(train_kernels, residual, samples: int, damping: float, seeds) -> np.ndarray:
    """Δf_SF/(−η) on the training points for each noise seed, through the library's ``sf`` kernel
    (methods/sf.py, MSE model samples): rows Θ_SF(X, X; seed) r, shape (len(seeds), N·C)."""
    k = _validate.positive_int("samples", samples)
    rho = _validate.nonnegative("damping", damping)
    n = train_kernels.fwd.shape[1]
    r = jnp.reshape(jnp.asarray(residual, dtype=jnp.float64), (-1,))
    if r.shape[0] != n * train_kernels.out_dim:
        raise ValueError(f"residual has {r.shape[0]} entries; the kernels need N·C = {n * train_kernels.out_dim}")
    if k < train_kernels.out_dim and rho == 0:
        raise ValueError(f"sf with samples={k} < C={train_kernels.out_dim} is singular at damping 0; use more samples")
    sf = methods.get("sf")
    f = jnp.zeros((n, train_kernels.out_dim))

    def kernel(seed):
        opts = sf.normalise_options({"samples": k, "seed": int(seed)}, train_kernels.depth)
        ctx = methods.Context(n, Damping.of(rho), opts, scores=sf.draw(losses.MSE, f, dict(opts), 0))
        return sf.kernel(train_kernels, None, ctx).train

    rows = [kernel(s) @ r for s in seeds]
    return np.asarray(jnp.stack(rows))
