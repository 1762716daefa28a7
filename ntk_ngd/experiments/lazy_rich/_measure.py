"""The measurements of figure `lazy_rich`: trained vs linearised trajectories over (width, step), the width
where their distance crosses 10 %, and the distance between two methods' 10 % contours.

Trained: the centred network f(x; θ) − f(x; θ₀) trained in parameter space (:func:`ntk_ngd.training.train`,
``center=True``). Linearised: the function-space dynamics of the *same* network linearised at θ₀
(:func:`ntk_ngd.dynamics.simulate` with ``params=θ₀`` and ``outputs=0``: the finite-width kernel at θ₀, the
residual followed step by step for residual-dependent methods). Both start at f = 0 with the same step η, so

    D(M, η) = max_{1≤t≤k} ||f_M(t) − f_lin,M(t)||_F / ||Y||_F

is the part of the trajectory that the kernel at θ₀ does not explain (Lee et al. 2019; Karakida & Osawa 2020:
sup_t ||f_t − f_lin,t|| = O(M^{-1/2})). Normalised by ||Y||, not by ||f_lin(t) − f(0)||: the latter → 0 at small
η·t and would turn the O(η²) second-order term into an O(η) ratio that hides where the deviation is large in
absolute terms; ||Y|| is the scale a 10 % error is judged against (the distance the outputs must travel).
"""
from __future__ import annotations

import warnings

import numpy as np

from ...dynamics import simulate
from ...networks import mlp
from ...training import train
from .._methods import kernel_and_prediction, options, step_size
from ..width_scaling import deviation

#: the level whose crossing defines the lazy/rich contour
LEVEL = 0.1


def rule_step(spec, config, X, Y, activation: str = "relu") -> tuple[float, str, object]:
    """(η at lr multiplier 1, its rule, the infinite-width Prediction): the method's step rule on its
    infinite-width kernel (:func:`._methods.step_size` with fraction 1: 1/α where isotropic, else its rule capped
    at 2/(λ_max + λ_min)), the same η at every width."""
    net = mlp(depth=config["depth"], width=config["widths"][0], in_dim=config["in_dim"], activation=activation)
    K, pred = kernel_and_prediction(net, X, Y, spec)
    lr, rule = step_size(spec, K, pred, -Y, 1.0)
    return float(lr), rule, pred


def trained_vs_linearised(net, params, X, Y, spec, lr: float, steps: int) -> float:
    """D of the module docstring for one network, one initialisation ``params`` and one step ``lr`` (inf where
    either run diverged)."""
    opts = options(spec)
    with warnings.catch_warnings():  # steps past the stability edge are part of the grid (the lr multiplier 2)
        warnings.simplefilter("ignore", RuntimeWarning)
        trained = train(net, params, X, Y, spec.name, lr=lr, steps=steps, center=True, **opts)
        linear = simulate(net, X, Y, spec.name, params=params, outputs=np.zeros_like(Y), lr=lr, steps=steps, **opts)
    return deviation(trained.train_pred, linear.train_pred, Y)


def log_deviation_grid(spec, config, X, Y, lr: float, multipliers, seeds, activation: str = "relu") -> np.ndarray:
    """log D (widths × multipliers × seeds) at η = multiplier·``lr``."""
    out = np.zeros((len(config["widths"]), len(multipliers), len(seeds)))
    for i, width in enumerate(config["widths"]):
        net = mlp(depth=config["depth"], width=width, in_dim=config["in_dim"], activation=activation)
        for s, seed in enumerate(seeds):
            params = net.init(seed)
            for j, mult in enumerate(multipliers):
                with np.errstate(divide="ignore"):
                    out[i, j, s] = np.log(trained_vs_linearised(net, params, X, Y, spec, mult * lr, config["steps"]))
    return out


def log_crossing(widths, log_d, level: float = LEVEL) -> float:
    """log M* where D(M) falls through ``level`` for the last time (log-log linear interpolation between the
    bracketing grid widths; the geometric midpoint where the upper value diverged); −inf when D ≤ level at every
    width ("< min width"), +inf when D > level at the largest width ("> max width"). Non-finite D counts as
    above the level."""
    x = np.log(np.asarray(widths, float))
    y = np.asarray(log_d, float)
    if x.shape != y.shape:
        raise ValueError(f"log_crossing: {y.shape[0]} values for {x.shape[0]} widths; pass one log D per width")
    above = ~(y <= np.log(level))
    if not above.any():
        return -np.inf
    i = int(np.flatnonzero(above)[-1])
    if i == len(x) - 1:
        return np.inf
    if not np.isfinite(y[i]):
        return 0.5 * (x[i] + x[i + 1])
    return float(x[i] + (np.log(level) - y[i]) * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))


def log_contour(widths, log_d) -> np.ndarray:
    """log M*(multiplier) of the seed mean of log D (widths × multipliers × seeds)."""
    mean = np.mean(np.asarray(log_d, float), axis=2)
    return np.array([log_crossing(widths, mean[:, j]) for j in range(mean.shape[1])])


def per_seed_contours(widths, log_d) -> np.ndarray:
    """log M* (multipliers × seeds), one seed's curve at a time."""
    log_d = np.asarray(log_d, float)
    return np.array([[log_crossing(widths, log_d[:, j, s]) for s in range(log_d.shape[2])]
                     for j in range(log_d.shape[1])])


def pooled_contour_sigma(widths, log_ds) -> tuple[float, int]:
    """(σ of one seed's log M*, number of cells) pooled (mean variance, ddof 1) over the (method, multiplier)
    cells of ``log_ds`` (a list of calibration grids) where every seed crosses inside the width grid; nan with
    fewer than 2 seeds or no such cell."""
    variances = []
    for log_d in log_ds:
        for row in per_seed_contours(widths, log_d):
            if row.size >= 2 and np.all(np.isfinite(row)):
                variances.append(np.var(row, ddof=1))
    return (float(np.sqrt(np.mean(variances))), len(variances)) if variances else (float("nan"), 0)


def contour_distance(a, b, lo: float, hi: float) -> tuple[float, int]:
    """(max over multipliers of |log M*_a − log M*_b|, number of multipliers that entered) for two contours
    (±inf: censored at the grid edges ``lo``/``hi`` = log of the smallest/largest width). Both inside the grid:
    the difference; one censored: the lower bound from the grid edge it lies beyond (a bound above the band is a
    violation; one below it is counted, never more than the truth); both censored on the same side: no
    information (skipped); opposite sides: ≥ hi − lo. nan where no multiplier entered."""
    out = []
    for u, v in zip(np.asarray(a, float), np.asarray(b, float)):
        if np.isfinite(u) and np.isfinite(v):
            out.append(abs(u - v))
        elif np.isfinite(u) or np.isfinite(v):
            inside, edge = (u, v) if np.isfinite(u) else (v, u)
            out.append(max(0.0, inside - lo) if edge < 0 else max(0.0, hi - inside))
        elif np.sign(u) != np.sign(v):
            out.append(hi - lo)
    return (float(max(out)), len(out)) if out else (float("nan"), 0)


__all__ = ["LEVEL", "contour_distance", "log_contour", "log_crossing", "log_deviation_grid", "per_seed_contours",
           "pooled_contour_sigma", "rule_step", "trained_vs_linearised"]
