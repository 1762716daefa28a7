"""What the figures that check every registered method share (convergence, width_scaling, predictions,
cross_entropy): a method's kernel and theory on the data, the one step-size rule, and the one-step
loss ratio the theory gives.

Step-size rule (every method, one formula): η = c·min(η_rule, 2/(λ_max + λ_min)), with η_rule the
method's registered step rule at the start (:func:`ntk_ngd.trajectory.default_lr`: 1/α with the theory's
α where it predicts Θ_G = α·I, 1/λ_max for gd, min_n u_n² for EF, 1 for iEF/SF) and λ the spectrum of
its step-0 kernel. The cap is the fastest stable constant step of a fixed kernel; for an isotropic
kernel both terms equal 1/α, so isotropic methods run at exactly c/α and theory predicts
loss_t = (1 − c)^{2t} loss_0 for all of them.

One-step theory on the training points (r₁ = (I − ηΘ_G)r₀ for a fixed kernel):
* Θ_G = α·I predicted (``Prediction.isotropic``): loss₁/loss₀ = (1 − ηα)²;
* Θ_G = diag(d) predicted (``Prediction.deviation`` set: kpsvd, EF diag(1/u²), SF diag(1/q)):
  loss₁/loss₀ = Σ_n (1 − ηd_n)² u_n² / Σ_n u_n²;
* otherwise the theory is silent about the rate.
"""
from __future__ import annotations

import numpy as np

from ..diagnostics import predict
from ..function_space import method_kernels
from ..trajectory import default_lr
from ._base import check_close, control_close, unpredicted

#: floating point: closed-form fixed-kernel dynamics and Gram solves, κ(Θ_G)·eps with κ ≤ 1e6 (≲ 2e-10)
FP_TOL = 1e-8
FP_MODEL = "floating point: kappa(Theta_G)*eps of the closed-form dynamics, kappa <= 1e6: tolerance 1e-8"
#: negative controls rerun a step at this multiple of η (kept for the trajectory controls of convergence)
CONTROL_LR = 0.9


def control_method(name: str) -> str:
    """The method whose run is the negative control of ``name``'s isotropy-based rows: gd (Θ/N, not isotropic:
    the claim's condition broken by another method), or exact NGD for gd itself."""
    return "exact" if name == "gd" else "gd"


def options(spec) -> dict:
    """The options a method runs with in the figures: its registered ``example_options``."""
    return dict(spec.example_options)


def kernel_and_prediction(net, X, Y, spec, params=None, loss: str = "mse", outputs=None):
    """(Θ_G(X, X) as numpy, the method's Prediction) on (X, Y) at ``params`` (None: infinite width);
    ``outputs``: the outputs the residual is taken at (default f(X; params), 0 at infinite width)."""
    opts = options(spec)
    kw = dict(params=params, targets=Y, loss=loss, outputs=outputs, **opts)
    return np.asarray(method_kernels(net, X, spec.name, **kw).train), predict(net, X, spec.name, **kw)


def step_size(spec, K, pred, residual, fraction: float) -> tuple[float, str]:
    """(η, rule) of the module docstring; ``residual`` (N, k) the whitened residual at the start. ``K`` None:
    the method has no finite kernel here (EF with k > 1 at ρ = 0), only its step rule applies."""
    base, rule = default_lr(spec.step_rule, K, pred if pred.isotropic else None, residual)
    if K is None:
        return fraction * base, f"{fraction:g}*{rule}"
    lam = np.linalg.eigvalsh(0.5 * (K + K.T))
    stable = 2.0 / (lam[-1] + lam[0])
    if not pred.isotropic and stable < base:
        return fraction * stable, f"{fraction:g}*2/(lmax+lmin)"
    return fraction * base, f"{fraction:g}*{rule}"


def one_step_theory(pred, residual, lr) -> tuple[float, str] | None:
    """(loss₁/loss₀, what) from the prediction alone (module docstring), or None where theory is silent."""
    u = np.asarray(residual, dtype=float).reshape(-1)
    if pred.isotropic and pred.alpha is not None:
        return (1.0 - lr * pred.alpha) ** 2, "(1 - eta alpha)^2"
    if pred.diagonal is not None and pred.deviation is not None:
        d = np.asarray(pred.diagonal, dtype=float)
        d = np.repeat(d, u.size // d.size) if d.size != u.size else d
        return float(np.sum((1.0 - lr * d) ** 2 * u**2) / np.sum(u**2)), "sum (1 - eta d_n)^2 u_n^2 / sum u^2"
    return None


def one_step_check(label: str, ratio: float, theory, isotropic: bool, control: tuple[str, float]):
    """The one-step family's row: ``theory`` = (value, formula) from :func:`._methods.one_step_theory` or None
    (silent); ``control`` = (method, its ratio at the same η): :func:`control_method`'s run, whose kernel is
    another matrix, judged against the same theory (kind ``other_method``)."""
    if theory is None:
        return unpredicted(f"{label}", ratio)
    value, what = theory
    other, other_ratio = control
    return check_close(f"{label} = {what}", ratio, value, FP_TOL, error_model=FP_MODEL,
                       expect="holds" if isotropic else "breaks",
                       controls=[control_close(f"{other}'s ratio at the same eta against this theory", other_ratio,
                                               value, FP_TOL, kind="other_method")])


def farthest_linearisation(curves: dict, name: str, steps: int) -> str:
    """The method (≠ ``name``) whose linearised loss curve is farthest from ``name``'s own (``log_deviation``; finite
    curves first): the lazy-band control compares ``name``'s trained run with it. Chosen from the linearised
    predictions alone, before the trained run is looked at; a control that still passes means the band cannot
    tell the methods' predictions apart."""
    dist = {m: log_deviation(c, curves[name], steps) for m, c in curves.items() if m != name}
    finite = {m: d for m, d in dist.items() if np.isfinite(d)}
    pool = finite or dist
    return max(pool, key=pool.get)


def log_deviation(loss, reference, steps: int) -> float:
    """max over t = 1..steps of |log(loss_t/loss_0) − log(reference_t/reference_0)| (both curves finite)."""
    loss, reference = np.asarray(loss, float), np.asarray(reference, float)
    t = slice(1, steps + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(np.log(loss[t] / loss[0]) - np.log(reference[t] / reference[0]))
    return float(np.max(d)) if np.all(np.isfinite(d)) else float("inf")


__all__ = ["CONTROL_LR", "control_method", "farthest_linearisation", "FP_MODEL", "FP_TOL", "kernel_and_prediction", "log_deviation", "one_step_check",
           "one_step_theory", "options", "step_size"]
