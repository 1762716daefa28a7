"""Figure `unit_wise`: the unit-wise NGD kernel is isotropic only as the width grows (THEORY.md
claim 4).

At ρ → 0 and with every layer-input Gram K^H_l of full rank N, the unit-wise kernel on the
training points is diag(a_n) + I, where a_n counts the hidden units whose backward signal is
non-zero at x_n (the readout unit gives I). For ReLU a unit is active with probability exactly
1/2, so α = tr(Θ)/N ≈ Σ_l M_l/2 + 1 and a_n fluctuates by ~ M^{1/2} across samples: relative
deviation ~ M^{−1/2}. A smooth activation (erf) never has δ = 0, so a_n = Σ_l M_l for every n
and the kernel is exactly (Σ_l M_l + 1)·I.

Independent theory for the ReLU deviation (derived here, not taken from the method's code):
for a layer whose units draw i.i.d. symmetric Gaussian weights, unit j is active at x_n with
probability 1/2 and E[s_n s_m] = 1/2 − θ_nm/(2π) (θ_nm the angle between the layer inputs h̃_n,
h̃_m: the arc-cosine kernel of order 0). The centred counts a − ā1 are a sum of M i.i.d.
zero-mean vectors, and the counts of different layers are uncorrelated (given the layers below,
a unit above is active with probability exactly 1/2), so

    E||a − ā1||² = Σ_l M_l c_l,   c_l = (1/N) Σ_{n,m} θ^{(l)}_{nm} / (2π),
    deviation ≈ sqrt(Σ_l M_l c_l / N) / (Σ_l M_l / 2 + 1),

with θ^{(1)} the angles of the scaled inputs [σ_w x/√D, σ_b] (exact) and θ^{(l>1)} those of the
infinite-width NNGP kernel of layer l's input (leading order in 1/M). This predicts both the
slope −1/2 and the prefactor; the figure draws it as lines beside the measured markers.
"""
from __future__ import annotations


import jax
import numpy as np

from .. import backends, datasets, plotting
from ..diagnostics import isotropy
from ..function_space import method_kernels
from ..kernels import layer_kernels
from .. import linalg
from ..networks import mlp
from ._base import progress as _progress, ExperimentResult, check_below, check_close, check_range

PROFILES = {
    "tiny": {"widths": [64, 1024], "depths": [2, 3], "n": 8, "in_dim": 16, "seeds": 8,
             "activations": ["relu", "erf"]},
    "quick": {"widths": [64, 128, 256, 512, 1024, 2048], "depths": [2, 3], "n": 16, "in_dim": 32, "seeds": 8,
              "activations": ["relu", "erf"]},
    # N stays at 32: the method eigendecomposes one N×N block per hidden unit, and jax's CPU eigh
    # jumps from ~0.1 ms (N=32) to ~10-30 ms (N=64) per block, i.e. hours for 8 seeds up to M=8192.
    # Depth 3 also needs K^H_2 of rank N (M + 1 >= N) and the first layer D + 1 >= N.
    "full": {"widths": [64, 128, 256, 512, 1024, 2048, 4096, 8192], "depths": [2, 3], "n": 32, "in_dim": 64,
             "seeds": 8, "activations": ["relu", "erf"]},
}

SLOPE = -0.5
SLOPE_TOL = 0.1
#: |α/ΣM − 1/2| allowed at the largest width, relative to 1/2. The seed-averaged fluctuation is
#: 1/ΣM + O(1/(2·sqrt(N·ΣM·seeds))) (Var of the mean active fraction ≤ 1/(4·N·ΣM) for
#: near-orthogonal inputs), well below this for every profile.
ACTIVE_FRACTION_REL_TOL = 0.04
ERF_TOL = 1e-8
GRAM_FORM_TOL = 1e-10
#: measured deviation² over the arc-cosine prediction, averaged over (width, seed) runs: each
#: ratio is a weighted χ² with at most N−1 degrees of freedom (std ~ sqrt(2/(N−1)) or more), so
#: the mean is checked to 4 of its standard errors (and never tighter than this).
PREDICTION_RATIO_TOL = 0.2


def _angle_term(K) -> float:
    """c = (1/N) Σ_{n,m} θ_nm/(2π) with θ_nm the angle between the feature vectors of Gram K."""
    K = np.asarray(K, dtype=float)
    d = np.sqrt(np.diag(K))
    cos = np.clip(K / np.outer(d, d), -1.0, 1.0)
    return float(np.sum(np.arccos(cos)) / (2 * np.pi) / K.shape[0])


def _fast_init(net):
    """``net.init`` compiled once per network (neural-tangents' eager init dispatches op by op);
    the same PRNG key gives the same parameters (checked in :func:`run`)."""
    jitted = jax.jit(lambda key: backends.mlp.init(key, net.in_dim, net.hidden, net.out_dim, net.bias))
    return lambda seed: jitted(jax.random.PRNGKey(seed))


def _run_one(net, X, params):
    """Unit-wise kernel at one width/seed, and everything the figure needs from it."""
    lk = layer_kernels(net, X, params=params)
    K = np.asarray(method_kernels(net, X, "unit_wise", params=params, train_kernels=lk).train)
    n = K.shape[0]
    # Gram-form reference from the backward signals alone: units with δ ≠ 0 at x_n (hidden
    # layers), plus 1 for the readout unit.
    hidden_active = np.zeros(n)
    for d in lk.deltas[:-1]:
        hidden_active += np.sum(np.asarray(d)[:, 0, :] != 0, axis=1)
    reference = np.diag(hidden_active + 1.0)
    iso = isotropy(K)
    ranks = [linalg.rank(f) for f in lk.fwd]
    # conditioning of the unit blocks K_j = diag(d_j) K^H diag(d_j): smallest |δ| ratio of a unit
    # over the samples where it is non-zero (the method's eigh works on K_j, condition ~ ratio^-2)
    ratio = 1.0
    for d in lk.deltas[:-1]:
        a = np.abs(np.asarray(d)[:, 0, :])
        big = a.max(axis=0)
        small = np.where(a > 0, a, np.inf).min(axis=0)
        ok = big > 0
        if np.any(ok):
            ratio = min(ratio, float(np.min(small[ok] / big[ok])))
    return {
        "deviation": iso.deviation,
        "alpha": iso.alpha,
        "off_diagonal": iso.off_diagonal,
        "gram_form_error": float(np.max(np.abs(K - reference)) / np.mean(hidden_active + 1.0)),
        "active_min": float(hidden_active.min()),
        "active_max": float(hidden_active.max()),
        "fwd_ranks": ranks,
        "min_unit_delta_ratio": ratio,
        "full_rank_inputs": all(r == n for r in ranks),
    }


def _angle_terms(net, X) -> list[float]:
    """c_l of every hidden layer's input from the infinite-width forward Grams (width-free;
    fwd[0] = X̃X̃ᵀ exactly, fwd[l>0] the NNGP kernel of h̃_l)."""
    fwd = np.asarray(layer_kernels(net, X).fwd)
    return [_angle_term(fwd[l]) for l in range(net.depth - 1)]


def _predicted_deviation(angle_terms, widths_per_layer, n) -> float:
    """Arc-cosine prediction sqrt(Σ_l M_l c_l / N) / (Σ_l M_l/2 + 1) (module docstring)."""
    total = float(sum(widths_per_layer))
    return float(np.sqrt(sum(m * c for m, c in zip(widths_per_layer, angle_terms)) / n) / (total / 2 + 1))


def _fit_slope(widths, values) -> float:
    slope, _ = np.polyfit(np.log(widths), np.log(values), 1)
    return float(slope)


def run(config: dict, out_dir) -> ExperimentResult:
    widths = [int(w) for w in config["widths"]]
    depths = [int(d) for d in config["depths"]]
    n, in_dim, n_seeds = int(config["n"]), int(config["in_dim"]), int(config["seeds"])
    activations = list(config.get("activations", ["relu", "erf"]))
    inputs = [datasets.sphere(n, in_dim, seed) for seed in range(n_seeds)]

    runs = []  # one record per (activation, depth, width, seed)
    init_max_diff = 0.0
    jobs = [(a, d, w) for a in activations for d in depths for w in widths]
    for act, depth, width in _progress(jobs, len(jobs), "unit_wise"):
        net = mlp(depth=depth, width=width, in_dim=in_dim, activation=act)  # one net: jit cache reused
        init = _fast_init(net)
        if not runs:  # the compiled init draws exactly net.init's parameters
            ref, fast = jax.tree_util.tree_leaves(net.init(0)), jax.tree_util.tree_leaves(init(0))
            init_max_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ref, fast))
            if init_max_diff > 0:
                raise RuntimeError(f"compiled init differs from net.init by {init_max_diff:g}")
        for seed, X in enumerate(inputs):
            rec = _run_one(net, X, init(seed))
            rec.update(activation=act, depth=depth, width=width, seed=seed, sum_width=width * (depth - 1))
            runs.append(rec)

    # arc-cosine prediction (ReLU) per depth, seed and width; the angle terms do not depend on M
    predictions = {}
    for depth in depths if "relu" in activations else []:
        net = mlp(depth=depth, width=widths[0], in_dim=in_dim, activation="relu")
        terms = [_angle_terms(net, X) for X in inputs]
        for width in widths:
            vals = [_predicted_deviation(c, [width] * (depth - 1), n) for c in terms]
            predictions[(depth, width)] = {
                "rms": float(np.sqrt(np.mean(np.square(vals)))),
                "per_seed": vals,
                "angle_terms": terms,
                "n": n,
            }

    summary_rows = _summarise(runs, activations, depths, widths)
    checks = []
    slopes = {}
    ratios = {}
    if "relu" in activations:
        for depth in depths:
            rows = [r for r in summary_rows if r["activation"] == "relu" and r["depth"] == depth]
            slopes[depth] = _fit_slope([r["width"] for r in rows], [r["deviation_mean"] for r in rows])
            checks.append(check_range(
                f"ReLU depth {depth}: fitted log-log slope of deviation vs width M ({widths[0]}..{widths[-1]})",
                slopes[depth], SLOPE - SLOPE_TOL, SLOPE + SLOPE_TOL, SLOPE))
        for depth in depths:
            largest = [r for r in summary_rows if r["activation"] == "relu" and r["depth"] == depth][-1]
            checks.append(check_close(
                f"ReLU depth {depth}: alpha/(sum_l M_l) at M = {largest['width']} (seed mean) -> active fraction",
                largest["alpha_over_sum_width_mean"], 0.5, ACTIVE_FRACTION_REL_TOL))
        for depth in depths:
            sel = [r for r in runs if r["activation"] == "relu" and r["depth"] == depth]
            per_run = np.array([r["deviation"] ** 2 / predictions[(depth, r["width"])]["per_seed"][r["seed"]] ** 2
                                for r in sel])
            ratios[depth] = float(per_run.mean())
            # statistical tolerance: 4 standard errors of the mean ratio, at least PREDICTION_RATIO_TOL
            tol = max(PREDICTION_RATIO_TOL, 4 * float(per_run.std(ddof=1)) / np.sqrt(len(per_run)))
            checks.append(check_range(
                f"ReLU depth {depth}: mean of measured deviation^2 / arc-cosine prediction over "
                f"{len(per_run)} (width, seed) runs (tolerance max({PREDICTION_RATIO_TOL:g}, 4 std. errors))",
                ratios[depth], 1 - tol, 1 + tol, 1.0))
    if "erf" in activations:
        erf = [r for r in runs if r["activation"] == "erf"]
        checks.append(check_below("erf: max deviation ||K - alpha I||/||alpha I|| (delta never 0: exactly isotropic)",
                                  max(r["deviation"] for r in erf), ERF_TOL))
        checks.append(check_below("erf: max |alpha - (sum_l M_l + 1)| / (sum_l M_l + 1)",
                                  max(abs(r["alpha"] - (r["sum_width"] + 1)) / (r["sum_width"] + 1) for r in erf),
                                  ERF_TOL))
    checks.append(check_below(
        "max |K_unitwise - (diag(#units with delta != 0 at x_n) + I)| / alpha, all runs "
        "(counts from layer_kernels deltas)",
        max(r["gram_form_error"] for r in runs), GRAM_FORM_TOL))
    checks.append(check_below("runs with a layer-input Gram K^H_l of rank < N (claim's premise)",
                              sum(not r["full_rank_inputs"] for r in runs), 0))

    fig = _plot(summary_rows, predictions, slopes, config, depths, widths, activations)
    data = {
        "runs": runs,
        "summary": summary_rows,
        "fitted_slopes": {str(k): v for k, v in slopes.items()},
        "prediction_ratio": {str(k): v for k, v in ratios.items()},
        "compiled_init_max_abs_diff_vs_net_init": init_max_diff,
        "arc_cosine_prediction": [
            {"depth": d, "width": w, **v} for (d, w), v in predictions.items()
        ],
    }
    png, js = plotting.save(fig, "unit_wise", data, out_dir, config=config)
    parts = [f"depth {d}: slope {s:+.3f}" for d, s in slopes.items()]
    if "erf" in activations:
        parts.append(f"erf max deviation {max(r['deviation'] for r in runs if r['activation'] == 'erf'):.1e}")
    summary = "ReLU unit-wise deviation vs width: " + ", ".join(parts)
    return ExperimentResult("unit_wise", png, js, checks, summary, 0.0)


def _summarise(runs, activations, depths, widths):
    rows = []
    for act in activations:
        for depth in depths:
            for width in widths:
                sel = [r for r in runs if r["activation"] == act and r["depth"] == depth and r["width"] == width]
                dev = np.array([r["deviation"] for r in sel])
                frac = np.array([r["alpha"] / r["sum_width"] for r in sel])
                rows.append({
                    "activation": act, "depth": depth, "width": width, "sum_width": width * (depth - 1),
                    "deviation_mean": float(dev.mean()), "deviation_min": float(dev.min()),
                    "deviation_max": float(dev.max()), "deviation_rms": float(np.sqrt(np.mean(dev**2))),
                    "alpha_over_sum_width_mean": float(frac.mean()), "alpha_over_sum_width_min": float(frac.min()),
                    "alpha_over_sum_width_max": float(frac.max()), "seeds": len(sel),
                })
    return rows


def _errorbar(ax, rows, key, fmt, color, label, floor=None, hollow=False):
    w = np.array([r["width"] for r in rows])
    mean, lo, hi = (np.array([r[f"{key}_{s}"] for r in rows]) for s in ("mean", "min", "max"))
    if floor is not None:
        mean, lo, hi = (np.maximum(v, floor) for v in (mean, lo, hi))
    ax.errorbar(w, mean, yerr=[mean - lo, hi - mean], fmt=fmt, color=color, mfc="none" if hollow else None,
                ms=5, capsize=3, label=label)


def _plot(rows, predictions, slopes, config, depths, widths, activations):
    fig, ax0 = plotting.figure(1, 1, figsize=(15, 5.2),
                               title=f"Unit-wise NGD kernel Θ_uw on N={config['n']} inputs (D={config['in_dim']}), "
                                     f"{config['seeds']} seeds: markers = seed mean, bars = min–max, lines = theory")
    ax0.remove()
    gs = fig.add_gridspec(2, 3)
    ax_relu, ax_erf = fig.add_subplot(gs[:, 0]), fig.add_subplot(gs[:, 1])
    ax_top, ax_bot = fig.add_subplot(gs[0, 2]), fig.add_subplot(gs[1, 2])
    colors = {d: plotting.COLORS[i] for i, d in enumerate(depths)}
    erf_colors = {d: plotting.COLORS[2 + i] for i, d in enumerate(depths)}
    grid = np.geomspace(widths[0], widths[-1], 64)
    of = lambda act, depth: [r for r in rows if r["activation"] == act and r["depth"] == depth]  # noqa: E731

    if "relu" in activations:
        ax = ax_relu
        for depth in depths:
            sel = of("relu", depth)
            _errorbar(ax, sel, "deviation", "o", colors[depth],
                      f"L={depth} measured, fitted slope {slopes[depth]:+.3f}")
            ax.plot(grid, [_interp_prediction(predictions, depth, widths, g) for g in grid], "-",
                    color=colors[depth], lw=1.3, alpha=0.8, label=f"L={depth} arc-cosine theory")
        top = max(r["deviation_max"] for r in rows if r["activation"] == "relu")
        bottom = min(r["deviation_min"] for r in rows if r["activation"] == "relu")
        ax.plot(grid, 1.6 * top * (grid / grid[0]) ** SLOPE, ":", color="k", lw=1.2, label="reference slope −1/2")
        ax.set_ylim(bottom / 6, top * 3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width M (hidden units per layer)")
        ax.set_ylabel("relative deviation ||Θ_uw − αI||_F / ||αI||_F")
        ax.set_title("ReLU: deviation ~ M^(−1/2)", fontsize=10)
        ax.legend(loc="lower left", fontsize=8)

    if "erf" in activations:
        ax = ax_erf
        floor = 1e-17
        for depth in depths:
            _errorbar(ax, of("erf", depth), "deviation", "s", erf_colors[depth], f"erf L={depth} measured",
                      floor=floor, hollow=True)
        ax.axhline(ERF_TOL, color="0.3", ls="--", lw=1, label="check tolerance 1e-8")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(floor, 1e-3)
        ax.set_xlabel("width M (hidden units per layer)")
        ax.set_ylabel("relative deviation ||Θ_uw − αI||_F / ||αI||_F")
        ax.set_title("erf (δ never 0): theory deviation exactly 0;\n"
                     "measured = round-off of the unit-block pseudo-inverses", fontsize=10)
        ax.legend(loc="upper center", fontsize=8, ncol=3)

    for ax, act, p in ((ax_top, "erf", 1.0), (ax_bot, "relu", 0.5)):
        if act not in activations:
            ax.set_visible(False)
            continue
        cmap = erf_colors if act == "erf" else colors
        for depth in depths:
            _errorbar(ax, of(act, depth), "alpha_over_sum_width", "s" if act == "erf" else "o", cmap[depth],
                      f"{act} L={depth}", hollow=act == "erf")
            S = grid * (depth - 1)
            ax.plot(grid, (p * S + 1) / S, "-", color=cmap[depth], lw=1.1, alpha=0.7)
        ax.axhline(p, color="k", ls=":", lw=1, label=f"active fraction {p:g}")
        ax.set_xscale("log", base=2)
        ax.set_ylabel("α / Σ_l M_l")
        ax.legend(loc="upper right", fontsize=7.5, ncol=3)
    ax_top.set_title("α = tr(Θ_uw)/N per hidden unit → active fraction p\n"
                     "lines: (pΣM + 1)/ΣM, p = 1 (erf), 1/2 (ReLU)", fontsize=10)
    ax_bot.set_xlabel("width M (hidden units per layer)")
    return fig


def _interp_prediction(predictions, depth, widths, width) -> float:
    """RMS arc-cosine prediction at any width M (the angle terms are width-free)."""
    terms = predictions[(depth, widths[0])]["angle_terms"]
    n = predictions[(depth, widths[0])]["n"]
    vals = [_predicted_deviation(c, [width] * (depth - 1), n) for c in terms]
    return float(np.sqrt(np.mean(np.square(vals))))


__all__ = ["PROFILES", "run"]
