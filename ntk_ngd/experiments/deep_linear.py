r"""Figure `deep_linear`: exact natural gradient in deep linear networks converges at a rate that
does not depend on the curvature; gradient descent does (THEORY.md claim 9, issue 6).

Network f(x) = W_L⋯W_1 x, MSE loss, inputs with a prescribed covariance Σ_x = XᵀX/N of condition
number cond ∈ {1, 1e2, 1e4, 1e6} (:func:`ntk_ngd.deep_linear.make_regression`: eigenvalues
geometrically spaced from 1 to 1/cond, realizable targets by default). Trained with
:func:`ntk_ngd.deep_linear.train` (exact Moore–Penrose NG in closed form) and plain GD.

Theory the figure draws and checks (each derived independently of the code that trains):

* Exact NG: W_{t+1} − W* = (1 − η)(W_t − W*) + O(η²), so the excess loss obeys
  Loss_t − Loss* = (1 − η)^{2t}(Loss_0 − Loss*) to first order, and the per-step ratio
  ρ_t = (Loss_{t+1} − Loss*)/(Loss_t − Loss*) is (1 − η)² + O(η²) for every depth and every Σ_x.
  Loss* comes from ``numpy.linalg.lstsq``. Tolerance: |ρ_t − (1 − η)²| ≤ 5η². The O(η²) claim is
  also checked as an order: the first-step deviation at η and at η/10 must scale with exponent
  2 ± 0.2. Depth 1 is linear in θ, so there the first-order step is exact (ρ = (1 − η)² to 1e-10).
  Stronger: when W* is reachable (every hidden width ≥ C, or every one ≥ D) the Moore–Penrose
  update solves A(Δ) = E, which does not involve Σ_x, so from the same W_0 and W* (noise-free
  targets: W* = teacher for every cond) the whole W-trajectory is the same for every
  conditioning; only the loss, ½tr(EΣ_xEᵀ), differs.
* Gradient descent, step η_GD = 0.5/λ_max(Θ_0/N) (Θ = JJᵀ the NTK, from the closed-form
  per-layer blocks; its λ_min is cross-checked against the C·D-sized operator 𝒦 = BBᵀ), halved
  until η λ_max ≤ 1 also at the final weights (the layers grow while fitting; deep nets otherwise
  drift to the edge of stability, η λ_max → 2, where the λ_max mode would set the late rate): r_{t+1} = (I − η Θ/N) r_t to first order, so
  once the slowest mode dominates ρ_t → (1 − η λ_min)², λ_min the smallest *non-zero* eigenvalue
  of Θ/N at the final weights (the non-zero spectrum of Θ/N is that of the Fisher JᵀJ/N).
  λ_min ∝ 1/cond, hence the late per-step gap 1 − ρ ∝ 1/cond (fitted log-log slope −1). The
  number of GD steps is chosen from the initial spectrum so the second-slowest mode dies out
  (capped by ``gd_max_steps``); a run counts as asymptotic when (λ_max/λ_1)·((1−ηλ_2)/(1−ηλ_1))^{2t}
  ≤ 1e-4 at the final weights and its measured gap drifted by ≤ 5 % over the last fifth of the run
  (no oscillation or plateau); only those enter the rate check
  (the others are drawn open). Depth 1 GD also has an exact closed form, E_t = E_0(I − ηΣ_x)^t.
* Closed form vs dense reference: :func:`~ntk_ngd.deep_linear.natural_gradient` (Moore–Penrose,
  closed form) against :func:`~ntk_ngd.deep_linear.dense_natural_gradient` (P×P pseudo-inverse of
  the explicit Fisher), at the initial and the trained weights and on a second family of
  networks with C = 2 outputs and rectangular hidden layers; the per-layer form of the paper
  (block-diagonal/L, :func:`~ntk_ngd.deep_linear.paper_natural_gradient`) changes W the same way
  when every width ≥ max(C, D) but splits it differently: its norm is ≥ the Moore–Penrose one
  (minimum norm), = at depth 1.

The ``full`` profile keeps small layer widths on purpose: nothing here depends on the width
(every claim holds at any width ≥ max(C, D)), GD needs ~√cond·log(cond) steps for the late-time
rate, and the dense reference needs P ≤ 20000; it uses N = 256 samples, more depths and conds.
"""
from __future__ import annotations

import math

import numpy as np

from .. import deep_linear as dl
from .. import plotting
from ._base import progress as _progress, ExperimentResult, check_below, check_range

PROFILES = {
    "tiny": {"depths": [1, 2], "conds": [1.0, 1e2, 1e4], "in_dim": 3, "out_dim": 1, "width": 4, "n": 12,
             "noise": 0.0, "lr": 0.1, "steps": 15, "order_factor": 0.1, "gd_max_steps": 6000,
             "gd_plot_depth": 2, "multi_out_dim": 2, "multi_widths": [5, 3, 4, 6], "seed": 0},
    "quick": {"depths": [1, 2, 3, 5], "conds": [1.0, 1e2, 1e4, 1e6], "in_dim": 3, "out_dim": 1, "width": 4,
              "n": 16, "noise": 0.0, "lr": 0.1, "steps": 60, "order_factor": 0.1, "gd_max_steps": 40000,
              "gd_plot_depth": 3, "multi_out_dim": 2, "multi_widths": [5, 3, 4, 6], "seed": 0},
    "full": {"depths": [1, 2, 3, 4, 5, 6, 8], "conds": [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6], "in_dim": 3,
             "out_dim": 1, "width": 16, "n": 256, "noise": 0.0, "lr": 0.1, "steps": 100, "order_factor": 0.1,
             "gd_max_steps": 150000, "gd_plot_depth": 3, "multi_out_dim": 2,
             "multi_widths": [5, 3, 4, 6, 8, 3, 5], "seed": 0},
}

#: |ρ_t − (1 − η)²| ≤ RATIO_COEF·η² ("within O(η²)", coefficient stated).
RATIO_COEF = 5.0
#: exponent of the first-step deviation in η, fitted from η and η·order_factor.
ORDER_RANGE = (1.8, 2.2)
#: max/min over conditionings of the O(η²) coefficient |ρ − (1 − η)²|/η² at one depth.
COEF_SPREAD = 3.0
LINEAR_TOL = 1e-10
GD_RATE_TOL = 1e-2
GD_EXACT_TOL = 1e-8
GD_SLOPE_RANGE = (-1.15, -0.85)
DENSE_TOL = 1e-8
#: a run's loss is used for ratios only while the excess is above this fraction of its start (and
#: above 1e-6·Loss*): W is O(1), so E = W − W* carries ~1e-16 absolute rounding, i.e. a relative
#: error ~1e-8 in the excess at this floor (ratios accurate to ~1e-7).
FLOOR = 1e-16
#: the depth-1 GD closed form is compared where the excess is above this fraction of its start.
EXACT_FLOOR = 1e-10
DOMINANCE = 1e-4


# ---------------------------------------------------------------- problems

def _data(cfg, cond, out_dim, salt):
    """Same seed for every cond: same rotation, samples and teacher, only Σ_x's spectrum changes."""
    seed = int(cfg["seed"]) + 1000 * salt
    X, Y = dl.make_regression(int(cfg["in_dim"]), out_dim, int(cfg["n"]), cond, seed=seed,
                              noise=float(cfg["noise"]))
    w_star = np.linalg.lstsq(X, Y, rcond=None)[0].T       # independent of deep_linear's W*
    return X, Y, w_star, dl.mse_loss(w_star, X, Y)


def _weights(cfg, depth, widths, out_dim, salt):
    return dl.random_weights(int(cfg["in_dim"]), widths, out_dim, seed=int(cfg["seed"]) + 17 * depth + salt)


def _valid(excess, loss_star):
    """Mask of steps whose excess loss is far enough above rounding to form ratios."""
    return excess > max(FLOOR * excess[0], 1e-6 * loss_star, 0.0)


def _ratios(excess, loss_star):
    ok = _valid(excess, loss_star)
    keep = ok[1:] & ok[:-1]
    return (excess[1:] / excess[:-1])[keep]


def _gradient_descent(weights, X, Y, lr, steps):
    """Plain GD W_i ← W_i − η W_{>i}ᵀ G W_{<i}ᵀ (as dl.train(method="gd") without its per-step
    validation); returns the losses at t = 0..steps and the final layers."""
    layers = [np.array(w) for w in weights]
    losses = np.empty(steps + 1)
    for t in range(steps + 1):
        W = dl.end_to_end_map(layers)
        losses[t] = dl.mse_loss(W, X, Y)
        if t == steps:
            break
        grads = dl.layer_gradients(layers, dl.end_to_end_gradient(W, X, Y))
        layers = [w - lr * g for w, g in zip(layers, grads)]
    return losses, layers


def _ntk_spectrum(weights, X, rank):
    """Non-zero eigenvalues of Θ/N (ascending; the top ``rank`` = C·D), Θ = Σ_l Θ_l from the per-layer
    blocks Θ_l = (X W_{<l}ᵀW_{<l}Xᵀ) ⊗ (W_{>l}W_{>l}ᵀ) (equal to J_lJ_lᵀ of the dense Jacobian: tests
    test_deep_linear.py / test_deep_linear_gram.py; the dense Jacobian itself costs minutes at N = 256)."""
    eig = np.linalg.eigvalsh(sum(dl.layer_ntk_blocks(weights, X)) / X.shape[0])
    return eig[-rank:]


def _gd_steps(spectrum, lr, cap):
    """Steps for the second-slowest mode to die out, from the initial spectrum (×1.5 margin)."""
    lam1, lam2, lam_max = spectrum[0], spectrum[1], spectrum[-1]
    if lam2 <= lam1 * (1 + 1e-9):
        return min(cap, 200)
    per_step = -2 * math.log((1 - lr * lam2) / (1 - lr * lam1))
    return int(min(cap, math.ceil(1.5 * math.log(1e4 * lam_max / lam1) / per_step) + 50))


# ---------------------------------------------------------------- runs

def _ngd_run(cfg, depth, cond):
    lr, steps = float(cfg["lr"]), int(cfg["steps"])
    X, Y, w_star, loss_star = _data(cfg, cond, int(cfg["out_dim"]), 0)
    w0 = _weights(cfg, depth, [int(cfg["width"])] * (depth - 1), int(cfg["out_dim"]), 0)
    run = dl.train(w0, X, Y, "ngd", lr, steps)
    excess = run.losses - loss_star
    ratios = _ratios(excess, loss_star)
    small_lr = lr * float(cfg["order_factor"])
    small = dl.train(w0, X, Y, "ngd", small_lr, 1).losses - loss_star
    first_small = abs(small[1] / small[0] - (1 - small_lr) ** 2)
    deviation = np.abs(ratios - (1 - lr) ** 2)
    return {
        "depth": depth, "cond": cond, "loss_star": loss_star, "excess": excess,
        "normalized_excess": excess / excess[0],
        "predicted_normalized": (1 - lr) ** (2 * np.arange(steps + 1)),
        "ratios": ratios, "max_deviation": float(deviation.max()),
        "first_deviation": float(deviation[0]), "first_deviation_small_lr": float(first_small),
        "small_lr": small_lr, "mean_gap": float(np.mean(1 - ratios)),
        "late_gap": float(1 - ratios[-1]),
        "X": X, "Y": Y, "w0": w0, "final": run.weights, "maps": run.maps,
    }


#: a run whose measured per-step gap still drifts by more than this (relative, over the last fifth
#: of the run) is not in the linear regime (oscillation, saddle plateau) and is left out of the
#: rate check. The λ_min of the moving weights itself drifts by up to ~2 % over long runs, which
#: the prediction tracks (it uses the final weights), hence the loose bound.
DRIFT = 5e-2


def _drift(excess, t_late):
    """|gap(t_late) − gap(t_late − k)| / gap(t_late), k = max(3, t_late/5)."""
    k = max(3, t_late // 5)
    if t_late - k < 1:
        return float("inf")
    gap = 1 - excess[t_late] / excess[t_late - 1]
    earlier = 1 - excess[t_late - k] / excess[t_late - k - 1]
    return float(abs(gap - earlier) / abs(gap))


def _gd_run(cfg, depth, cond, ng):
    """GD with η = 0.5/λ_max(Θ_0/N), halved (at most 4 times) until η λ_max ≤ 1 at the final weights:
    then every mode contracts by |1 − ηλ| ≤ 1 − ηλ_min and the slowest is the λ_min mode."""
    X, Y, w0 = ng["X"], ng["Y"], ng["w0"]
    loss_star = ng["loss_star"]
    rank = int(cfg["out_dim"]) * int(cfg["in_dim"])
    cap = int(cfg["gd_max_steps"])
    spec0 = _ntk_spectrum(w0, X, rank)
    lr = 0.5 / spec0[-1]
    for halvings in range(5):
        steps = _gd_steps(spec0, lr, cap)
        losses, final = _gradient_descent(w0, X, Y, lr, steps)
        spec = _ntk_spectrum(final, X, rank)
        if lr * spec[-1] <= 1.0:
            break
        lr *= 0.5
    excess = losses - loss_star
    valid = _valid(excess, loss_star)
    t_late = int(np.nonzero(valid)[0][-1])
    steps = len(losses) - 1
    reference = dl.train(w0, X, Y, "gd", lr, min(steps, 20)).losses     # the package's own GD
    if np.max(np.abs(reference - losses[: len(reference)]) / reference) > 1e-12:
        raise RuntimeError("the lean GD loop differs from deep_linear.train(method='gd')")
    late_ratio = excess[t_late] / excess[t_late - 1]
    lam1, lam2 = spec[0], spec[1]
    contamination = float((spec[-1] / lam1) * ((1 - lr * lam2) / (1 - lr * lam1)) ** (2 * t_late)) \
        if lam2 > lam1 * (1 + 1e-9) else 0.0
    drift = _drift(excess, t_late)
    predicted_gap = 1 - (1 - lr * lam1) ** 2
    k_eig = np.linalg.eigvalsh(dl.end_to_end_operator(final, dl.input_covariance(X)))
    sample = np.unique(np.concatenate([np.geomspace(1, steps, 28).astype(int), [t_late - 1, t_late]]))
    rec = {
        "depth": depth, "cond": cond, "lr": lr, "lr_halvings": halvings, "steps": steps, "t_late": t_late,
        # the plotted samples (28 log-spaced steps) plus the two steps that give the late ratio
        "t": sample, "normalized_excess": excess[sample] / excess[0], "excess_0": float(excess[0]),
        "late_excess": [float(excess[t_late - 1]), float(excess[t_late])],
        "late_gap": float(1 - late_ratio), "predicted_gap": float(predicted_gap),
        "lambda_min": float(lam1), "lambda_2": float(lam2), "lambda_max": float(spec[-1]),
        "lambda_min_operator": float(k_eig[0]),   # same number from the closed-form 𝒦 (cross-check)
        "contamination": contamination, "drift": drift,
        "asymptotic": bool(contamination <= DOMINANCE and drift <= DRIFT and lr * spec[-1] <= 1.0),
        "rel_error": float(abs((1 - late_ratio) - predicted_gap) / predicted_gap),
    }
    if depth == 1:   # exact: E_t = E_0 (I − ηΣ_x)^t, loss − Loss* = ½ tr(E_t Σ_x E_tᵀ)
        cov = X.T @ X / X.shape[0]
        eig, vec = np.linalg.eigh(cov)
        error0 = (dl.end_to_end_map(w0) - np.linalg.lstsq(X, Y, rcond=None)[0].T) @ vec
        t = np.arange(steps + 1)[:, None]
        theory = 0.5 * np.sum(eig * (error0 ** 2).sum(0) * (1 - lr * eig) ** (2 * t), axis=1)
        line = np.unique(np.geomspace(1, steps, 200).astype(int))
        rec["theory_t"], rec["exact_theory_normalized"] = line, theory[line] / theory[0]
        above = valid & (excess > EXACT_FLOOR * excess[0])
        rec["exact_rel_error"] = float(np.max(np.abs(excess[above] - theory[above]) / theory[above]))
    return rec


def _dense_record(label, weights, X, Y):
    grad = dl.end_to_end_gradient(dl.end_to_end_map(weights), X, Y)
    cov = dl.input_covariance(X)
    closed = dl.natural_gradient(weights, grad, cov)
    paper = dl.paper_natural_gradient(weights, grad, cov)
    dense = dl.dense_natural_gradient(weights, X, Y)
    change_dense = dl.end_to_end_change(weights, dense)

    def rel(a, b):
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    flat = lambda ds: np.concatenate([d.ravel() for d in ds])  # noqa: E731
    return {
        "net": label, "depth": len(weights), "shapes": [list(w.shape) for w in weights],
        "end_to_end_error": rel(dl.end_to_end_change(weights, closed), change_dense),
        "per_layer_error": rel(flat(closed), flat(dense)),
        "paper_end_to_end_error": rel(dl.end_to_end_change(weights, paper), change_dense),
        "norm_ratio": dl.parameter_norm(paper) / dl.parameter_norm(dense),
        "norm_paper": dl.parameter_norm(paper), "norm_moore_penrose": dl.parameter_norm(dense),
    }


# ---------------------------------------------------------------- run

def run(config: dict, out_dir) -> ExperimentResult:
    cfg = dict(config)
    depths = [int(d) for d in cfg["depths"]]
    conds = [float(c) for c in cfg["conds"]]
    lr = float(cfg["lr"])
    jobs = [(d, c) for d in depths for c in conds]
    ngd, gd, dense_rows = {}, {}, []
    for depth, cond in _progress(jobs, len(jobs), "deep_linear"):
        ng = _ngd_run(cfg, depth, cond)
        ngd[(depth, cond)] = ng
        gd[(depth, cond)] = _gd_run(cfg, depth, cond, ng)
        for label, weights in (("C=1, initial", ng["w0"]), ("C=1, after NG", ng["final"])):
            dense_rows.append({"cond": cond, **_dense_record(label, weights, ng["X"], ng["Y"])})
        mout = int(cfg["multi_out_dim"])
        Xm, Ym, _, _ = _data(cfg, cond, mout, 1)
        wm = _weights(cfg, depth, [int(w) for w in cfg["multi_widths"][: depth - 1]], mout, 1)
        dense_rows.append({"cond": cond, **_dense_record(f"C={mout}, rectangular", wm, Xm, Ym)})

    checks, stats = _checks(cfg, depths, conds, lr, ngd, gd, dense_rows)
    fig = _plot(cfg, depths, conds, lr, ngd, gd, dense_rows)
    data = {
        "ngd": [{k: v for k, v in r.items() if k not in ("X", "Y", "w0", "final", "maps")} for r in ngd.values()],
        "gd": list(gd.values()),
        "dense": dense_rows,
        "stats": stats,
        "tolerances": {"ratio": f"{RATIO_COEF:g}*lr^2 = {RATIO_COEF * lr ** 2:g}", "order": ORDER_RANGE,
                       "coef_spread": COEF_SPREAD, "gd_rate": GD_RATE_TOL, "dense": DENSE_TOL},
    }
    png, js = plotting.save(fig, "deep_linear", data, out_dir, config=cfg)
    summary = (f"exact NG: max |ρ−(1−η)²| = {stats['ng_max_deviation']:.2g} ≤ {RATIO_COEF:g}η² "
               f"over depths {depths} × cond {min(conds):g}..{max(conds):g}; GD late gap slope vs cond "
               f"{stats['gd_slope_worst']:.2f} (theory −1); closed form vs dense pinv "
               f"{stats['dense_end_to_end_max']:.1e}; per-layer/L norm ≥ MP norm (×{stats['norm_ratio_min']:.2f}"
               f"..{stats['norm_ratio_max']:.2f})")
    return ExperimentResult("deep_linear", png, js, checks, summary, 0.0)


def _fit_slope(x, y):
    return float(np.polyfit(np.log10(x), np.log10(y), 1)[0])


def _checks(cfg, depths, conds, lr, ngd, gd, dense_rows):
    checks, stats = [], {}
    target = (1 - lr) ** 2
    for depth in depths:
        worst = max(ngd[(depth, c)]["max_deviation"] for c in conds)
        checks.append(check_below(
            f"exact NG, depth {depth}: max over cond {min(conds):g}..{max(conds):g} and {cfg['steps']} steps of "
            f"|ρ_t − (1−η)²|, ρ_t the per-step excess-loss ratio, η = {lr:g}, (1−η)² = {target:g}",
            worst, RATIO_COEF * lr ** 2, theory=0.0))
    stats["ng_max_deviation"] = max(r["max_deviation"] for r in ngd.values())
    if float(cfg["noise"]) == 0 and len(conds) > 1:
        # same W_0 and (noise-free) the same W* for every cond: exact NG solves A(Δ) = E, which does
        # not involve Σ_x (derivation step 5, reachable case), so the whole W-trajectory is shared
        spread = 0.0
        for depth in depths:
            ref = ngd[(depth, conds[0])]["maps"]
            for c in conds[1:]:
                diff = np.linalg.norm(ngd[(depth, c)]["maps"] - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
                spread = max(spread, float(diff.max()))
        stats["ng_trajectory_spread"] = spread
        checks.append(check_below(
            f"exact NG: the end-to-end trajectory W_t is the same for every cond (same W_0, W*): max_t,cond "
            f"||W_t(cond) − W_t(cond={conds[0]:g})|| / ||W_t||", spread, DENSE_TOL, theory=0.0))
    if 1 in depths:
        checks.append(check_below(
            "exact NG, depth 1 (linear in θ: the first-order step is exact): max |ρ_t − (1−η)²|",
            max(ngd[(1, c)]["max_deviation"] for c in conds), LINEAR_TOL, theory=0.0))
    deep = [r for r in ngd.values() if r["depth"] > 1]
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
            coef = [ngd[(depth, c)]["max_deviation"] / lr ** 2 for c in conds]
            spreads.append(max(coef) / min(coef))
        stats["coef_spread"] = spreads
        checks.append(check_below(
            f"exact NG: max/min over cond {min(conds):g}..{max(conds):g} of the O(η²) coefficient "
            "max|ρ − (1−η)²|/η², worst depth (curvature-independent; GD's rate varies ∝ cond)",
            max(spreads), COEF_SPREAD, theory=1.0))

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
    return checks, stats


# ---------------------------------------------------------------- figure

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _cond_label(c):
    return "1" if c == 1 else f"1e{int(round(math.log10(c)))}" if c > 1 else f"{c:g}"


def _plot(cfg, depths, conds, lr, ngd, gd, dense_rows):
    from matplotlib.lines import Line2D

    fig, axes = plotting.figure(2, 3, figsize=(16, 9.2))
    cond_color = {c: plotting.COLORS[i % len(plotting.COLORS)] for i, c in enumerate(conds)}
    depth_marker = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(depths)}
    steps = int(cfg["steps"])

    # (a) exact NG loss curves
    ax = axes[0, 0]
    t = np.arange(steps + 1)
    every = max(1, steps // 10)
    k = 0
    for depth in depths:
        for cond in conds:
            r = ngd[(depth, cond)]
            ax.plot(t, r["normalized_excess"], ls="none", marker=depth_marker[depth], color=cond_color[cond],
                    mfc="none", ms=5, markevery=(k % every, every))
            k += 1
    ax.plot(t, (1 - lr) ** (2 * t), "k-", lw=1.3, zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("excess loss (Loss_t − Loss*) / (Loss_0 − Loss*)")
    ax.set_title(f"(a) exact NG, η = {lr:g}: {len(depths) * len(conds)} runs (depths × conds) collapse\n"
                 "line: theory (1−η)^(2t); markers: measured",
                 fontsize=10)

    # (b) O(η²) coefficient vs cond
    ax = axes[0, 1]
    for depth in depths:
        xs = np.array(conds) * (1.0 + 0.08 * (depths.index(depth) - (len(depths) - 1) / 2))
        ax.plot(xs, [max(ngd[(depth, c)]["max_deviation"], 1e-17) / lr ** 2 for c in conds],
                marker=depth_marker[depth], color="k", ls="-", lw=0.6, ms=6)
        small = [ngd[(depth, c)] for c in conds]
        ax.plot(xs, [max(r["first_deviation_small_lr"], 1e-17) / r["small_lr"] ** 2 for r in small],
                marker=depth_marker[depth], color=plotting.COLORS[3], ls="none", mfc="none", ms=9)
    ax.axhline(RATIO_COEF, color="k", ls=":", lw=1)
    ax.text(conds[0], RATIO_COEF * 1.6, f"tolerance {RATIO_COEF:g}η²", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 1e3)
    ax.set_xlabel("condition number of Σ_x = XᵀX/N")
    ax.set_ylabel("|ρ_t − (1−η)²| / η²  (ρ_t = per-step excess ratio)")
    ax.set_title(f"(b) exact NG deviation from (1−η)² is O(η²), flat in cond\n"
                 f"black: max over steps at η = {lr:g}; open red: first step at η = {lr * float(cfg['order_factor']):g}",
                 fontsize=10)
    ax.text(0.03, 0.5, "top: depth ≥ 2, coefficient O(1) at both η → O(η²)\nbottom: depth 1, exact (linear in θ): "
            "rounding level", transform=ax.transAxes, fontsize=8, va="center")

    # (c) GD loss curves: depth 1 with exact theory, gd_plot_depth measured only
    ax = axes[0, 2]
    plot_depth = int(cfg["gd_plot_depth"]) if int(cfg["gd_plot_depth"]) in depths else depths[-1]
    for cond in conds:
        for depth, filled in ((1, True), (plot_depth, False)):
            if depth not in depths or (depth == 1 and plot_depth == 1 and not filled):
                continue
            r = gd[(depth, cond)]
            ex, tt = r["normalized_excess"], r["t"]
            keep = ex > FLOOR
            ax.plot(tt[keep], ex[keep], ls="none", marker=depth_marker[depth], color=cond_color[cond],
                    mfc=None if filled else "none", ms=5)
            if depth == 1:
                th, keep = r["exact_theory_normalized"], r["exact_theory_normalized"] > FLOOR
                ax.plot(r["theory_t"][keep], th[keep], "-", color=cond_color[cond], lw=1.1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 3)
    ax.set_xlabel("step t (GD, η_GD = 0.5/λ_max(Θ₀/N))")
    ax.set_ylabel("excess loss (Loss_t − Loss*) / (Loss_0 − Loss*)")
    ax.set_title(f"(c) gradient descent: filled depth 1 (lines: exact theory\nE_t = E_0(I−ηΣ_x)^t); "
                 f"open: depth {plot_depth} (measured)", fontsize=10)

    # (d) per-step gap vs cond: NG flat, GD ∝ 1/cond
    ax = axes[1, 0]
    ng_color, gd_color = plotting.COLORS[0], plotting.COLORS[3]
    for depth in depths:
        xs = np.array(conds) * (1.0 + 0.08 * (depths.index(depth) - (len(depths) - 1) / 2))
        ax.plot(xs, [ngd[(depth, c)]["mean_gap"] for c in conds], ls="none", marker=depth_marker[depth],
                color=ng_color, ms=6)
        rs = [gd[(depth, c)] for c in conds]
        for x, r in zip(xs, rs):
            ax.plot([x], [r["late_gap"]], ls="none", marker=depth_marker[depth], color=gd_color, ms=6,
                    mfc=gd_color if r["asymptotic"] else "none")
        ax.plot(xs, [r["predicted_gap"] for r in rs], "-", color=gd_color, lw=0.8, alpha=0.8)
    ax.axhline(1 - (1 - lr) ** 2, color=ng_color, lw=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("condition number of Σ_x = XᵀX/N")
    ax.set_ylabel("per-step gap 1 − ρ  (ρ = excess-loss ratio)")
    ax.set_title("(d) convergence rate per step; blue: exact NG (line 1−(1−η)²),\n"
                 "red: GD late gap (lines 1−(1−η λ_min)²; open = not yet asymptotic)", fontsize=10)

    # (e) closed form vs dense
    ax = axes[1, 1]
    net_marker = {}
    for r in dense_rows:
        net_marker.setdefault(r["net"], MARKERS[len(net_marker) % len(MARKERS)])
    nets = list(net_marker)
    for r in dense_rows:
        dx = 0.07 * (conds.index(r["cond"]) - (len(conds) - 1) / 2) + 0.25 * (nets.index(r["net"]) - 1)
        x = depths.index(r["depth"]) + dx
        ax.plot([x], [max(r["end_to_end_error"], 1e-17)], ls="none", marker=net_marker[r["net"]],
                color=cond_color[r["cond"]], ms=5)
        ax.plot([x], [max(r["paper_end_to_end_error"], 1e-17)], ls="none", marker=net_marker[r["net"]],
                color=cond_color[r["cond"]], ms=7, mfc="none")
    ax.axhline(DENSE_TOL, color="k", ls=":", lw=1)
    ax.text(-0.4, DENSE_TOL * 2, f"tolerance {DENSE_TOL:g}", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(1e-17, 1e-5)
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("depth L (number of weight layers)")
    ax.set_ylabel("||ΔW − ΔW_dense|| / ||ΔW_dense||")
    ax.set_title("(e) end-to-end change vs dense Moore–Penrose pinv(F):\nfilled: closed form; "
                 "open: per-layer form (block-diag/L)", fontsize=10)

    # (f) norm ratio
    ax = axes[1, 2]
    for r in dense_rows:
        dx = 0.07 * (conds.index(r["cond"]) - (len(conds) - 1) / 2) + 0.25 * (nets.index(r["net"]) - 1)
        ax.plot([depths.index(r["depth"]) + dx], [r["norm_ratio"]], ls="none", marker=net_marker[r["net"]],
                color=cond_color[r["cond"]], ms=6)
    ax.axhline(1.0, color="k", lw=1.2)
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("depth L (number of weight layers)")
    ax.set_ylabel("||Δ_per-layer/L|| / ||Δ_MP||  (parameter norm)")
    ax.set_title("(f) same ΔW, different split: the per-layer form is longer\n"
                 "line: theory (= 1 at L = 1, ≥ 1 since MP is minimum-norm)", fontsize=10)
    top = max(r["norm_ratio"] for r in dense_rows)
    ax.set_ylim(1 - 0.05 * (top - 1), 1 + 1.45 * (top - 1) + 1e-3)
    ax.text(0.98, 0.97, "every cond gives the same ratio: with all widths ≥ D\nboth updates solve A(Δ) = E, "
            "which is Σ_x-free", transform=ax.transAxes, fontsize=8, ha="right", va="top")

    cond_handles = [Line2D([], [], color=cond_color[c], marker="o", ls="none", label=f"cond(Σ_x) = {_cond_label(c)}")
                    for c in conds]
    depth_handles = [Line2D([], [], color="0.3", marker=depth_marker[d], ls="none", mfc="none", label=f"depth {d}")
                     for d in depths]
    net_handles = [Line2D([], [], color="0.3", marker=net_marker[n], ls="none", label=n) for n in nets]
    fig.legend(handles=cond_handles + depth_handles, loc="outside lower center", ncol=len(conds) + len(depths),
               fontsize=8.5, title="colours in (a), (c), (e), (f) = input conditioning; marker shape in (a)–(d) = depth",
               title_fontsize=8.5)
    axes[1, 2].legend(handles=net_handles, loc="center left", fontsize=8, title="(e), (f) networks",
                      title_fontsize=8)
    n, d = int(cfg["n"]), int(cfg["in_dim"])
    fig.suptitle(f"Deep linear networks (N = {n}, D = {d}, C = {cfg['out_dim']}, hidden width {cfg['width']}): "
                 "exact natural gradient converges at a curvature-independent rate", fontsize=12)
    return fig


__all__ = ["PROFILES", "run"]
