"""Figure `lazy_rich` (issue 22 item 4): where finite-width training leaves its linearisation — the lazy/rich map
over width M × step η for every registered method with an infinite-width limit.

Measured (:mod:`._measure`): D(M, η) = max_{1≤t≤k} ||f_M(t) − f_lin,M(t)||_F / ||Y||_F between the centred network
trained in parameter space (:func:`ntk_ngd.training.train`) and its linearisation at θ₀ (:func:`ntk_ngd.dynamics.
simulate` with the finite-width kernel at θ₀), at η = c·η₁, η₁ the method's step rule on its infinite-width kernel
(1/α where the theory predicts Θ_G = α·I; :func:`.._methods.step_size`), c the "lr multiplier". The 10 % contour is
M*(c), the width where D falls through 0.1 (:func:`._measure.log_crossing`).

Rows, registered before any full run (thresholds from the error models below, never from the results):

1. *Lazy slope* (family ``lazy slope at the step rule``; every method with an infinite-width limit): the log-log
   slope of D(M) at c = 1 over the widths ≥ ``slope_min_width`` is −1/2 (Karakida & Osawa 2020; Lee et al. 2019:
   sup_t ||f_t − f_lin,t|| = O(M^{-1/2}); tight for ReLU, whose units crossing 0 during a step move the kernel
   coherently by O(M^{-1/2}); THEORY.md claim 8). Error model and rule are width_scaling's (:func:`.._base.
   check_slope`): σ of log D pooled from calibration seeds, SE = σ/√(J·Sxx) on the judged seeds (disjoint), band
   −1/2 ± 3 SE, judged only where 3 SE ≤ 1/4 (else ``unresolved``); a run that diverged is a ``fails`` row.
   Control (``broken_condition``): exact NGD trained with a smooth activation (erf) at c = 1 through the same
   band. Its kernel is α·I at every width and erf has no kink, so the linearisation error is the kernel's motion
   of a smooth network, O(M^{-1}) (Huang & Yau 2020, Dyer & Gur-Ari 2020; THEORY.md claim 8: exact with erf
   reaches M^{-1}); a band that accepted it could not tell M^{-1/2} from M^{-1}. (Not a step past the stability
   edge: there both runs diverge and the "slope" is NaN, a control that fails without measuring anything.)
2. *Isotropic contour* (family ``isotropic methods share exact NGD's lazy contour``): for every method the theory
   predicts isotropic at infinite width (``Prediction.isotropic``; read from the registry, not listed),
   max_c |log M*_method(c) − log M*_exact(c)| ≤ 3·SE, SE = σ*·√(2/J) the standard error of the difference of two
   judged-seed contours (J judged seeds; σ* the standard deviation of one seed's log M*, pooled over the
   (method, c) cells of the calibration seeds where every calibration seed crosses inside the width grid; √2:
   the two errors taken independent, conservative since the methods share their seeds). A multiplier where one
   contour lies beyond the grid enters with the lower bound from the grid edge (:func:`._measure.
   contour_distance`), one where both lie beyond the same edge does not enter. Control (``other_method``): gd's
   contour (Θ/N, not isotropic; :func:`.._methods.control_method`) through the same comparison. Methods predicted
   not isotropic get the same number as an ``unpredicted`` row. ``unresolved`` where σ* has no cell, or no
   multiplier entered the row's or the control's distance (a control with nothing to compare fails vacuously).

A resolved number against a claim is a ``fails`` row with finding ``finding-lazy-rich`` (docs/THEORY.md).
Deviations from the papers: synthetic teacher-student data (N ≤ 16 points), depth 2 (one hidden layer), widths ≤ 4096
(stated in the title).
"""
from __future__ import annotations

import numpy as np

from ... import datasets, plotting
from .._base import (Check, Coverage, ExperimentResult, SlopeControl, check_below, check_slope, control_below,
                     infinite_width_reason, progress, unpredicted, unresolved)
from .._methods import control_method
from ..width_scaling import K_SE, RESOLUTION
from ._measure import contour_distance, log_contour, log_deviation_grid, pooled_contour_sigma, rule_step
from ._plot import plot

PROFILES = {
    "tiny": {"widths": [16, 64, 256], "multipliers": [0.5, 1.0, 2.0], "slope_min_width": 16, "n": 8, "in_dim": 8,
             "depth": 2, "steps": 10, "calibration_seeds": [0, 1], "seeds": [2, 3], "methods": ["gd", "exact", "kfac"]},
    # k = 10 as the full profile: at k = 4 exact's and gd's runs at c = 2 (both at their stability edge) have not
    # yet separated; 4 judged seeds over M = 64..4096 give 3 SE ~ 0.2 at sigma(log D) ~ 0.3
    "quick": {"widths": [16, 64, 256, 1024, 4096], "multipliers": [0.25, 1.0, 2.0], "slope_min_width": 64, "n": 16,
              "in_dim": 16, "depth": 2, "steps": 10, "calibration_seeds": [0, 1], "seeds": [10, 11, 12, 13],
              "methods": ["gd", "exact", "block_diag", "kfac"]},
    "full": {"widths": [16, 32, 64, 128, 256, 512, 1024, 2048, 4096], "multipliers": [0.1, 0.25, 0.5, 1.0, 1.5, 2.0],
             "slope_min_width": 64, "n": 16, "in_dim": 16, "depth": 2, "steps": 10, "calibration_seeds": [0, 1, 2, 3],
             "seeds": list(range(10, 16)), "methods": None},
}

FAMILY_SLOPE = "lazy slope at the step rule"
FAMILY_CONTOUR = "isotropic methods share exact NGD's lazy contour"
FINDING = "finding-lazy-rich"
THEORY_SLOPE = -0.5
#: band of row 2 in standard errors of the contour difference
K_CONTOUR = 3.0
#: anchors of the grid and where they come from (stored in the JSON)
ANCHORS = {"deviation": "sup_t ||f_t - f_lin,t|| = O(M^-1/2): Lee et al. 2019 (Thm 2.1), Karakida & Osawa 2020",
           "steps": "k = 10 full-batch steps of the full profile (KO20 study the first steps of NGD)",
           "level": "10 % of ||Y||: the issue's lazy/rich boundary",
           "data": "synthetic teacher-student regression (datasets.synthetic), not the papers' MNIST/CIFAR"}


def _validate(config):
    cal, seeds = list(config["calibration_seeds"]), list(config["seeds"])
    if set(cal) & set(seeds):
        raise ValueError("lazy_rich: calibration and judged seeds must be disjoint; change 'seeds'")
    if 1.0 not in [float(m) for m in config["multipliers"]]:
        raise ValueError("lazy_rich: 'multipliers' must contain 1.0 (the step rule itself, row 1)")
    if sum(w >= config["slope_min_width"] for w in config["widths"]) < 2:
        raise ValueError("lazy_rich: need at least two widths >= 'slope_min_width' for the slope")
    if list(config["widths"]) != sorted(config["widths"]):
        raise ValueError("lazy_rich: 'widths' must be increasing")


def _coverage(config) -> Coverage:
    chosen = config.get("methods")
    cov = Coverage.of(FAMILY_SLOPE, infinite_width_reason)
    for spec in cov.applies():
        if chosen is not None and spec.name not in chosen:
            cov = cov.skip(spec.name, "not in this profile's subset (the full profile runs every method)")
    return cov


def run(config: dict, out_dir) -> ExperimentResult:
    _validate(config)
    X, Y = datasets.synthetic(config["n"], config["in_dim"], seed=0)
    cal, seeds = list(config["calibration_seeds"]), list(config["seeds"])
    mults = [float(m) for m in config["multipliers"]]
    cov = _coverage(config)
    specs = cov.applies()
    if "exact" not in [s.name for s in specs] or control_method("exact") not in [s.name for s in specs]:
        raise ValueError("lazy_rich: 'methods' must include exact (the reference contour) and gd (its control)")
    runs = {}
    for spec in progress(specs, desc="lazy_rich"):
        lr, rule, pred = rule_step(spec, config, X, Y)
        runs[spec.name] = {"lr": lr, "rule": rule, "isotropic": bool(pred.isotropic), "prediction": pred.summary(),
                           "log_deviation": log_deviation_grid(spec, config, X, Y, lr, mults, cal + seeds)}
    exact = next(s for s in specs if s.name == "exact")
    lr_e, _, _ = rule_step(exact, config, X, Y, "erf")
    control_erf = log_deviation_grid(exact, config, X, Y, lr_e, [1.0], seeds, "erf")[:, 0, :]
    checks = _slope_rows(runs, control_erf, config, len(cal))
    contour_checks, contours = _contour_rows(runs, config, len(cal))
    checks += contour_checks
    data = {"widths": config["widths"], "multipliers": mults, "calibration_seeds": cal, "seeds": seeds,
            "anchors": ANCHORS, "control_exact_erf_log_deviation": control_erf, "contours": contours,
            "methods": {m: dict(r, log_deviation=r["log_deviation"]) for m, r in runs.items()}}
    fig = plot(runs, contours, checks, config)
    png, js = plotting.save(fig, "lazy_rich", data, out_dir, config=config)
    cov_contour = Coverage.of_checks(FAMILY_CONTOUR, checks, _contour_reasons(cov, runs))
    return ExperimentResult("lazy_rich", png, js, checks, _summary(checks), 0.0, coverage=(cov, cov_contour))


def _needs(config) -> str:
    """What would resolve an unresolved slope row at this profile."""
    if len(config["seeds"]) < 6:
        return "the full profile (6 judged seeds over M = 64..4096)"
    return "more judged seeds, or widths beyond 4096 (D >> 1 below M = 256 for kpsvd)"


def _slope_rows(runs, control_erf, config, n_cal) -> list[Check]:
    """Row 1 per method (module docstring)."""
    widths = np.asarray(config["widths"], float)
    keep = widths >= config["slope_min_width"]
    j = [float(m) for m in config["multipliers"]].index(1.0)
    control = SlopeControl("exact NGD with erf at c = 1 (smooth, kernel alpha*I at every width: predicted M^-1)",
                           "broken_condition", log_judged=control_erf[keep])
    checks = []
    for name, r in runs.items():
        logd = r["log_deviation"][keep, j, :]
        check = check_slope(f"{name}: log-log slope of D(M) = max_t ||f_M(t) - f_lin,M(t)||/||Y|| at eta = {r['rule']} "
                            f"over M = {[int(w) for w in widths[keep]]} (mean of {logd.shape[1] - n_cal} judged seeds)",
                            widths[keep], logd[:, :n_cal], logd[:, n_cal:], THEORY_SLOPE, control=control, k_se=K_SE,
                            resolution=RESOLUTION, seeds=(config["calibration_seeds"], config["seeds"]),
                            finding=FINDING, needs=_needs(config))
        r["slope"], r["slope_status"] = check.measured, check.status
        r["slope_se"] = (check.calibration or {}).get("slope_se", float("nan"))
        checks.append(check.about(FAMILY_SLOPE, name))
    return checks


def _contour_rows(runs, config, n_cal) -> tuple[list[Check], dict]:
    """Row 2 per method other than exact (module docstring); returns the rows and the contours' numbers."""
    widths = np.asarray(config["widths"], float)
    lo, hi = float(np.log(widths[0])), float(np.log(widths[-1]))
    judged = {m: log_contour(widths, r["log_deviation"][:, :, n_cal:]) for m, r in runs.items()}
    iso = [m for m, r in runs.items() if r["isotropic"]]
    sigma, cells = pooled_contour_sigma(widths, [runs[m]["log_deviation"][:, :, :n_cal] for m in iso])
    J = len(config["seeds"])
    se = sigma * np.sqrt(2.0 / J)
    band = K_CONTOUR * se
    calibration = {"sigma_log_Mstar": sigma, "cells": cells, "se_difference": se, "k_se": K_CONTOUR,
                   "calibration_seeds": list(config["calibration_seeds"]), "judged_seeds": list(config["seeds"])}
    ctrl_name = control_method("exact")
    ctrl_dist, ctrl_n = contour_distance(judged[ctrl_name], judged["exact"], lo, hi)
    checks = []
    for m, r in runs.items():
        if m == "exact":
            continue
        dist, n = contour_distance(judged[m], judged["exact"], lo, hi)
        claim = (f"{m}: max over lr multipliers of |log M*_{m} - log M*_exact| (10 % contour of the judged-seed mean "
                 f"D; {n} of {len(judged[m])} multipliers comparable)")
        checks.append(_contour_row(claim, m, r, dist, n, sigma, band, calibration, ctrl_name, ctrl_dist, ctrl_n))
    contours = {"log_Mstar_judged": judged, "Mstar_judged": {m: [_label(v, widths) for v in c] for m, c in judged.items()},
                "sigma_log_Mstar": sigma, "band": band, "control": ctrl_name, "control_distance": ctrl_dist}
    return checks, contours


def _label(log_m: float, widths):
    """M* as a number, or "< min width" / "> max width" where the contour lies beyond the grid."""
    if np.isfinite(log_m):
        return float(np.exp(log_m))
    return f"< {widths[0]:g}" if log_m < 0 else f"> {widths[-1]:g}"


def _contour_row(claim, m, r, dist, n, sigma, band, calibration, ctrl_name, ctrl_dist, ctrl_n) -> Check:
    if not r["isotropic"]:
        return unpredicted(claim, dist, f"theory silent: not predicted isotropic ({r['prediction']})").about(
            FAMILY_CONTOUR, m)
    if not np.isfinite(sigma) or n == 0 or ctrl_n == 0:
        why = ("no calibration cell where every seed crosses inside the grid" if not np.isfinite(sigma) else
               "no multiplier where either contour lies inside the grid" if n == 0 else
               f"the control {ctrl_name} has no multiplier comparable with exact (its failure would be vacuous)")
        return unresolved(claim, dist, 0.0, f"{why}; more calibration seeds or a wider width grid",
                          calibration=calibration).about(FAMILY_CONTOUR, m)
    control = control_below(f"{ctrl_name}'s contour (not isotropic) against exact's, same band ({ctrl_n} multipliers "
                            "comparable)", ctrl_dist, band, kind="other_method")
    return check_below(claim, dist, band, theory=0.0, finding=FINDING, calibration=calibration, controls=[control],
                       error_model=f"Monte Carlo: {K_CONTOUR:g} SE of a contour difference, SE = sigma*sqrt(2/J), "
                                   f"sigma of one seed's log M* from calibration seeds").about(FAMILY_CONTOUR, m)


def _contour_reasons(cov, runs) -> dict:
    reasons = dict(cov.skipped)
    reasons["exact"] = "the reference: every isotropic method's contour is compared with exact NGD's"
    return reasons


def _summary(checks) -> str:
    out = []
    for family in (FAMILY_SLOPE, FAMILY_CONTOUR):
        rows = [c for c in checks if c.family == family]
        judged = [c for c in rows if c.status in ("holds", "fails")]
        fails = [c.methods[0] for c in judged if c.status == "fails"]
        out.append(f"{family}: {len(judged) - len(fails)}/{len(judged)} hold"
                   + (f" (fails: {', '.join(fails)})" if fails else "")
                   + f", {sum(c.status == 'unresolved' for c in rows)} unresolved")
    return "; ".join(out)


__all__ = ["PROFILES", "run"]
