"""The unit_wise figure's checks: each claim of the package docstring beside its theory, with the error model
that fixes its tolerance and a negative control run through the same comparison."""
from __future__ import annotations

import numpy as np

from .._base import check_below, check_range, check_slope, control_below, control_range, identity
from ._measure import _predicted_deviation

SLOPE = -0.5
#: 3 SE of the judged slope must resolve −1/2 from −1 (half their gap)
RESOLUTION = 0.25
#: floating point: each unit block's projector comes from an SVD, error ~ κ(A_j)·eps with κ ≤ 1e4 here
ERF_TOL = 1e-8
GRAM_FORM_TOL = 1e-10
FP_MODEL = "floating point: kappa*eps of the unit blocks' SVD projectors, kappa <= 1e4: tolerance {:g}"
#: α per hidden unit at the largest width vs the computed limit: k binomial standard errors
K_BINOMIAL = 4.0
#: arc-cosine prediction ratio: k standard errors of the mean over the runs
K_SE = 4.0


def _split(n_seeds):
    """(calibration seeds, judged seeds): the first half calibrates, the second half is judged."""
    half = n_seeds // 2
    return list(range(half)), list(range(half, n_seeds))


def evaluate(runs, predictions, limits, config) -> list:
    widths, depths = [int(w) for w in config["widths"]], [int(d) for d in config["depths"]]
    acts = list(config.get("activations", ["relu", "erf"]))
    cal, judged = _split(int(config["seeds"]))
    sel = lambda act, depth: [r for r in runs if r["activation"] == act and r["depth"] == depth]  # noqa: E731
    checks = []
    if "relu" in acts:
        for depth in depths:
            rows = sel("relu", depth)
            logdev = np.array([[np.log(r["deviation"]) for r in rows if r["width"] == w] for w in widths])
            checks.append(check_slope(
                f"ReLU depth {depth}: log-log slope of the deviation ||K - alpha I||/||alpha I|| vs width M "
                f"({widths[0]}..{widths[-1]}), mean of the judged seeds", widths, logdev[:, cal], logdev[:, judged],
                SLOPE, resolution=RESOLUTION, seeds=(cal, judged), what="log deviation")
                .about("ReLU deviation ~ M^-1/2"))
        for depth in depths:
            checks.append(_active_fraction(sel("relu", depth), limits, depth, widths[-1], int(config["seeds"])))
        for depth in depths:
            checks.append(_arc_cosine(sel("relu", depth), predictions, depth))
    if "erf" in acts:
        erf, relu = [r for r in runs if r["activation"] == "erf"], [r for r in runs if r["activation"] == "relu"]
        checks.append(check_below(
            "erf: max deviation ||K - alpha I||/||alpha I|| (delta never 0: exactly isotropic)",
            max(r["deviation"] for r in erf), ERF_TOL, error_model=FP_MODEL.format(ERF_TOL),
            controls=[control_below("the ReLU runs (some delta = 0)", min(r["deviation"] for r in relu), ERF_TOL)]
            if relu else ()).about("erf unit-wise exactly isotropic"))
        rel = lambda rs: max(abs(r["alpha"] - (r["sum_width"] + 1)) / (r["sum_width"] + 1) for r in rs)  # noqa: E731
        checks.append(check_below(
            "erf: max |alpha - (sum_l M_l + 1)| / (sum_l M_l + 1)", rel(erf), ERF_TOL,
            error_model=FP_MODEL.format(ERF_TOL),
            controls=[control_below("the ReLU runs", rel(relu), ERF_TOL)] if relu else ())
            .about("erf unit-wise exactly isotropic"))
    checks.append(check_below(
        "max |K_unitwise - (diag(#units with delta != 0 at x_n) + I)| / alpha over all runs (kernel from per-unit SVD "
        "projectors, counts from layer_kernels deltas)", max(r["gram_form_error"] for r in runs), GRAM_FORM_TOL,
        error_model=FP_MODEL.format(GRAM_FORM_TOL),
        controls=[control_below("the kernel against the counts of the next seed's run",
                                max(r["gram_form_error_other_seed"] for r in runs), GRAM_FORM_TOL)])
        .about("Gram form = active-unit count"))
    checks.append(identity(check_below(
        "runs with a layer-input Gram K^H_l of rank < N (claim's premise; counted with the solves' cut-off)",
        sum(not r["full_rank_inputs"] for r in runs), 0)).about("premise"))
    return checks


def _active_fraction(rows, limits, depth, width, n_seeds):
    """α/ΣM at the largest width (mean over seeds) vs the computed infinite-width limit (mean over the seeds'
    inputs). Binomial model: each hidden unit is active at x_n with probability p ≤ 1, so the seed mean of the
    per-unit fraction has SE ≤ √(p(1−p)/(ΣM·S)) ≤ 1/(2√(ΣM·S)) (samples within a seed fully correlated, the
    worst case); tolerance K_BINOMIAL of that. Control: the erf network's computed limit (p = 1)."""
    top = [r for r in rows if r["width"] == width]
    measured = float(np.mean([(r["alpha"] - 1.0) / r["sum_width"] for r in top]))
    limit = float(np.mean(limits[("relu", depth)]))
    tol = K_BINOMIAL * 0.5 / np.sqrt(top[0]["sum_width"] * n_seeds)
    other = limits.get(("erf", depth))
    controls = [control_range("against the erf network's computed limit", measured,
                              float(np.mean(other)) - tol, float(np.mean(other)) + tol)] if other else ()
    return check_range(
        f"ReLU depth {depth}: (alpha - 1)/sum_l M_l at M = {width} (seed mean) vs the computed infinite-width limit "
        "(Gauss-Hermite active fraction at the NNGP variances)", measured, limit - tol, limit + tol, limit,
        error_model=f"Monte Carlo (binomial): {K_BINOMIAL:g} x 1/(2 sqrt(sum M x seeds))",
        controls=controls).about("active fraction -> computed limit")


def _arc_cosine(rows, predictions, depth):
    """Mean over (width, seed) runs of deviation²/prediction² vs 1, within K_SE standard errors of the mean
    (each ratio a weighted χ² with ≤ N − 1 degrees of freedom; SE from the runs themselves). Control: the same
    ratio against the prediction for a quarter of the width (a factor-4 error in the predicted variance; the
    band resolves a factor ~2 at the quick profile, 48 runs, but not at the tiny one)."""
    per_run = np.array([r["deviation"] ** 2 / predictions[(depth, r["width"])]["per_seed"][r["seed"]] ** 2
                        for r in rows])
    wrong = np.array([r["deviation"] ** 2 / _at_width(predictions, depth, r, 0.25) ** 2 for r in rows])
    mean, se = float(per_run.mean()), float(per_run.std(ddof=1) / np.sqrt(per_run.size))
    lo, hi = 1 - K_SE * se, 1 + K_SE * se
    return check_range(
        f"ReLU depth {depth}: mean of measured deviation^2 / arc-cosine prediction over {per_run.size} (width, seed) "
        "runs", mean, lo, hi, 1.0, error_model=f"Monte Carlo: {K_SE:g} SE of the mean over the runs",
        controls=[control_range("against the prediction for a quarter of the width", float(wrong.mean()), lo, hi)]) \
        .about("arc-cosine prediction of the ReLU deviation")


def _at_width(predictions, depth, r, factor):
    """The arc-cosine prediction of run ``r`` evaluated at ``factor`` times its width."""
    p = predictions[(depth, r["width"])]
    return _predicted_deviation(p["angle_terms"][r["seed"]], [r["width"] * factor] * (depth - 1), p["n"])


__all__ = ["evaluate"]
