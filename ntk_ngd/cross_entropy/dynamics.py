"""Logit dynamics of cross-entropy NGD with a fixed kernel (THEORY.md "Cross-entropy NGD in
function space", dynamics).

At infinite width (``params=None``, f_0 = 0) or linearised at finite width (fixed Jacobian at
``params``, f_0 = f(X; params)) the layer kernels are fixed, but Λ and g depend on the logits:

    f_{t+1}(x') = f_t(x') − η Θ_G(x', X; f_t) g(f_t)     (x' ∈ X and test points),

with no closed form in general. Every step re-whitens the fixed layer kernels at f_t and applies the
method's Gram form (:mod:`.kernels`), inside one jit-compiled ``lax.scan``. The step is the
representative orthogonal to 1_C per sample (the softmax ignores that direction).

Exact NGD at ρ = 0 is the exception: Δf_n ≡ η y_n ⊘ p_n (mod 1), kernel-free on the training points
(tests use this closed form as the independent check of the scan).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate
from ..dynamics import DIVERGENCE_FACTOR
from .kernels import _core, _core_jit, check_method, check_problem, core_arrays, initial_logits, normalise_options
from .kernels import stacked_kernels
from .softmax import check_labels, whitening


@dataclasses.dataclass(frozen=True)
class CESimulationResult:
    method: str
    times: np.ndarray  # (T,) step indices
    train_loss: np.ndarray  # (T,) mean cross-entropy
    train_accuracy: np.ndarray  # (T,)
    train_logits: np.ndarray  # (T, N, C)
    test_logits: np.ndarray | None  # (T, N_test, C)
    test_loss: np.ndarray | None  # (T,) when labels_test were given
    test_accuracy: np.ndarray | None
    lr: float
    lr_rule: str
    alpha: float | None  # isotropy of Θ̃_G at step 0 (fixed-kernel methods)
    deviation: float | None
    diverged: bool
    diverged_at: int | None


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6, 11))
def _trajectory(method, opts, n, damping, c, output_diagonal, lr, fwd, bwd, fwd_left, bwd_left, steps, f_all, Y):
    def body(f, _):
        step, _ = _core(method, opts, n, damping, c, output_diagonal, fwd, bwd, fwd_left, bwd_left, f[:n], Y)
        f_next = f - lr * step
        return f_next, f_next

    _, fs = jax.lax.scan(body, f_all, None, length=steps)
    return jnp.concatenate([f_all[None], fs])


def _losses(logits, Y):
    with np.errstate(invalid="ignore", over="ignore"):
        lsm = logits - np.max(logits, axis=-1, keepdims=True)
        lsm = lsm - np.log(np.sum(np.exp(lsm), axis=-1, keepdims=True))
        loss = -np.mean(np.sum(Y[None] * lsm, axis=-1), axis=-1)
        acc = np.mean(np.argmax(logits, axis=-1) == np.argmax(Y, axis=-1)[None], axis=-1)
    return loss, np.where(np.isfinite(loss), acc, np.nan)


def default_lr(method: str, metric, f, Y) -> tuple[float, str]:
    """1/α (exact, block_diag, kfac: one-step-optimal when Θ̃_G = αI), 1/λ_max (gd), min_n g_nᵀΛ_n⁺g_n
    (ef: no sample's first-order loss decrease exceeds exact NGD's at step 0), 1 (ief)."""
    if method == "ief":
        return 1.0, "1"
    if method == "ef":
        _, u, _ = whitening(jnp.asarray(f), jnp.asarray(Y))
        return float(np.min(np.sum(np.asarray(u) ** 2, axis=1))), "min_n g^T Lambda^+ g"
    if method == "gd":
        return 1.0 / float(np.linalg.eigvalsh(0.5 * (metric + metric.T))[-1]), "1/lambda_max"
    alpha = float(np.trace(metric) / metric.shape[0])
    if not (alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"{method}: metric kernel has alpha {alpha}; pass lr explicitly")
    return 1.0 / alpha, "1/alpha"


def simulate(net, X, labels, method: str, params=None, lr: float | None = None, steps: int = 20, X_test=None,
             labels_test=None, damping: float = 0.0, logits=None, **options) -> CESimulationResult:
    """Cross-entropy logit dynamics of ``method`` for ``steps`` steps (module docstring).

    ``labels``: class indices (N,) or one-hot (N, C); ``labels_test`` likewise (optional, for test
    loss/accuracy). ``lr=None`` uses :func:`default_lr` at step 0 (reported in ``lr_rule``).
    ``logits``: optional starting logits on the training points (default f_0; test points then start
    at f_0 too). ``options``: kfac_readout (kfac), rcond.
    """
    check_method(method)
    opts = normalise_options(method, options)
    steps = _validate.positive_int("steps", steps, minimum=0)
    damping = _validate.nonnegative("damping", damping)
    X, Y, X_test = check_problem(net, X, labels, X_test)
    n, c = X.shape[0], net.out_dim
    Y_test = None
    if labels_test is not None:
        if X_test is None:
            raise ValueError("labels_test given without X_test")
        Y_test = check_labels(labels_test, X_test.shape[0], c)
    if lr is not None and (not np.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    f0 = initial_logits(net, params, X)
    if logits is not None:
        f0 = np.asarray(_validate.finite_matrix("logits", logits, cols=c, rows=n), dtype=float)
    f_all = f0 if X_test is None else np.concatenate([f0, initial_logits(net, params, X_test)])
    train, left = stacked_kernels(net, X, X_test, params)
    arrays = core_arrays(train, left)
    _, metric = _core_jit(method, opts, n, damping, c, train.output_diagonal, *arrays, jnp.asarray(f0), jnp.asarray(Y))
    metric = None if metric is None else np.asarray(metric)
    if lr is None:
        lr, rule = default_lr(method, metric, f0, Y)
    else:
        lr, rule = float(lr), "given"
    alpha = deviation = None
    if metric is not None:
        from ..diagnostics import isotropy

        iso = isotropy(metric)
        alpha, deviation = iso.alpha, iso.deviation
    fs = np.asarray(_trajectory(method, opts, n, damping, c, train.output_diagonal, lr, *arrays, steps,
                                jnp.asarray(f_all), jnp.asarray(Y)))
    train_logits = fs[:, :n]
    loss, acc = _losses(train_logits, Y)
    test_logits = None if X_test is None else fs[:, n:]
    test_loss = test_acc = None
    if Y_test is not None:
        test_loss, test_acc = _losses(test_logits, Y_test)
    bad = ~np.isfinite(loss) | (loss > DIVERGENCE_FACTOR * max(loss[0], np.finfo(float).tiny))
    diverged_at = int(np.flatnonzero(bad)[0]) if bad.any() else None
    return CESimulationResult(method, np.arange(steps + 1, dtype=float), loss, acc, train_logits, test_logits,
                              test_loss, test_acc, float(lr), rule, alpha, deviation, diverged_at is not None,
                              diverged_at)


__all__ = ["CESimulationResult", "default_lr", "simulate"]
