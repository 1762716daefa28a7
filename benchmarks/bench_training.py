"""Parameter-space NGD training step: time per step vs width for every preconditioner
(Woodbury / push-through forms, no P×P matrix), and the dense reference where it fits
(issues 5 and 8, "Performance").

Part A — widths M ∈ {256, 512, …, 8192} (quick: ≤ 2048), depth 3 (two hidden layers of width M,
P ≈ M²), N = 64 inputs, C = 1, damping ρ = 1e-3, float64. For each method (gd, exact = Woodbury
on the N×N NTK, block_diag, block_tridiag = push-through on the L·N Gram, kfac = Kronecker
factors by push-through, unit_wise = one N×N Gram per unit) time one update
``training.parameter_update(net, params, X, Y, method, lr)`` — features, Grams, solve and Jᵀu
(the method's optax transformation); warm-up first, then the median of repeats with
``block_until_ready``. The exponent of t ∝ P^k is fitted over M ≥ 1024 (quick: M ≥ 512): the
forward/backward passes and Jᵀu are O(N·P), the Grams O(N²·M) ∝ P^{1/2}, the solves O(N³) (unit-wise's
per-unit SVDs O(M·N³) ∝ P^{1/2}), so 1/2 ≤ k ≤ 1 once these terms dominate the fixed overhead, k → 1
asymptotically — never cubic. Target: k in [0.5, 1.3] (below 0.5 the fixed overhead dominates and the fit
says nothing about the scaling; above 1.3 a superlinear term would be present).

Correctness in the same run, at every width: the linearised function step J·Δθ (one jvp) must
equal −η Θ_G(X, X) r from the function-space kernel ``ntk_ngd.method_kernels`` (an independent
code path: kernels from Grams, not the update formulas).

Part B — small widths where the dense reference fits (full: M ∈ {32, 64, 96}, P ≤ 11041;
quick: M ∈ {32, 64}): ``ntk_ngd.dense.parameter_update`` (explicit Jacobian, P×P matrices,
blockwise symmetric solve) vs ``ntk_ngd.training.parameter_update`` side by side: time and
max |Δθ_gram − Δθ_dense| / max |Δθ_dense|.

The largest width runs in a subprocess that reports its peak RSS. BLAS threads: see
benchmarks/bench_methods.py.

    python benchmarks/bench_training.py [--quick]

Writes figures/bench_training.png and figures/bench_training.json (ntk_ngd.plotting.save).
"""
from __future__ import annotations

import os
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import dense, plotting, training
from ntk_ngd.function_space import method_kernels
from ntk_ngd.networks import mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (blas_limit, fit_exponent, in_subprocess, log_axes, start_run,  # noqa: E402
                     load_average, bench_main, rel, targets_lines, timed)

NAME = "bench_training"
DEPTH, IN_DIM, OUT_DIM = 3, 16, 1
METHODS = ("gd", "exact", "block_diag", "block_tridiag", "kfac", "unit_wise")
DAMPING, LR = 1e-3, 1.0

PROFILES = {
    "tiny": dict(n=16, widths=(64, 128, 256), fit_from=64, dense_widths=(8, 16), repeats=1),
    "quick": dict(n=64, widths=(256, 512, 1024, 2048), fit_from=512, dense_widths=(32, 64), repeats=3),
    "full": dict(n=64, widths=(256, 512, 1024, 2048, 4096, 8192), fit_from=1024, dense_widths=(32, 64, 96),
                 repeats=5),
}


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
def _problem(n: int, width: int, seed: int = 0):
    net = mlp(depth=DEPTH, width=width, in_dim=IN_DIM, out_dim=OUT_DIM, activation="relu", bias=True)
    params = net.init(seed=seed)
    X, Y = ntk_ngd.datasets.synthetic(n=n, in_dim=IN_DIM, out_dim=OUT_DIM, seed=seed)
    return net, params, np.asarray(X, float), np.asarray(Y, float)


def _function_step_check(net, params, X, Y, method, delta) -> float:
    """max rel. difference of J·Δθ (jvp) and −η Θ_G(X, X) r (function-space kernel)."""
    Xj = jnp.asarray(X)
    _, jdelta = jax.jvp(lambda p: net.apply(p, Xj), (params,), (delta,))
    r = (np.asarray(net.apply(params, X)) - Y).reshape(-1)
    K = method_kernels(net, X, method, params=params, damping=DAMPING).train
    return rel(np.asarray(jdelta).reshape(-1), -LR * np.asarray(K) @ r)


def case_width_point(n: int, width: int, repeats: int) -> dict:
    """Part A, one width: update time per method, and the function-step check."""
    net, params, X, Y = _problem(n, width)
    out = {"M": width, "N": n, "P": net.num_params, "step_s": {}, "runs_s": {}, "function_step_rel_diff": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for method in METHODS:
            t, runs, delta = timed(lambda: training.parameter_update(net, params, X, Y, method, LR, damping=DAMPING),
                                   repeats)
            out["step_s"][method] = t
            out["runs_s"][method] = runs
            out["function_step_rel_diff"][method] = _function_step_check(net, params, X, Y, method, delta)
            del delta
    print(f"    A M={width} P={net.num_params}: " + ", ".join(f"{m} {t:.3f} s" for m, t in out["step_s"].items())
          + f"; worst step check {max(out['function_step_rel_diff'].values()):.1e}", file=sys.stderr, flush=True)
    return out


def case_dense_point(n: int, width: int, repeats: int) -> dict:
    """Part B, one small width: Gram-form update vs the dense reference update."""
    net, params, X, Y = _problem(n, width)
    out = {"M": width, "N": n, "P": net.num_params, "gram_s": {}, "dense_s": {}, "rel_diff": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for method in METHODS:
            tg, _, dg = timed(lambda: training.parameter_update(net, params, X, Y, method, LR, damping=DAMPING),
                              repeats)
            td, _, dd = timed(lambda: dense.parameter_update(net, params, X, Y, method, LR, damping=DAMPING), repeats)
            out["gram_s"][method], out["dense_s"][method] = tg, td
            out["rel_diff"][method] = rel(dense.flatten_params(net, dg), dd)
    print(f"    B M={width} P={net.num_params}: " + ", ".join(
        f"{m} {out['dense_s'][m] / out['gram_s'][m]:.0f}×" for m in METHODS), file=sys.stderr, flush=True)
    return out


CASES = {"width_point": case_width_point, "dense_point": case_dense_point}


# ---------------------------------------------------------------------------------------------
# figure and tables
# ---------------------------------------------------------------------------------------------
def make_figure(res: dict):
    fig, axes = plotting.figure(1, 2, figsize=(11.5, 5.4), title=f"One NGD training step (Δθ), L = {DEPTH}, "
                                f"N = {res['part_a'][0]['N']}, ρ = {DAMPING:g}, float64, CPU ({res['config']['blas_note']})")
    pts = res["part_a"]
    ax = axes[0]
    Ps = np.array([p["P"] for p in pts], float)
    for i, m in enumerate(METHODS):
        ax.plot(Ps, [p["step_s"][m] for p in pts], marker="os^vDx"[i], color=plotting.COLORS[i],
                label=f"{m} (k = {res['exponents'][m]:.2f})")
    d = res["part_b"]
    dP = np.array([p["P"] for p in d], float)
    for i, m in enumerate(METHODS):
        ax.plot(dP, [p["dense_s"][m] for p in d], marker="os^vDx"[i], color=plotting.COLORS[i], linestyle=":",
                alpha=0.8)
        ax.plot(dP, [p["gram_s"][m] for p in d], marker="os^vDx"[i], color=plotting.COLORS[i], linestyle="-",
                alpha=0.5)
    ref = pts[-1]["step_s"]["exact"]
    allP = np.concatenate([dP, Ps])
    ax.plot(Ps, ref * Ps / Ps[-1], "k-", linewidth=0.8, label="∝ P")
    ax.plot(dP, res["part_b"][-1]["dense_s"]["exact"] * (dP / dP[-1]) ** 3, "k:", linewidth=0.8,
            label="∝ P³ (dense solve)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of parameters P")
    ax.set_ylabel("time per step [s] (median)")
    ax.set_title("Gram/Woodbury forms (solid) vs dense reference (dotted)")
    widths = [p["M"] for p in d] + [p["M"] for p in pts]
    top = ax.secondary_xaxis("top", functions=(lambda P: P, lambda P: P))
    top.set_xticks(list(allP), [str(m) for m in widths], fontsize=7)
    top.minorticks_off()
    top.set_xlabel("hidden width M")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, frameon=False, fontsize=8,
               title="time ∝ P^k, k fitted over the largest widths", title_fontsize=8)

    ax = axes[1]
    Ms = [p["M"] for p in pts]
    for i, m in enumerate(METHODS):
        if m == "gd":
            continue
        ax.plot(Ms, [p["step_s"][m] / p["step_s"]["gd"] for p in pts], marker="os^vDx"[i],
                color=plotting.COLORS[i], label=m)
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(Ms)
    ax.set_xticklabels([str(v) for v in Ms])
    ax.set_xlabel("hidden width M")
    ax.set_ylabel("step time / gradient step time")
    ax.set_title("cost of preconditioning relative to plain gd")
    ax.legend(fontsize=7, loc="upper right")
    return fig


def tables(res: dict) -> str:
    pts = res["part_a"]
    lines = [f"A. one update Δθ per method, N={pts[0]['N']}, L={DEPTH}, ρ={DAMPING:g}: time [s] "
             "(in parentheses: / gd)"]
    lines.append(f"{'M':>6} {'P':>10} | " + " | ".join(f"{m:>17}" for m in METHODS) + " | worst J·Δθ check")
    for p in pts:
        cells = [f"{p['step_s'][m]:8.3f} ({p['step_s'][m] / p['step_s']['gd']:5.2f})" for m in METHODS]
        lines.append(f"{p['M']:>6} {p['P']:>10} | " + " | ".join(cells)
                     + f" | {max(p['function_step_rel_diff'].values()):.1e}")
    lines.append(f"  fitted exponent t ∝ P^k over M ∈ {res['fit_widths']}: "
                 + ", ".join(f"{m} {v:.2f}" for m, v in res["exponents"].items()))
    d = res["part_b"]
    lines.append("")
    lines.append(f"B. Gram/Woodbury update vs dense reference (N={d[0]['N']}, ρ={DAMPING:g}): gram [s] / dense [s] "
                 "(dense/gram×, max rel diff of Δθ)")
    for p in d:
        lines.append(f"  M={p['M']:<4} P={p['P']:<6} " + "; ".join(
            f"{m} {p['gram_s'][m]:.3f}/{p['dense_s'][m]:.2f} ({p['dense_s'][m] / p['gram_s'][m]:.0f}×, "
            f"{p['rel_diff'][m]:.0e})" for m in METHODS))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run(quick: bool = False, out_dir="figures", blas_threads="auto", repeats: int | None = None, log=None,
        profile: str | None = None) -> dict:
    """Run the benchmark; write out_dir/bench_training.{png,json}; return a summary dict with
    ``table``, ``ratios``, ``targets`` and ``ok`` (updates equal the function-space kernels and
    the dense reference to ≤ 1e-8)."""
    log, profile, prof, threads, load_start, t_start = start_run(PROFILES, quick, profile, repeats, blas_threads, log)
    res = {}
    with blas_limit(threads):
        pts = []
        for i, m in enumerate(prof["widths"]):
            kw = dict(n=prof["n"], width=m, repeats=prof["repeats"])
            if i == len(prof["widths"]) - 1:
                log(f"  part A: M={m} (subprocess)")
                pts.append(in_subprocess(__file__, "width_point", kw, threads))
            else:
                log(f"  part A: M={m}")
                pts.append(case_width_point(**kw))
        res["part_a"] = pts
        dpts = []
        for m in prof["dense_widths"]:
            log(f"  part B: dense reference at M={m}")
            dpts.append(case_dense_point(n=prof["n"], width=m, repeats=prof["repeats"]))
        res["part_b"] = dpts
    wall = time.perf_counter() - t_start
    fit = [p for p in pts if p["M"] >= prof["fit_from"]]
    res["fit_widths"] = [p["M"] for p in fit]
    res["exponents"] = {m: fit_exponent([p["P"] for p in fit], [p["step_s"][m] for p in fit]) for m in METHODS}
    res["dense_exponents"] = {m: fit_exponent([p["P"] for p in dpts], [p["dense_s"][m] for p in dpts])
                              for m in METHODS}
    load_end = load_average()
    note = f"OpenBLAS threads {threads or 'default'}"
    res["config"] = {"profile": profile, **{k: list(v) if isinstance(v, tuple) else v for k, v in prof.items()},
                     "depth": DEPTH, "in_dim": IN_DIM, "out_dim": OUT_DIM, "activation": "relu", "bias": True,
                     "damping": DAMPING, "lr": LR, "blas_threads": threads, "blas_note": note,
                     "load_average_start": load_start, "load_average_end": load_end, "cpu_count": os.cpu_count()}
    worst_step = max(v for p in pts for v in p["function_step_rel_diff"].values())
    worst_dense = max(v for p in dpts for v in p["rel_diff"].values())
    ex = {m: v for m, v in res["exponents"].items()}
    targets = [
        {"name": "J·Δθ == −η Θ_G r at every width (max rel diff)", "value": worst_step, "target": "<= 1e-8",
         "met": worst_step <= 1e-8},
        {"name": "Gram-form Δθ == dense reference Δθ (max rel diff)", "value": worst_dense, "target": "<= 1e-8",
         "met": worst_dense <= 1e-8},
    ] + [{"name": f"exponent t ∝ P^k, {m}", "value": v, "target": "in [0.5, 1.3] (Gram/SVD terms P^1/2 to "
          "forward passes P^1; never cubic)", "met": bool(0.5 <= v <= 1.3)} for m, v in ex.items()]
    table = "\n".join([tables(res), ""] + targets_lines(targets)
                      + [f"peak RSS, largest case (M={pts[-1]['M']}, P={pts[-1]['P']}): {pts[-1]['peak_rss_mb']:.0f} MB",
                         f"load average at start {load_start}, at end {load_end}; {note}; wall {wall:.0f} s"])
    res["targets"] = targets
    fig = make_figure(res)
    png, js = plotting.save(fig, NAME, res, out_dir=out_dir, config=res["config"], wall_time=wall)
    return {"name": NAME, "png": png, "json": js, "table": table, "wall_time_s": wall, "targets": targets,
            "ok": worst_step <= 1e-8 and worst_dense <= 1e-8,
            "ratios": {"over_gd_at_largest_M": {m: pts[-1]["step_s"][m] / pts[-1]["step_s"]["gd"] for m in METHODS},
                       "dense_over_gram": {f"{m}@M={p['M']}": p["dense_s"][m] / p["gram_s"][m]
                                           for p in dpts for m in METHODS},
                       "exponents_in_P": ex},
            "peak_rss_mb": {f"M={pts[-1]['M']}": pts[-1]["peak_rss_mb"]}, "load_average": [load_start, load_end]}


def main(argv=None) -> int:
    return bench_main(__doc__, NAME, run, CASES, argv, quick_help="M ≤ 2048 (minutes)")


if __name__ == "__main__":
    sys.exit(main())
