"""One result type for every trajectory — function-space (infinite width or linearised), real
training, both losses, deep linear networks — with one divergence rule and one step-size policy
(docs/THEORY.md "Step size").

Step size (lr=None) for a method with a fixed kernel Θ_G (eigenvalues λ_1 ≤ … ≤ λ_n on the training rows):

* **isotropic** (relative deviation ||Θ_G − αI||_F/||αI||_F ≤ :data:`ISOTROPY_TOL`, α the mean eigenvalue):
  η = 1/α — the theory's α when its verdict is isotropic and agrees with the measurement — one-step convergence;
* **otherwise** η = 1/λ_max: every residual component contracts by 1 − ηλ_i ∈ [0, 1), so the linearised MSE loss
  never increases (no component oscillates; 2/λ_max is the stability edge, and 2/(λ_min + λ_max), the fastest
  worst-case contraction, puts the top component at the edge's −(κ−1)/(κ+1) and fails when λ_min ≈ 0);
* **indefinite** (λ_min < −:data:`INDEFINITE_TOL`·λ_max, e.g. the damped block-tridiagonal kernel): no η > 0
  decreases the loss along the negative directions; η = 1/λ_max, a RuntimeWarning naming λ_min, and the
  trajectory is marked (``indefinite``, ``spectral_radius`` > 1).

Residual-dependent methods keep their theory's step (ef: min_n ||u_n||², ief/sf: 1) and gd its 1/λ_max.
Cross-entropy adds a trust region on top (:data:`KL_TRUST_REGION`, :func:`kl_step_cap`).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

#: A run has diverged at the first step whose loss is non-finite or exceeds this multiple of the initial loss
#: (the same rule for closed forms, scans, real training and deep linear networks). Fixed before any run: a
#: default step that is stable never raises the loss at all, so a 100-fold growth is unambiguous, and a run
#: that grows 1000-fold (the size of the failures of issue 24) is caught within a step or two.
DIVERGENCE_FACTOR = 100.0
#: Relative deviation up to which a kernel counts as isotropic for the step rule. With deviation d,
#: λ_max ≤ α(1 + d·√n), so η = 1/α stays below the stability edge 2/λ_max for n < 1e12; the isotropic
#: Gram-form kernels measure ≤ 5e-12 and infinite-width ReLU kernels are accurate to ~1e-8 (THEORY "Numerics").
ISOTROPY_TOL = 1e-6
#: λ_min below −INDEFINITE_TOL·λ_max makes a kernel indefinite (the rank cut-off leaves |λ| ≲ 1e-13·λ_max).
INDEFINITE_TOL = 1e-8
#: Default trust region for cross-entropy (docs/THEORY.md "Step size"): the second-order KL of one step,
#: ½η²ΔθᵀFΔθ = ½η²||R Δf||²/N (nats per sample; F the exact Fisher), is capped at this value.
KL_TRUST_REGION = 0.1
#: The metric the default trust region measures the output change in (ntk_ngd.optim.trust_region).
TRUST_METRIC = "euclidean"


def first_divergence(loss) -> int | None:
    """Index of the first non-finite loss or loss > DIVERGENCE_FACTOR × loss[0] (None if none)."""
    loss = np.asarray(loss, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(loss) | (loss > DIVERGENCE_FACTOR * max(float(loss[0]), np.finfo(float).tiny))
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def first_increase(loss, rtol: float = 1e-9) -> int | None:
    """First index t with loss[t] > loss[t−1]·(1 + rtol) + tiny (None: the loss never increases)."""
    loss = np.asarray(loss, dtype=float)
    with np.errstate(invalid="ignore"):
        up = ~np.isfinite(loss[1:]) | (loss[1:] > loss[:-1] * (1 + rtol) + np.finfo(float).tiny)
    return int(np.flatnonzero(up)[0]) + 1 if up.any() else None


def kl_step_cap(step_sq_norm, n: int, kappa: float, lr):
    """min(lr, √(2κN/||s||²)): the largest step ≤ lr whose second-order KL ½η²||s||²/N is ≤ κ (``s`` the
    whitened step per unit lr; works on numpy and jax values)."""
    import jax.numpy as jnp

    cap = jnp.sqrt(2.0 * kappa * n / jnp.maximum(step_sq_norm, np.finfo(float).tiny))
    return jnp.minimum(lr, cap)


@dataclasses.dataclass(frozen=True)
class StepSize:
    """A default step: ``lr``, ``rule`` (the rule and why), the step-0 kernel's spectrum ends (None where the method
    has no fixed kernel) and whether that kernel is indefinite."""

    lr: float
    rule: str
    lambda_min: float | None = None
    lambda_max: float | None = None
    indefinite: bool = False


def spectrum(metric) -> np.ndarray:
    """Eigenvalues (ascending) of the symmetric part of a kernel."""
    K = np.asarray(metric, dtype=float)
    return np.linalg.eigvalsh(0.5 * (K + K.T))


def spectral_radius(evals, lr) -> float | None:
    """max_i |1 − ηλ_i|: the per-step growth of the worst residual component (> 1: predicted to diverge)."""
    if evals is None:
        return None
    lam = np.asarray(evals, dtype=float)
    return float(np.max(np.abs(1.0 - float(lr) * lam)))


def _isotropic_step(evals, prediction) -> StepSize | None:
    lam = np.asarray(evals, dtype=float)
    alpha = float(np.mean(lam))
    if not (alpha > 0 and np.isfinite(alpha)):
        return None
    deviation = float(np.sqrt(np.mean((lam - alpha) ** 2)) / alpha)
    if deviation > ISOTROPY_TOL:
        return None
    ends = dict(lambda_min=float(lam[0]), lambda_max=float(lam[-1]))
    theory = prediction.alpha if prediction is not None and prediction.isotropic else None
    if theory and theory > 0 and abs(theory / alpha - 1) <= ISOTROPY_TOL:
        return StepSize(1.0 / float(theory), f"1/alpha: isotropic (theory alpha = {theory:.6g}, deviation "
                                             f"{deviation:.1e})", **ends)
    return StepSize(1.0 / alpha, f"1/alpha: isotropic (measured alpha = {alpha:.6g}, deviation {deviation:.1e})",
                    **ends)


def _spectral_step(evals, damping: float, method: str) -> StepSize:
    lam = np.asarray(evals, dtype=float)
    lam_min, lam_max = float(lam[0]), float(lam[-1])
    if not (lam_max > 0 and np.isfinite(lam_max)):
        raise ValueError(f"{method or 'the method'}: kernel has lambda_max {lam_max:g}; pass lr explicitly")
    alpha = float(np.mean(lam))
    deviation = float(np.sqrt(np.mean((lam - alpha) ** 2)) / abs(alpha)) if alpha else float("inf")
    where = f" at damping {damping:g}" if damping else ""
    if lam_min < -INDEFINITE_TOL * lam_max:
        warnings.warn(f"{method or 'method'}: the kernel is indefinite{where} (lambda_min = {lam_min:.3g}, "
                      f"lambda_max = {lam_max:.3g}): no step size decreases the loss along its negative directions; "
                      "use another damping (damping 0 is the isotropic limit) or another method", RuntimeWarning,
                      stacklevel=4)
        return StepSize(1.0 / lam_max, f"1/lambda_max: INDEFINITE kernel{where} (lambda_min = {lam_min:.3g})",
                        lam_min, lam_max, True)
    return StepSize(1.0 / lam_max, f"1/lambda_max: deviation {deviation:.2g}{where}", lam_min, lam_max)


def choose_step(rule: str, metric=None, prediction=None, residual=None, *, evals=None, damping: float = 0.0,
                method: str = "") -> StepSize:
    """The step size a method's ``step_rule`` gives for lr=None (module docstring), with its reason.

    * "1/alpha": 1/α if the step-0 kernel ``metric`` (or its eigenvalues ``evals``) is isotropic, else 1/λ_max;
    * "1/lambda_max": 1/λ_max (gradient descent);
    * "min_residual": min_n ||u_n||² (EF: no sample's step overshoots at step 0; claim 5);
    * "one": 1 (iEF, SF: α = 1 in expectation; claims 6, 7).
    """
    if rule == "one":
        return StepSize(1.0, "1: the theory's step (alpha = 1 in expectation)")
    if rule == "min_residual":
        u = np.asarray(residual, dtype=float)
        lr = float(np.min(np.sum(u.reshape(u.shape[0], -1) ** 2, axis=1)))
        if not lr > 0:
            raise ValueError("a sample has zero initial residual, so lr=None (min_n ||u_n||^2) is 0; pass lr")
        return StepSize(lr, "min_n ||u_n||^2: no sample overshoots at step 0")
    lam = spectrum(metric) if evals is None else np.sort(np.asarray(evals, dtype=float))
    if rule == "1/lambda_max":
        step = _spectral_step(lam, damping, method)
        return dataclasses.replace(step, rule="1/lambda_max: gradient descent")
    return _isotropic_step(lam, prediction) or _spectral_step(lam, damping, method)


def default_lr(rule: str, metric=None, prediction=None, residual=None, **kwargs) -> tuple[float, str]:
    """(lr, rule description) of :func:`choose_step`."""
    step = choose_step(rule, metric, prediction, residual, **kwargs)
    return step.lr, step.rule


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A trajectory of ``method`` (see the module docstring).

    ``times`` (T,): step indices (or continuous times τ); ``train_loss`` (T,), ``train_pred`` (T, N, C)
    outputs (logits for cross-entropy); ``test_pred`` (T, N_test, C) and ``test_loss`` (T,) when test
    points (and targets) were given; ``train_accuracy``/``test_accuracy`` (argmax, or sign for one
    output) when meaningful. ``lr`` and ``lr_rule`` (how it was chosen, and why), ``alpha``/``deviation`` the
    isotropy of the step-0 metric kernel (None where there is none). ``diverged_at``: index of the
    first diverged entry (:func:`first_divergence`); real training stops there (NaN afterwards).
    ``params``: final parameters (real training); ``kernel``: the fixed kernel (function space).
    ``lambda_min``/``lambda_max``: the step-0 kernel's spectrum ends; ``spectral_radius`` = max|1 − ηλ| over it
    (> 1: the linearised run is predicted to diverge before it is run); ``indefinite``: that kernel has negative
    eigenvalues. ``trust_region``: κ of the KL cap (None: off) and ``lr_per_step`` (T−1,) the step each
    iteration took under it. ``rel_step_norm`` (T−1,): ||Δθ_t||/||θ_t|| of each real-training step (None in
    function space): "left the lazy regime" as a number.
    ``epochs``/``wall_time`` (mini-batch training, :func:`ntk_ngd.fitting.fit`): the epoch (fractional) and the seconds
    since the start at each entry of ``times``.
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
    lambda_min: float | None = None
    lambda_max: float | None = None
    spectral_radius: float | None = None
    indefinite: bool = False
    trust_region: float | None = None
    lr_per_step: np.ndarray | None = dataclasses.field(default=None, repr=False)
    rel_step_norm: np.ndarray | None = dataclasses.field(default=None, repr=False)
    epochs: np.ndarray | None = dataclasses.field(default=None, repr=False)
    wall_time: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def predicted_divergent(self) -> bool:
        """The step-0 kernel's spectrum predicts growth: some |1 − ηλ| > 1 (None-safe: False without a kernel)."""
        return self.spectral_radius is not None and self.spectral_radius > 1 + 1e-12

    @property
    def steps_run(self) -> int:
        """Steps taken before a divergence stopped the run (all of them otherwise)."""
        return len(self.times) - 1 if self.diverged_at is None else self.diverged_at - 1

    @property
    def final_loss(self) -> float:
        return float(self.train_loss[self.steps_run])

    @property
    def first_increase(self) -> int | None:
        """First step whose training loss exceeds the previous one (beyond rounding), a divergence included;
        None: monotone."""
        up = first_increase(self.train_loss[: self.steps_run + 1])
        return self.diverged_at if up is None else up

    @property
    def monotone(self) -> bool:
        return self.first_increase is None

    @property
    def step_norm_first(self) -> float | None:
        """||Δθ_0||/||θ_0|| of the first real-training step."""
        return None if self.rel_step_norm is None or not len(self.rel_step_norm) else float(self.rel_step_norm[0])

    @property
    def step_norm_max(self) -> float | None:
        if self.rel_step_norm is None or not len(self.rel_step_norm):
            return None
        return float(np.nanmax(self.rel_step_norm))

    def steps_to(self, fraction: float) -> int | None:
        """First index whose loss is ≤ fraction × initial loss (None if never)."""
        hit = np.flatnonzero(self.train_loss <= fraction * self.train_loss[0])
        return int(hit[0]) if hit.size else None


def step_fields(step: StepSize | None, lr: float, evals=None) -> dict:
    """The spectrum fields of a :class:`Trajectory` for a run at ``lr`` (``evals``: the step-0 kernel's spectrum
    when known; else the ends the default rule measured)."""
    if evals is not None:
        lam = np.sort(np.asarray(evals, dtype=float))
        ends = float(lam[0]), float(lam[-1])
    elif step is not None and step.lambda_max is not None:
        lam, ends = np.array([step.lambda_min, step.lambda_max]), (step.lambda_min, step.lambda_max)
    else:
        return {}
    return dict(lambda_min=ends[0], lambda_max=ends[1], spectral_radius=spectral_radius(lam, lr),
                indefinite=bool(ends[0] < -INDEFINITE_TOL * ends[1]))


def warn_if_unstable(method: str, lr: float, fields: dict) -> None:
    """One RuntimeWarning, before the run, when a given step lies beyond the step-0 kernel's stability edge
    (spectral radius max|1 − ηλ| > 1; an indefinite kernel is warned about by :func:`choose_step`)."""
    radius = fields.get("spectral_radius")
    if radius is None or radius <= 1 + 1e-12 or fields.get("indefinite"):
        return
    edge = 2.0 / fields["lambda_max"]
    warnings.warn(f"{method}: lr = {lr:.4g} exceeds the stability edge 2/lambda_max = {edge:.4g} of its step-0 kernel "
                  f"(spectral radius {radius:.3g}): the linearised run is predicted to diverge; use lr <= {edge:.4g} "
                  "or lr=None", RuntimeWarning, stacklevel=3)


def check_lr(lr, positive: bool = True) -> float:
    """A finite learning rate, > 0 unless ``positive`` is False (the dense reference's Δθ = −lr·M⁻¹∇L takes any
    sign: a negative lr gives the ascent direction its tests compare with)."""
    want = "a finite number > 0" if positive else "a finite number"
    try:
        v = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be {want}, got {lr!r}") from None
    if not np.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"lr must be {want}, got {lr!r}")
    return v


def trust_region_for(trust_region, loss_name: str, lr_given: bool) -> float | None:
    """κ of the KL trust region: "auto" → :data:`KL_TRUST_REGION` for cross-entropy with the default step (a
    user-given lr wins), else off; a number > 0 → that κ; None/0 → off."""
    if isinstance(trust_region, str):
        if trust_region != "auto":
            raise ValueError(f"trust_region must be 'auto', None or a number > 0, got {trust_region!r}")
        return KL_TRUST_REGION if loss_name == "cross_entropy" and not lr_given else None
    if trust_region is None or trust_region == 0:
        return None
    try:
        kappa = float(trust_region)
    except (TypeError, ValueError):
        raise ValueError(f"trust_region must be 'auto', None or a number > 0, got {trust_region!r}") from None
    if not (np.isfinite(kappa) and kappa > 0):
        raise ValueError(f"trust_region must be 'auto', None or a number > 0, got {trust_region!r}")
    return kappa


__all__ = ["DIVERGENCE_FACTOR", "INDEFINITE_TOL", "ISOTROPY_TOL", "KL_TRUST_REGION", "StepSize", "TRUST_METRIC", "Trajectory",
           "check_lr", "choose_step", "default_lr", "first_divergence", "first_increase", "kl_step_cap",
           "spectral_radius", "spectrum", "step_fields", "trust_region_for", "warn_if_unstable"]
