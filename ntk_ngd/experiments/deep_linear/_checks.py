"""The deep_linear figure's checks: each claim of the package docstring, measured beside its theory."""
from __future__ import annotations

import math

import numpy as np

from .._base import check_below, check_range
from ._constants import (COEF_SPREAD, DENSE_TOL, DRIFT, GD_EXACT_TOL, GD_RATE_TOL, GD_SLOPE_RANGE, LINEAR_TOL,
                         ORDER_RANGE, RATIO_COEF)


def _fit_slope(x, y):
    return float(np.polyfit(np.log10(x), np.log10(y), 1)[0])


def evaluate(cfg, depths, conds, lr, exact, gd, dense_rows):
    """(list of Check, stats dict) from the runs keyed by (depth, cond) and the dense records."""
    checks, stats = [], {}
    checks += _exact_checks(cfg, depths, conds, lr, exact, stats)
    checks += _gd_checks(depths, conds, gd, stats)
    checks += _dense_checks(dense_rows, stats)
    return checks, stats


def _exact_checks(cfg, depths, conds, lr, exact, stats):
    """Exact NG: per-step ratio (1 − η)² + O(η²), shared W-trajectory, order 2 in η, flat in cond."""
    checks = []
    target = (1 - lr) ** 2
    for depth in depths:
        worst = max(exact[(depth, c)]["max_deviation"] for c in conds)
        checks.append(check_below(
            f"exact NG, depth {depth}: max over cond {min(conds):g}..{max(conds):g} and {cfg['steps']} steps of "
            f"|ρ_t − (1−η)²|, ρ_t the per-step excess-loss ratio, η = {lr:g}, (1−η)² = {target:g}",
            worst, RATIO_COEF * lr ** 2, theory=0.0))
    stats["ng_max_deviation"] = max(r["max_deviation"] for r in exact.values())
    if float(cfg["noise"]) == 0 and len(conds) > 1:
        # same W_0 and (noise-free) the same W* for every cond: exact NG solves A(Δ) = E, which does
        # not involve Σ_x (derivation step 5, reachable case), so the whole W-trajectory is shared
        spread = 0.0
        for depth in depths:
            ref = exact[(depth, conds[0])]["maps"]
            for c in conds[1:]:
                diff = np.linalg.norm(exact[(depth, c)]["maps"] - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
                spread = max(spread, float(diff.max()))
        stats["ng_trajectory_spread"] = spread
        checks.append(check_below(
            f"exact NG: the end-to-end trajectory W_t is the same for every cond (same W_0, W*): max_t,cond "
            f"||W_t(cond) − W_t(cond={conds[0]:g})|| / ||W_t||", spread, DENSE_TOL, theory=0.0))
    if 1 in depths:
        checks.append(check_below(
            "exact NG, depth 1 (linear in θ: the first-order step is exact): max |ρ_t − (1−η)²|",
            max(exact[(1, c)]["max_deviation"] for c in conds), LINEAR_TOL, theory=0.0))
    deep = [r for r in exact.values() if r["depth"] > 1]
    if deep:
        f = float(cfg["order_factor"])
        orders = [math.log(r["first_deviation"] / r["first_deviation_small_lr"]) / math.log(1 / f) for r in deep]
        for r, p in zip(deep, orders):
            r["order"] = p
        worst_order = max(orders, key=lambda p: abs(p - 2))
        stats["orders"] = orders
        checks.append(check_range(
            f"exact NG, depth ≥ 2: exponent p of the first-step |ρ − (1−η)²| ∝ η^p (η = {lr:g} vs {lr * f:g}), "
            "worst over depths × conds", worst_order, *ORDER_RANGE, theory=2.0))
        spreads = []
        for depth in depths:
            if depth == 1:
                continue
            coef = [exact[(depth, c)]["max_deviation"] / lr ** 2 for c in conds]
            spreads.append(max(coef) / min(coef))
        stats["coef_spread"] = spreads
        checks.append(check_below(
            f"exact NG: max/min over cond {min(conds):g}..{max(conds):g} of the O(η²) coefficient "
            "max|ρ − (1−η)²|/η², worst depth (curvature-independent; GD's rate varies ∝ cond)",
            max(spreads), COEF_SPREAD, theory=1.0))
    return checks


def _gd_checks(depths, conds, gd, stats):
    """GD: late gap 1 − (1 − ηλ_min)², λ_min cross-check, depth-1 closed form, slope −1 vs cond."""
    checks = []
    asymptotic = [r for r in gd.values() if r["asymptotic"]]
    stats["gd_asymptotic_runs"] = len(asymptotic)
    checks.append(check_below(
        f"GD late per-step gap 1−ρ vs 1 − (1 − η λ_min)², λ_min the smallest non-zero eigenvalue of Θ/N at the "
        f"final weights: max rel. error over the {len(asymptotic)}/{len(gd)} runs in the asymptotic regime (slowest mode "
        f"dominates, ηλ_max ≤ 1, gap drift ≤ {DRIFT:g})",
        max((r["rel_error"] for r in asymptotic), default=float("nan")), GD_RATE_TOL, theory=0.0))
    stats["lambda_min_consistency"] = max(abs(r["lambda_min"] - r["lambda_min_operator"]) / r["lambda_min_operator"]
                                          for r in gd.values())
    checks.append(check_below(
        "λ_min of Θ/N (N·C Gram) vs λ_min of 𝒦 = BBᵀ (C·D operator, derivation step 5) at the final GD weights: "
        "max rel. difference (the non-zero spectra of JJᵀ/N and JᵀJ/N coincide)",
        stats["lambda_min_consistency"], 1e-6))
    if 1 in depths:
        checks.append(check_below(
            "GD depth 1: measured excess loss vs exact ½tr(E_t Σ_x E_tᵀ), E_t = E_0(I − ηΣ_x)^t: max rel. error",
            max(gd[(1, c)]["exact_rel_error"] for c in conds), GD_EXACT_TOL, theory=0.0))
    slopes = {}
    for depth in depths:
        pts = [(r["cond"], r["late_gap"]) for r in asymptotic if r["depth"] == depth and r["cond"] >= 100]
        if len(pts) >= 2:
            slopes[depth] = _fit_slope(*zip(*pts))
    stats["gd_slopes"] = slopes
    stats["gd_slope_worst"] = max(slopes.values(), key=lambda s: abs(s + 1)) if slopes else float("nan")
    checks.append(check_range(
        "GD: fitted log-log slope of the late per-step gap 1−ρ vs cond (cond ≥ 100, asymptotic runs), worst depth",
        stats["gd_slope_worst"], *GD_SLOPE_RANGE, theory=-1.0))
    return checks


def _dense_checks(dense_rows, stats):
    """Closed forms vs the dense pinv, and the norm of the per-layer form vs Moore–Penrose."""
    checks = []
    stats["dense_end_to_end_max"] = max(r["end_to_end_error"] for r in dense_rows)
    stats["dense_per_layer_max"] = max(r["per_layer_error"] for r in dense_rows)
    stats["paper_end_to_end_max"] = max(r["paper_end_to_end_error"] for r in dense_rows)
    deep_rows = [r for r in dense_rows if r["depth"] > 1]
    stats["norm_ratio_min"] = min((r["norm_ratio"] for r in deep_rows), default=1.0)
    stats["norm_ratio_max"] = max((r["norm_ratio"] for r in deep_rows), default=1.0)
    n_rows = len(dense_rows)
    checks += [
        check_below(f"closed-form Moore–Penrose NG vs dense pinv of the explicit Fisher: max rel. error of the "
                    f"end-to-end change ΔW over {n_rows} networks (C = 1 and 2, initial and trained weights)",
                    stats["dense_end_to_end_max"], DENSE_TOL),
        check_below("closed-form Moore–Penrose NG vs dense pinv: max rel. error of the per-layer update "
                    "(the minimum-norm solution is unique)", stats["dense_per_layer_max"], DENSE_TOL),
        check_below("per-layer form (block-diagonal/L) vs dense Moore–Penrose: max rel. error of ΔW "
                    "(every width ≥ max(C, D): both are natural gradients)", stats["paper_end_to_end_max"], DENSE_TOL),
    ]
    if deep_rows:
        checks.append(check_range(
            "||Δ_per-layer/L|| / ||Δ_Moore–Penrose||, min over depth ≥ 2 (MP is the minimum-norm natural "
            "gradient; the per-layer form is a different generalised inverse)",
            stats["norm_ratio_min"], 1.0, float("inf"), theory="≥ 1"))
    shallow = [r for r in dense_rows if r["depth"] == 1]
    if shallow:
        checks.append(check_below(
            "depth 1: | ||Δ_per-layer|| / ||Δ_MP,dense|| − 1 | (one layer: F = I⊗Σ_x is invertible, one natural "
            "gradient; tolerance = the dense reference's accuracy)",
            max(abs(r["norm_ratio"] - 1) for r in shallow), DENSE_TOL, theory=0.0))
    return checks


__all__ = ["evaluate"]
