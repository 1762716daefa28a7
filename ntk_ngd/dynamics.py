"""Function-space training dynamics of every method (THEORY.md claim 8).

Linearised (lazy) or infinite-width training with kernel Θ_G moves the training residual by
r_{t+1} = r_t − η Θ_G(X, X) r_t and test outputs by f_{t+1}(x') = f_t(x') − η Θ_G(x', X) r_t.

*Fixed-kernel methods* (gd, exact, layer patterns, kfac, unit_wise): Θ_G is symmetric, so one
eigendecomposition Θ_G = V diag(λ) Vᵀ gives every step in closed form (as neural-tangents'
``predict.gradient_descent_mse``):

    discrete:    r_t = V diag((1 − ηλ)^t) Vᵀ r_0,
                 f_t(x') = f_0(x') − η Θ_G(x', X) V diag(Σ_{s<t}(1 − ηλ)^s) Vᵀ r_0,
                 Σ_{s<t}(1 − ηλ)^s = (1 − (1 − ηλ)^t)/(ηλ)   (= t for λ = 0);
    continuous:  r(τ) = V diag(e^{−λτ}) Vᵀ r_0,  f_τ(x') = f_0(x') − Θ_G(x', X) V diag((1 − e^{−λτ})/λ) Vᵀ r_0.

With Θ_G = α·I the residual falls by (1 − ηα) per step: η = 1/α reaches zero loss in one step.

*Residual-dependent methods* (ef, ief, sf) recompute the step from r_t with the NTK Θ fixed,
inside a jit-compiled ``lax.scan``. With R̃ (N·C×N) holding r_n in sample n's rows:
    ef:  Δf = −η Θ R̃ (R̃ᵀΘR̃ + NρI)⁺ 1        (= −η/r for C = 1, ρ = 0; THEORY.md claim 5)
    ief: Δf = −η Θ R̃ (R̃ᵀΘR̃ + ρI)⁺ s, s_n = ||r_n||²   (= −η r for C = 1; claim 6)
    sf:  Δf = −η Θ Q^{1/2}(Q^{1/2}ΘQ^{1/2} + NρI)⁺ Q^{−1/2} r,  Q = blockdiag_n((1/k)Σ_s ε ε ᵀ),
         ε ~ N(0, I) redrawn every step (claim 7; = −η r ⊘ mean(ε²) for C = 1).
These are the push-through forms of J(G + ρI)⁻¹∇Loss, independent of the kernels in
:mod:`ntk_ngd.methods.empirical` (tests compare the two).

Infinite width (``params=None``) starts from the prior mean f_0 = 0; finite width linearises
the network at ``params`` (f_0 = f(X; params)). Training loss is (1/2N) Σ_n ||r_n||².
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate, methods
from .diagnostics import isotropy
from .function_space import method_kernels
from .kernels import layer_kernels
from .methods import _linalg
from .methods.empirical import full_output_ntk, residual_factor, sf_noise
from .networks import Network

RESIDUAL_METHODS = ("ef", "ief", "sf")
#: A run counts as diverged once its loss exceeds this multiple of the initial loss.
DIVERGENCE_FACTOR = 1e10


@dataclasses.dataclass(frozen=True)
class SimulationResult:
    method: str
    times: np.ndarray  # (T,) step indices (discrete) or times τ (continuous)
    train_loss: np.ndarray  # (T,)
    train_pred: np.ndarray  # (T, N, C)
    test_pred: np.ndarray | None  # (T, N_test, C)
    lr: float
    lr_rule: str  # how lr was chosen: "given", "1/alpha", "1/lambda_max", ...
    alpha: float | None  # α of Θ_G(X, X) (fixed-kernel methods; residual methods: at step 0)
    deviation: float | None
    diverged: bool
    diverged_at: int | None  # index into ``times`` of the first diverged entry
    kernel: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def steps_to(self, fraction: float) -> int | None:
        """First index whose loss is ≤ fraction × initial loss (None if never)."""
        hit = np.flatnonzero(self.train_loss <= fraction * self.train_loss[0])
        return int(hit[0]) if hit.size else None


# ---------------------------------------------------------------------------------------------
# closed forms for a fixed kernel
# ---------------------------------------------------------------------------------------------
def _sum_of_powers(lam, lr, t):
    """Σ_{s<t} (1 − ηλ)^s, with the λ → 0 limit t."""
    q = 1.0 - lr * lam
    small = jnp.abs(lr * lam) < 1e-12
    safe = jnp.where(small, 1.0, lr * lam)
    return jnp.where(small, t, (1.0 - q**t) / safe)


def _integral_of_exp(lam, tau):
    """∫_0^τ e^{−λs} ds = −expm1(−λτ)/λ, with the λ → 0 limit τ."""
    small = jnp.abs(lam * tau) < 1e-12
    safe = jnp.where(small, 1.0, lam)
    return jnp.where(small, tau, -jnp.expm1(-lam * tau) / safe)


def closed_form(kernel_train, r0, times, lr, kernel_test=None, continuous=False):
    """Residuals r_t (T, n, k) and test-output changes f_t(x') − f_0(x') (T, n_test, k).

    ``kernel_train`` (n×n) symmetric; ``r0`` (n, k) — k = C for output-diagonal kernels, else 1.
    """
    evals, evecs = jnp.linalg.eigh(0.5 * (kernel_train + kernel_train.T))
    coeff0 = evecs.T @ r0  # (n, k)
    t = jnp.asarray(times, dtype=r0.dtype)[:, None]
    lam = evals[None, :]
    decay = jnp.exp(-lam * t) if continuous else (1.0 - lr * lam) ** t
    residuals = jnp.einsum("ij,tj,jk->tik", evecs, decay, coeff0)
    if kernel_test is None:
        return residuals, None
    acc = _integral_of_exp(lam, t) if continuous else lr * _sum_of_powers(lam, lr, t)
    moved = jnp.einsum("ij,tj,jk->tik", kernel_test @ evecs, acc, coeff0)
    return residuals, -moved


# ---------------------------------------------------------------------------------------------
# step-wise for residual-dependent methods
# ---------------------------------------------------------------------------------------------
def residual_step(method, theta, theta_test, r, n, out_dim, damping, noise=None):
    """(Δf on train, Δf on test) / (−η) for ef, ief, sf from the current residual r (flat N·C)."""
    if method in ("ef", "ief"):
        R = residual_factor(r, n, out_dim)
        gram = R.T @ theta @ R
        rhs = jnp.ones(n, r.dtype) if method == "ef" else jnp.sum(jnp.reshape(r, (n, out_dim)) ** 2, axis=1)
        shift = n * damping if method == "ef" else damping
        evals, evecs = _linalg.eigh_psd(gram)
        coeff = evecs @ (_linalg.inverse_eigenvalues(evals, shift) * (evecs.T @ rhs))
        weights = R @ coeff  # R̃ (R̃ᵀΘR̃ + shift)⁺ rhs
    else:  # sf: noise (k, N, C)
        k = noise.shape[0]
        cols = jnp.transpose(noise, (1, 2, 0)) / jnp.sqrt(k)
        blocks = jnp.einsum("nck,ndk->ncd", cols, cols)  # Q_n (C×C)
        evals, evecs = jnp.linalg.eigh(blocks)
        root = jnp.einsum("ncj,nj,ndj->ncd", evecs, jnp.sqrt(evals), evecs)
        inv_root = jnp.einsum("ncj,nj,ndj->ncd", evecs, 1.0 / jnp.sqrt(evals), evecs)
        size = n * out_dim
        Qh = _blockdiag(root, size)
        Qih = _blockdiag(inv_root, size)
        weighted = Qh @ theta @ Qh
        w_evals, w_evecs = _linalg.eigh_psd(weighted)
        inv = _linalg.inverse_eigenvalues(w_evals, n * damping)
        weights = Qh @ (w_evecs @ (inv * (w_evecs.T @ (Qih @ r))))
    step_train = theta @ weights
    step_test = None if theta_test is None else theta_test @ weights
    return step_train, step_test


def _blockdiag(blocks, size):
    """(N, C, C) per-sample blocks → N·C × N·C block-diagonal matrix."""
    n, c, _ = blocks.shape
    eye = jnp.eye(n, dtype=blocks.dtype)
    return jnp.einsum("ncd,nm->ncmd", blocks, eye).reshape(size, size)


def sf_noise_per_step(n, out_dim, samples, seed, steps):
    """(steps, k, N, C) sampled-Fisher draws, a fresh block per step (sf_noise with N·steps rows)."""
    draws = sf_noise(n * steps, out_dim, samples, seed)
    return jnp.asarray(draws.reshape(samples, steps, n, out_dim).transpose(1, 0, 2, 3))


def _scan_residual_method(method, theta, theta_test, r0, f0_test, lr, steps, n, out_dim, damping, noise):

    def body(carry, step_noise):
        r, f_test = carry
        d_train, d_test = residual_step(method, theta, theta_test, r, n, out_dim, damping, step_noise)
        r_next = r - lr * d_train
        f_next = None if f_test is None else f_test - lr * d_test
        return (r_next, f_next), (r_next, f_next)

    xs = noise[:steps] if noise is not None else jnp.zeros((steps, 0))
    body_jit = jax.jit(lambda c, x: body(c, x if noise is not None else None))
    _, (rs, fs) = jax.lax.scan(body_jit, (r0, f0_test), xs, length=steps)
    rs = jnp.concatenate([r0[None], rs]) if steps else r0[None]
    if f0_test is None:
        return rs, None
    fs = jnp.concatenate([f0_test[None], fs]) if steps else f0_test[None]
    return rs, fs


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
def simulate(
    net: Network,
    X,
    Y,
    method: str,
    params=None,
    lr: float | None = None,
    steps: int = 20,
    X_test=None,
    damping: float = 0.0,
    time: str = "discrete",
    samples: int = 1,
    seed: int = 0,
    **options,
) -> SimulationResult:
    """Function-space trajectory of ``method`` on (X, Y) for ``steps`` steps (module docstring).

    ``lr=None`` picks the step from the kernel and reports the rule in ``lr_rule``: 1/α for
    fixed-kernel methods (one-step convergence when Θ_G = α·I), 1/λ_max for gd, 1 for ief and sf
    (α = 1 by THEORY.md claims 6–7), min_n ||r_0,n||² for ef (no sample overshoots at step 0).
    ``time="continuous"`` evaluates r(τ) at τ = η·t (t = 0..steps) for fixed-kernel methods.
    """
    spec = methods.get(method)
    steps = _validate.positive_int("steps", steps, minimum=0)
    _validate.choice("time", time, ("discrete", "continuous"))
    damping = _validate.nonnegative("damping", damping)
    X = net.check_inputs(X, "X")
    n = X.shape[0]
    Y = _validate.finite_matrix("Y", np.reshape(Y, (n, -1)) if np.ndim(Y) == 1 else Y, cols=net.out_dim, rows=n)
    X_test = None if X_test is None else net.check_inputs(X_test, "X_test")
    if lr is not None and (not np.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    f0 = np.zeros_like(Y) if params is None else np.asarray(net.apply(params, X))
    f0_test = None
    if X_test is not None:
        f0_test = np.zeros((X_test.shape[0], net.out_dim)) if params is None else np.asarray(net.apply(params, X_test))
    r0 = f0 - Y

    if method in RESIDUAL_METHODS:
        if time != "discrete":
            raise ValueError(f"{method} is residual-dependent: only time='discrete' is supported")
        return _simulate_residual(net, X, Y, spec.name, params, lr, steps, X_test, damping, samples, seed, r0, f0_test)
    if spec.needs_residual:
        raise ValueError(f"method {method!r} needs a residual and is not simulated")
    kern = method_kernels(net, X, method, params=params, damping=damping, X_test=X_test, **options)
    K = jnp.asarray(kern.train)
    iso = isotropy(K)
    lr, rule = _default_lr(method, K, iso, lr)
    k_cols = net.out_dim if K.shape[0] == n else 1  # output-diagonal: columns are the C outputs
    r_mat = jnp.asarray(r0.reshape(K.shape[0], k_cols))
    times = np.arange(steps + 1, dtype=float) * (lr if time == "continuous" else 1.0)
    residuals, moved = closed_form(K, r_mat, times, lr, kern.test, continuous=time == "continuous")
    residuals = np.asarray(residuals).reshape(len(times), n, net.out_dim)
    test_pred = None
    if moved is not None:
        test_pred = f0_test[None] + np.asarray(moved).reshape(len(times), -1, net.out_dim)
    return _result(method, times, residuals, Y, test_pred, lr, rule, iso, np.asarray(K))


def _simulate_residual(net, X, Y, method, params, lr, steps, X_test, damping, samples, seed, r0, f0_test):
    n, out_dim = Y.shape
    theta = full_output_ntk(layer_kernels(net, X, params=params))
    theta_test = None if X_test is None else full_output_ntk(layer_kernels(net, X_test, X, params=params))
    samples = _validate.positive_int("samples", samples)
    if method == "sf" and samples < out_dim:
        raise ValueError(f"sf with samples={samples} < out_dim={out_dim} has a singular Fisher per sample; "
                         f"use samples >= {out_dim}")
    if lr is None:
        rule = {"ief": "1 (alpha = 1)", "sf": "1 (E[Q] = I)", "ef": "min_n ||r_0,n||^2"}[method]
        lr = float(np.min(np.sum(r0**2, axis=1))) if method == "ef" else 1.0
        if lr <= 0:
            raise ValueError("ef: a sample has zero initial residual, so lr=None (min r^2) is 0; pass lr")
    else:
        rule = "given"
    r_flat = jnp.asarray(r0.reshape(-1))
    f_test = None if f0_test is None else jnp.asarray(f0_test.reshape(-1))
    noise = sf_noise_per_step(n, out_dim, samples, seed, max(steps, 1)) if method == "sf" else None
    rs, fs = _scan_residual_method(method, theta, theta_test, r_flat, f_test, lr, steps, n, out_dim, damping, noise)
    residuals = np.asarray(rs).reshape(steps + 1, n, out_dim)
    test_pred = None if fs is None else np.asarray(fs).reshape(steps + 1, -1, out_dim)
    d0, _ = residual_step(method, theta, None, r_flat, n, out_dim, damping, None if noise is None else noise[0])
    alpha = float(jnp.vdot(r_flat, d0) / jnp.vdot(r_flat, r_flat))  # effective α along r_0
    iso = isotropy(np.eye(1) * alpha)
    return _result(method, np.arange(steps + 1, dtype=float), residuals, Y, test_pred, lr, rule, iso, None,
                   deviation=None)


def _default_lr(method, K, iso, lr):
    if lr is not None:
        return float(lr), "given"
    if method == "gd":
        return 1.0 / float(jnp.linalg.eigvalsh(K)[-1]), "1/lambda_max"
    if not (iso.alpha > 0 and np.isfinite(iso.alpha)):
        raise ValueError(f"{method}: kernel has alpha {iso.alpha}; pass lr explicitly")
    return 1.0 / iso.alpha, "1/alpha"


def _result(method, times, residuals, Y, test_pred, lr, rule, iso, kernel, deviation="measure"):
    n = Y.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        loss = 0.5 * np.sum(residuals**2, axis=(1, 2)) / n
    bad = ~np.isfinite(loss) | (loss > DIVERGENCE_FACTOR * max(loss[0], np.finfo(float).tiny))
    diverged_at = int(np.flatnonzero(bad)[0]) if bad.any() else None
    return SimulationResult(
        method=method,
        times=times,
        train_loss=loss,
        train_pred=residuals + Y[None],
        test_pred=test_pred,
        lr=float(lr),
        lr_rule=rule,
        alpha=iso.alpha,
        deviation=iso.deviation if deviation == "measure" else deviation,
        diverged=diverged_at is not None,
        diverged_at=diverged_at,
        kernel=kernel,
    )
