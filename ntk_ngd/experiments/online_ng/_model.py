r"""Error models of the online_ng figure, fixed before any judged run (the module docstring of the package says
which seed was explored while they were written and which seeds are judged).

Full batch, exact moments (square invertible layers). The step telescopes, W' = (I − (η/L)EW⁻¹)^L W, so
E_{t+1} = (1 − η)E_t + q E_tW_t⁻¹E_t + O(η³), q = η²(L − 1)/(2L), and the per-step log-ratio of the excess loss
½‖E S‖²_F lies within ±2·[−log(1 − q r_t/(1 − η))] of 2 log(1 − η), r_t = ‖E_tW_t⁻¹‖₂. The fitted slope (a positively
weighted average of the per-step log-ratios) inherits the bound with r̄ = max_t r_t along the closed-form
recurrence (theory side, not the measurement); band half-width :func:`full_band` = SAFETY × that + FP_FLOOR.

Online (EMA β, batches of B, square layers). Linearised, the end-to-end map moves by E Σ_b Â⁻¹ at every depth
(Â the EMA of the batch second moments Σ_b): the numpy recursion of :func:`._measure.linearised_online`, exact at
depth 1. At depth L the EMA factors lag behind the moving weights: layer j moves in total by the relative amount
δ_j = ‖(W_{≥j})⁻¹E_0(W_{<j})⁻¹‖₂/L (its share of the first-order change), so A_i (∝ W_{<i}W_{<i}ᵀ) and G_i
(∝ W_{>i}ᵀW_{>i}) are off by ε(t) ≤ 2 Σ_j δ_j · λ(t), λ(t) = β^t + (1 − β)Σ_{s=1}^t β^{t−s}(1 − η)^s (the EMA weight
of the older weights times how far those still were from the end); a factor error ε changes the per-step log-ratio
by ≤ 2ημε/(1 − ημ), μ = (1 + √(D/B))² ≥ ‖Σ_bÂ⁻¹‖ (Bai–Yin edge). :func:`lag_band` is SAFETY × the OLS-weighted
average of that over the fit window; :func:`fp_slope_floor` is added (the excess reaches ~1e-19 of its start).

Online against 2 log(1 − η): the mini-batch terms, each O(η(D + 1)/B): the second moment E[Σ_bΣ⁻¹Σ_b] =
Σ(1 + (D + 1)/B) (× the finite-population factor (N − B)/(N − 1)), the current batch inside its own EMA (weight
1 − β), and the Jensen term E[Â⁻¹] ≈ Σ⁻¹(1 + (D + 1)/n_eff), n_eff = B(1 + β)/((1 − β)·fpc); their signs are not
modelled (batches without replacement are anti-correlated within an epoch), so :func:`minibatch_allowance` is the
sum of their magnitudes. The band adds 3σ of the linearised recursion's slope over calibration batch orders.
"""
from __future__ import annotations

import numpy as np

from ... import deep_linear as dl

#: the first-order bounds drop O(ε²) and products of layer moves: judged against SAFETY × the leading term
SAFETY = 2.0
#: slopes of log(excess) are resolved to ~1e-9 when the excess stays above ~1e-12 of its start (float64)
FP_FLOOR = 1e-9
#: the loss curve against the closed-form recurrence, where the excess is ≥ CURVE_FLOOR × its start
CURVE_TOL, CURVE_FLOOR = 1e-8, 1e-12
#: calibration batch orders of the linearised online recursion (numpy), and the σ multiple of the band
K_SIGMA = 3.0


def full_band(lr: float, depth: int, r_max: float) -> float:
    """Half-width of the full-batch rate band (module docstring)."""
    q = lr ** 2 * (depth - 1) / (2 * depth)
    return SAFETY * 2.0 * -np.log1p(-q * r_max / (1.0 - lr)) + FP_FLOOR


def step_weights(times, start: int, stop: int) -> np.ndarray:
    """W_s ≥ 0 (Σ W_s = 1) for the steps s = start..stop−1: the OLS slope of y at the evaluated ``times`` in
    [start, stop] is Σ_s W_s (y_{s+1} − y_s), with y_{s+1} − y_s the per-step log-ratio."""
    t = np.asarray([x for x in times if start <= x <= stop], float)
    a = (t - t.mean()) / np.sum((t - t.mean()) ** 2)
    steps = np.arange(int(t[0]), int(t[-1]))
    out = np.zeros(stop - start)
    out[steps - start] = [a[t > s].sum() for s in steps]
    return out


def fp_slope_floor(times, theory_curve, output_scale: float, lr: float, start: int, stop: int) -> float:
    """Floating-point floor of a fitted slope: each step rounds E by ~eps‖W‖, an error that contracts like E, so the
    relative error of the excess at step t is δ_t ≈ (1/η + 2)·eps·√(output_scale/excess_t); the slope's error is
    ≤ Σ_j |a_j| δ_j (OLS coefficients a_j of the evaluated points in the window; excess from the theory curve)."""
    t = np.asarray([x for x in times if start <= x <= stop], float)
    a = np.abs((t - t.mean()) / np.sum((t - t.mean()) ** 2))
    delta = (1 / lr + 2) * np.finfo(float).eps * np.sqrt(output_scale / np.asarray(theory_curve)[t.astype(int)])
    return float(a @ delta + FP_FLOOR)


def layer_moves(layers, X, Y) -> list[float]:
    """δ_j = ‖(W_{≥j})⁻¹ E_0 (W_{<j})⁻¹‖₂ / L: each layer's relative total move (square invertible layers)."""
    E0 = dl.end_to_end_map(layers) - dl.least_squares_map(X, Y)
    above, below = dl.layer_products(layers)
    return [float(np.linalg.norm(np.linalg.inv(a @ W) @ E0 @ np.linalg.inv(b), 2) / len(layers))
            for a, W, b in zip(above, layers, below)]


def lag_band(cfg, lr: float, depth: int, moves, times, window: tuple[int, int]) -> float:
    """Half-width of |online rate at depth L − linearised recursion rate| without the floating-point floor (module
    docstring): SAFETY × Σ_s W_s · 2ημ ε(s)/(1 − ημ) over the window's steps, 0 at depth 1."""
    if depth == 1:
        return 0.0
    beta, dim, batch = float(cfg["decay"]), int(cfg["dim"]), int(cfg["batch"])
    mu = (1.0 + np.sqrt(dim / batch)) ** 2
    start, stop = window
    lam = np.array([beta ** s + (1 - beta) * np.sum(beta ** (s - np.arange(1, s + 1)) * (1 - lr) ** np.arange(1, s + 1))
                    for s in range(start, stop)])
    per_step = 2 * lr * mu / (1 - lr * mu) * 2 * sum(moves) * lam
    return float(SAFETY * step_weights(times, start, stop) @ per_step)


def minibatch_allowance(cfg, lr: float) -> dict:
    """The three mini-batch terms of the online rate's shift from 2 log(1 − η) and their sum (module docstring)."""
    beta, dim, batch, n = float(cfg["decay"]), int(cfg["dim"]), int(cfg["batch"]), int(cfg["n"])
    fpc = (n - batch) / (n - 1)
    n_eff = batch * (1 + beta) / ((1 - beta) * fpc)
    terms = {"second_moment": lr ** 2 * (dim + 1) * fpc / (batch * (1 - lr) ** 2),
             "own_batch_in_ema": 2 * lr / (1 - lr) * (1 - beta) * (dim + 1) * fpc / batch,
             "jensen": 2 * lr / (1 - lr) * (dim + 1) / (n_eff - dim - 1)}
    return {**terms, "total": float(sum(terms.values()))}


__all__ = ["CURVE_FLOOR", "CURVE_TOL", "FP_FLOOR", "K_SIGMA", "SAFETY", "fp_slope_floor", "full_band", "lag_band",
           "layer_moves", "minibatch_allowance", "step_weights"]
