"""One result type for every trajectory — function-space (infinite width or linearised), real
training, both losses, deep linear networks — with one divergence rule and one step-size policy.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

#: A run has diverged at the first step whose loss is non-finite or exceeds this multiple of the
#: initial loss (the same rule for closed forms, scans and real training).
DIVERGENCE_FACTOR = 1e6


def first_divergence(loss) -> int | None:
    """Index of the first non-finite loss or loss > DIVERGENCE_FACTOR × loss[0] (None if none)."""
    loss = np.asarray(loss, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(loss) | (loss > DIVERGENCE_FACTOR * max(float(loss[0]), np.finfo(float).tiny))
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A trajectory of ``method`` (see the module docstring).

    ``times`` (T,): step indices (or continuous times τ); ``train_loss`` (T,), ``train_pred`` (T, N, C)
    outputs (logits for cross-entropy); ``test_pred`` (T, N_test, C) and ``test_loss`` (T,) when test
    points (and targets) were given; ``train_accuracy``/``test_accuracy`` (argmax, or sign for one
    output) when meaningful. ``lr`` and ``lr_rule`` (how it was chosen), ``alpha``/``deviation`` the
    isotropy of the step-0 metric kernel (None where there is none). ``diverged_at``: index of the
    first diverged entry (:func:`first_divergence`); real training stops there (NaN afterwards).
    ``params``: final parameters (real training); ``kernel``: the fixed kernel (function space).
    The subclass :class:`ntk_ngd.continual.ContinualTrajectory` (task sequences) holds the T × T loss matrix in
    ``loss`` (issue 15's name) and the loss function's name in ``loss_name``.
    """

    method: str
    loss: str
    times: np.ndarray
    train_loss: np.ndarray
    train_pred: np.ndarray
    test_pred: np.ndarray | None
    test_loss: np.ndarray | None
    lr: float
    lr_rule: str
    alpha: float | None
    deviation: float | None
    diverged_at: int | None
    train_accuracy: np.ndarray | None = None
    test_accuracy: np.ndarray | None = None
    params: Any = dataclasses.field(default=None, repr=False)
    kernel: np.ndarray | None = dataclasses.field(default=None, repr=False)
    damping: float = 0.0

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def steps_run(self) -> int:
        """Steps taken before a divergence stopped the run (all of them otherwise)."""
        return len(self.times) - 1 if self.diverged_at is None else self.diverged_at - 1

    @property
    def final_loss(self) -> float:
        return float(self.train_loss[self.steps_run])

    def steps_to(self, fraction: float) -> int | None:
        """First index whose loss is ≤ fraction × initial loss (None if never)."""
        hit = np.flatnonzero(self.train_loss <= fraction * self.train_loss[0])
        return int(hit[0]) if hit.size else None


def default_lr(rule: str, metric=None, prediction=None, residual=None) -> tuple[float, str]:
    """The step size a method's ``step_rule`` gives for lr=None, and its description.

    * "1/alpha": 1/α with α the theory's when it predicts Θ_G = α·I (``prediction``), else the measured
      mean eigenvalue tr(Θ_G)/rows of the step-0 ``metric`` (one-step convergence iff isotropic);
    * "1/lambda_max": 1/λ_max(metric) (gradient descent; 2/λ_max is the stability edge);
    * "min_residual": min_n ||u_n||² (EF: no sample's step overshoots at step 0);
    * "one": 1 (iEF, SF: α = 1 in expectation).
    """
    if rule == "one":
        return 1.0, "1"
    if rule == "min_residual":
        u = np.asarray(residual, dtype=float)
        lr = float(np.min(np.sum(u.reshape(u.shape[0], -1) ** 2, axis=1)))
        if not lr > 0:
            raise ValueError("a sample has zero initial residual, so lr=None (min_n ||u_n||^2) is 0; pass lr")
        return lr, "min_n ||u_n||^2"
    K = np.asarray(metric, dtype=float)
    if rule == "1/lambda_max":
        return 1.0 / float(np.linalg.eigvalsh(0.5 * (K + K.T))[-1]), "1/lambda_max"
    if prediction is not None and prediction.isotropic and prediction.alpha and prediction.alpha > 0:
        return 1.0 / float(prediction.alpha), "1/alpha (theory)"
    alpha = float(np.trace(K) / K.shape[0])
    if not (alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"kernel has alpha {alpha}; pass lr explicitly")
    return 1.0 / alpha, "1/alpha (measured)"


def check_lr(lr) -> float:
    try:
        v = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a number > 0, got {lr!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return v


__all__ = ["DIVERGENCE_FACTOR", "Trajectory", "check_lr", "default_lr", "first_divergence"]
