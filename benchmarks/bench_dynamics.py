"""Closed-form function-space dynamics: every fixed-kernel method at N = 1024 vs neural-tangents'
``predict.gradient_descent_mse`` on the same kernel, and time vs N up to 8192 (issues 5 and 8).

Part A — N = 1024, infinite width (depth 3, ReLU, input dimension 2048 so that every layer's
input Gram has full rank and unit-wise/K-FAC have their infinite-width isotropic kernels). The
per-layer kernels are computed once; for each fixed-kernel method (gd, exact, block_diag,
block_tridiag, pattern, kfac, unit_wise) its kernel Θ_G(X, X) and Θ_G(X_test, X) (256 test
points; unit-wise has no infinite-width test kernel) are computed once from them, and then
1000 steps (1001 time points, train and test outputs) are timed:

* ``ours_discrete``   ``ntk_ngd.dynamics.closed_form`` (discrete steps, lr = 1/α, gd 1/λ_max);
* ``ours_continuous`` the same in continuous time (τ = lr·t);
* ``nt``              ``nt.predict.gradient_descent_mse(Θ_G, Y, learning_rate=lr·N)`` and its
                      ``predict_fn(t, …)`` at the same 1001 times (NT divides time by y.size = N,
                      so this is the same flow: the two outputs are compared in the same run).

Target: ≤ 5 s per method after compilation, ratio ours / NT ≤ 1.5. The end-to-end
``ntk_ngd.simulate(..., steps=1000, X_test=...)`` (per-layer kernels included) is timed too.

Part B — time vs N (quick: N ≤ 2048; full: N ≤ 8192, exact only above 4096): per-layer kernels
(NT, infinite width), the method's kernel from them, and 1000 closed-form steps, each N in its own
subprocess (peak RSS per N). The fitted exponent of t(N) over N ≥ 1024 is expected ≈ 3 (one
eigendecomposition per kernel; the per-layer kernels are O(N²)). Above 4096 every call runs
once without a separate warm-up (op-by-op compilation is < 1 s of a > 1 min call).

BLAS threads: see benchmarks/bench_methods.py (``--blas-threads auto`` limits OpenBLAS to one
thread when the machine is oversubscribed; multithreaded OpenBLAS eigh was 30× slower there).

    python benchmarks/bench_dynamics.py [--quick]

Writes figures/bench_dynamics.png and figures/bench_dynamics.json (ntk_ngd.plotting.save).
"""
from __future__ import annotations

import os
import sys
import time
import warnings

import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import methods, plotting
from ntk_ngd.diagnostics import isotropy
from ntk_ngd.dynamics import closed_form, simulate
from ntk_ngd.kernels import layer_kernels
from ntk_ngd.networks import mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (blas_limit, fit_exponent, in_subprocess, log_axes, start_run,  # noqa: E402
                     load_average, bench_main, peak_rss_mb, rel, targets_lines, timed)

NAME = "bench_dynamics"
DEPTH, OUT_DIM, WIDTH = 3, 1, 512  # WIDTH: the nominal width unit-wise's infinite-width α uses
IN_DIM_A, IN_DIM_B = 2048, 16
FIXED = ("gd", "exact", "block_diag", "block_tridiag", "pattern", "kfac", "unit_wise")
PATTERN = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
SWEEP_METHODS = ("gd", "exact", "block_diag", "kfac")

PROFILES = {
    "tiny": dict(n_a=64, n_test=16, steps=100, ns_b=(64, 128, 256), exact_only_above=128, repeats=1),
    "quick": dict(n_a=1024, n_test=256, steps=1000, ns_b=(256, 512, 1024, 2048), exact_only_above=2048, repeats=3),
    "full": dict(n_a=1024, n_test=256, steps=1000, ns_b=(256, 512, 1024, 2048, 4096, 8192), exact_only_above=4096,
                 repeats=5),
}


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
def _options(method):
    return {"pattern": PATTERN} if method == "pattern" else {}


def _lr(method, K) -> float:
    """The rule of ``simulate(lr=None)``: 1/λ_max for gd, 1/α otherwise."""
    if method == "gd":
        return 1.0 / float(jnp.linalg.eigvalsh(K)[-1])
    return 1.0 / isotropy(K).alpha


def _nt_predict(K, Y, lr, times, K_test):
    n = Y.shape[0]
    predict_fn = nt.predict.gradient_descent_mse(K, Y, learning_rate=lr * n)
    fx_train_0 = jnp.zeros_like(Y)
    if K_test is None:
        return predict_fn(times, fx_train_0, None, None), None
    return predict_fn(times, fx_train_0, jnp.zeros((K_test.shape[0], Y.shape[1]), Y.dtype), K_test)


def _ours(K, Y, lr, times, K_test, continuous):
    t = times * lr if continuous else times
    res, moved = closed_form(K, -Y, t, lr, K_test, continuous=continuous)
    return res + Y[None], moved


def case_fixed_kernels(n: int, n_test: int, steps: int, repeats: int) -> dict:
    """Part A: closed-form 1000 steps per method vs NT's gradient_descent_mse on the same kernel."""
    net = mlp(depth=DEPTH, width=WIDTH, in_dim=IN_DIM_A, out_dim=OUT_DIM, activation="relu", bias=True)
    X, Y = ntk_ngd.datasets.synthetic(n=n + n_test, in_dim=IN_DIM_A, out_dim=OUT_DIM, seed=0)
    X, Xt, Y = X[:n], X[n:], jnp.asarray(Y[:n])
    t_lk, _, lk = timed(lambda: layer_kernels(net, X), repeats)
    t_lkt, _, lkt = timed(lambda: layer_kernels(net, Xt, X), repeats)
    times = np.arange(steps + 1, dtype=float)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for method in FIXED:
            spec = methods.get(method)
            test = None if method == "unit_wise" else lkt  # no infinite-width unit-wise test kernel
            t_k, _, kern = timed(lambda: spec.kernel(lk, test, n=n, damping=0.0, residual=None, rcond=None, net=net,
                                                     **_options(method)), repeats)
            K, K_test = kern.train, kern.test
            lr = _lr(method, K)
            iso = isotropy(K)
            t_d, _, (fd, _) = timed(lambda: _ours(K, Y, lr, times, K_test, False), repeats)
            t_c, _, (fc, mc) = timed(lambda: _ours(K, Y, lr, times, K_test, True), repeats)
            t_nt, _, (fn, mn) = timed(lambda: _nt_predict(K, Y, lr, times, K_test), repeats)
            diff = rel(fc, fn) if mc is None else max(rel(fc, fn), rel(mc, mn))
            t_sim, _, _ = timed(lambda: simulate(net, X, np.asarray(Y), method, steps=steps,
                                                 X_test=None if method == "unit_wise" else Xt,
                                                 **_options(method)).train_loss, min(repeats, 3))
            loss = 0.5 * np.sum(np.asarray(fd - Y[None]) ** 2, axis=(1, 2)) / n
            rows.append({"method": method, "alpha": iso.alpha, "deviation": iso.deviation, "lr": lr,
                         "kernel_from_grams_s": t_k, "ours_discrete_s": t_d, "ours_continuous_s": t_c, "nt_s": t_nt,
                         "ratio_discrete_over_nt": t_d / t_nt, "ratio_continuous_over_nt": t_c / t_nt,
                         "max_rel_diff_vs_nt": diff, "simulate_end_to_end_s": t_sim, "test_points": test is not None,
                         "final_loss_over_initial": float(loss[-1] / loss[0])})
            print(f"    A {method:<13} closed form {t_d:.3f} s (cont. {t_c:.3f}), NT {t_nt:.3f} s, "
                  f"diff {diff:.1e}, simulate {t_sim:.2f} s", file=sys.stderr, flush=True)
    return {"N": n, "N_test": n_test, "steps": steps, "layer_kernels_s": t_lk, "test_layer_kernels_s": t_lkt,
            "rows": rows}


def case_sweep_point(n: int, steps: int, repeats: int, methods_: list, warmup: bool) -> dict:
    """Part B, one N: per-layer kernels, then per method kernel-from-Grams and closed form."""
    rss_before = peak_rss_mb()  # after the imports (jax, neural-tangents, TensorFlow)
    net = mlp(depth=DEPTH, width=WIDTH, in_dim=IN_DIM_B, out_dim=OUT_DIM, activation="relu", bias=True)
    X, Y = ntk_ngd.datasets.synthetic(n=n, in_dim=IN_DIM_B, out_dim=OUT_DIM, seed=0)
    Y = jnp.asarray(Y)
    t_lk, _, lk = timed(lambda: layer_kernels(net, X), repeats, warmup)
    times = np.arange(steps + 1, dtype=float)
    out = {"N": n, "steps": steps, "layer_kernels_s": t_lk, "kernel_s": {}, "closed_form_s": {}, "total_s": {},
           "rss_after_imports_mb": rss_before}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for method in methods_:
            spec = methods.get(method)
            t_k, _, kern = timed(lambda: spec.kernel(lk, None, n=n, damping=0.0, residual=None, rcond=None,
                                                     net=net).train, repeats, warmup)
            lr = _lr(method, kern)
            t_c, _, _ = timed(lambda: _ours(kern, Y, lr, times, None, False)[0], repeats, warmup)
            out["kernel_s"][method] = t_k
            out["closed_form_s"][method] = t_c
            out["total_s"][method] = t_lk + t_k + t_c
            print(f"    B N={n} {method}: layer kernels {t_lk:.2f} s, kernel {t_k:.2f} s, closed form {t_c:.2f} s",
                  file=sys.stderr, flush=True)
            del kern
    return out


CASES = {"fixed_kernels": case_fixed_kernels, "sweep_point": case_sweep_point}


# ---------------------------------------------------------------------------------------------
# figure and tables
# ---------------------------------------------------------------------------------------------
def make_figure(res: dict):
    fig, axes = plotting.figure(1, 3, figsize=(14.5, 4.6), title=f"Closed-form dynamics, infinite width, L = {DEPTH}, "
                                f"float64, CPU ({res['config']['blas_note']})")
    a = res["part_a"]
    rows = a["rows"]
    ax = axes[0]
    x = np.arange(len(rows))
    ax.bar(x - 0.27, [r["ours_discrete_s"] for r in rows], 0.27, label="ntk_ngd closed form (discrete)")
    ax.bar(x, [r["ours_continuous_s"] for r in rows], 0.27, label="ntk_ngd closed form (continuous)")
    ax.bar(x + 0.27, [r["nt_s"] for r in rows], 0.27, label="NT gradient_descent_mse")
    ax.axhline(5.0, color="k", linestyle=":", linewidth=1, label="target 5 s")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([r["method"] for r in rows], rotation=45, ha="right")
    ax.set_ylabel(f"time for {a['steps']} steps [s] (median)")
    ax.set_title(f"A: {a['steps']} steps, N = {a['N']}, {a['N_test']} test points")
    ax.set_ylim(top=60)
    ax.legend(loc="upper left", fontsize=7)

    pts = res["part_b"]
    ax = axes[1]
    for i, m in enumerate(SWEEP_METHODS):
        xs = [p["N"] for p in pts if m in p["total_s"]]
        ax.plot(xs, [p["total_s"][m] for p in pts if m in p["total_s"]], marker="os^D"[i],
                color=plotting.COLORS[i], label=f"{m}: layer kernels + Θ_G + {pts[0]['steps']} steps")
    ax.plot([p["N"] for p in pts], [p["layer_kernels_s"] for p in pts], "k--", marker="x",
            label="per-layer kernels alone (NT)")
    ns = np.array([p["N"] for p in pts], float)
    ye = pts[-1]["total_s"]["exact"]
    ax.plot(ns, ye * (ns / ns[-1]) ** 3, "k:", linewidth=1, label="∝ N³")
    log_axes(ax, ns, "number of inputs N", "time [s]")
    ex = res["exponents"]
    ax.set_title(f"B: time vs N (exact: N^{ex['total'].get('exact', float('nan')):.2f})")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[2]
    ax.plot([p["N"] for p in pts], [p["peak_rss_mb"] / 1024 for p in pts], "o-", color=plotting.COLORS[3],
            label="peak RSS of the process")
    ax.plot(ns, 8 * DEPTH * 3 * ns**2 / 2**30, "k:", label="3 stacks of L·N² float64 (fwd, bwd, ntk)")
    ax.plot([p["N"] for p in pts], [p["rss_after_imports_mb"] / 1024 for p in pts], "--", color="0.5",
            label="RSS after imports (jax, NT, TF)")
    log_axes(ax, ns, "number of inputs N", "peak RSS [GiB]")
    ax.set_title("B: memory vs N (one subprocess per N)")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def tables(res: dict) -> str:
    a = res["part_a"]
    lines = [f"A. {a['steps']} closed-form steps, N={a['N']} (+{a['N_test']} test points), infinite width, "
             f"L={DEPTH}, input dim {IN_DIM_A}; per-layer kernels {a['layer_kernels_s']:.2f} s (train), "
             f"{a['test_layer_kernels_s']:.2f} s (test)"]
    lines.append(f"{'method':<14}{'alpha':>9}{'dev':>9} {'Θ_G [s]':>8} {'ours d [s]':>10} {'ours c [s]':>10} "
                 f"{'NT [s]':>8} {'d/NT':>6} {'c/NT':>6} {'diff vs NT':>11} {'simulate [s]':>12}")
    for r in a["rows"]:
        lines.append(f"{r['method']:<14}{r['alpha']:9.4g}{r['deviation']:9.1e} {r['kernel_from_grams_s']:8.3f} "
                     f"{r['ours_discrete_s']:10.3f} {r['ours_continuous_s']:10.3f} {r['nt_s']:8.3f} "
                     f"{r['ratio_discrete_over_nt']:6.2f} {r['ratio_continuous_over_nt']:6.2f} "
                     f"{r['max_rel_diff_vs_nt']:11.1e} {r['simulate_end_to_end_s']:12.2f}"
                     + ("" if r["test_points"] else "  (train only)"))
    lines.append("  d = discrete steps, c = continuous time; diff = max rel. difference of train and test outputs "
                 "(continuous) vs NT")
    pts = res["part_b"]
    lines.append("")
    lines.append("B. time vs N, infinite width: per-layer kernels (LK), then per method Θ_G from them + "
                 f"{pts[0]['steps']} closed-form steps [s]")
    lines.append(f"{'N':>6} {'LK':>8} | " + " | ".join(f"{m + ' Θ_G/steps':>22}" for m in SWEEP_METHODS)
                 + f" | {'peak RSS':>9}")
    for p in pts:
        cells = [f"{p['kernel_s'][m]:10.2f}/{p['closed_form_s'][m]:<11.2f}" if m in p["kernel_s"] else f"{'—':>22}"
                 for m in SWEEP_METHODS]
        lines.append(f"{p['N']:>6} {p['layer_kernels_s']:8.2f} | " + " | ".join(cells)
                     + f" | {p['peak_rss_mb']:6.0f} MB")
    ex = res["exponents"]
    lines.append(f"  fitted exponents t ∝ N^k over N ∈ {res['exponent_range']}:")
    for part, d in ex.items():
        lines.append(f"    {part:<12} " + ", ".join(f"{m} {v:.2f}" for m, v in d.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run(quick: bool = False, out_dir="figures", blas_threads="auto", repeats: int | None = None, log=None,
        profile: str | None = None) -> dict:
    """Run the benchmark; write out_dir/bench_dynamics.{png,json}; return a summary dict with
    ``table``, ``ratios``, ``targets`` and ``ok`` (closed form == NT to ≤ 1e-8)."""
    log, profile, prof, threads, load_start, t_start = start_run(PROFILES, quick, profile, repeats, blas_threads, log)
    res = {}
    with blas_limit(threads):
        log(f"  part A: {prof['steps']} steps of every fixed-kernel method at N={prof['n_a']}")
        res["part_a"] = case_fixed_kernels(prof["n_a"], prof["n_test"], prof["steps"], prof["repeats"])
        pts = []
        for n in prof["ns_b"]:
            ms = ["exact"] if n > prof["exact_only_above"] else list(SWEEP_METHODS)
            log(f"  part B: N={n} ({', '.join(ms)}; subprocess)")
            pts.append(in_subprocess(__file__, "sweep_point", dict(n=n, steps=prof["steps"], repeats=prof["repeats"],
                                                         methods_=ms, warmup=n <= 4096), threads))
        res["part_b"] = pts
    wall = time.perf_counter() - t_start
    big = [p for p in pts if p["N"] >= 1024]
    big = big if len(big) >= 2 else pts
    res["exponent_range"] = [p["N"] for p in big]
    ex = {"total": {}, "kernel": {}, "closed_form": {}, "layer_kernels": {}}
    for m in SWEEP_METHODS:
        xs = [p for p in big if m in p["total_s"]]
        if len(xs) >= 2:
            ns = [p["N"] for p in xs]
            ex["total"][m] = fit_exponent(ns, [p["total_s"][m] for p in xs])
            ex["kernel"][m] = fit_exponent(ns, [p["kernel_s"][m] for p in xs])
            ex["closed_form"][m] = fit_exponent(ns, [p["closed_form_s"][m] for p in xs])
    ex["layer_kernels"]["NT"] = fit_exponent([p["N"] for p in big], [p["layer_kernels_s"] for p in big])
    res["exponents"] = ex
    load_end = load_average()
    note = f"OpenBLAS threads {threads or 'default'}"
    res["config"] = {"profile": profile, **{k: list(v) if isinstance(v, tuple) else v for k, v in prof.items()},
                     "depth": DEPTH, "in_dim_part_a": IN_DIM_A, "in_dim_part_b": IN_DIM_B, "out_dim": OUT_DIM,
                     "nominal_width": WIDTH, "activation": "relu", "bias": True, "pattern": PATTERN,
                     "blas_threads": threads, "blas_note": note, "load_average_start": load_start,
                     "load_average_end": load_end, "cpu_count": os.cpu_count()}
    rows = res["part_a"]["rows"]
    worst_time = max(r["ours_discrete_s"] for r in rows)
    worst_ratio = max(max(r["ratio_discrete_over_nt"], r["ratio_continuous_over_nt"]) for r in rows)
    worst_diff = max(r["max_rel_diff_vs_nt"] for r in rows)
    exp_exact = ex["total"].get("exact", float("nan"))
    targets = [
        {"name": f"closed form, {prof['steps']} steps, N={prof['n_a']}, slowest method [s]", "value": worst_time,
         "target": "<= 5", "met": worst_time <= 5.0},
        {"name": "closed form / NT gradient_descent_mse, worst method", "value": worst_ratio, "target": "<= 1.5",
         "met": worst_ratio <= 1.5},
        {"name": "closed form == NT (max rel diff)", "value": worst_diff, "target": "<= 1e-8",
         "met": worst_diff <= 1e-8},
        {"name": f"fitted exponent of exact (kernel + dynamics) over N ∈ {res['exponent_range']}",
         "value": exp_exact, "target": "≈ 3 (2.5..3.5)", "met": bool(2.5 <= exp_exact <= 3.5)},
    ]
    table = "\n".join([tables(res), ""] + targets_lines(targets)
                      + [f"peak RSS, largest case (N={pts[-1]['N']}): {pts[-1]['peak_rss_mb']:.0f} MB",
                         f"load average at start {load_start}, at end {load_end}; {note}; wall {wall:.0f} s"])
    res["targets"] = targets
    fig = make_figure(res)
    png, js = plotting.save(fig, NAME, res, out_dir=out_dir, config=res["config"], wall_time=wall)
    return {"name": NAME, "png": png, "json": js, "table": table, "wall_time_s": wall, "targets": targets,
            "ok": worst_diff <= 1e-8,
            "ratios": {"closed_form_over_nt": {r["method"]: r["ratio_discrete_over_nt"] for r in rows},
                       "exponents": ex},
            "peak_rss_mb": {f"N={pts[-1]['N']}": pts[-1]["peak_rss_mb"]}, "load_average": [load_start, load_end]}


def main(argv=None) -> int:
    return bench_main(__doc__, NAME, run, CASES, argv, quick_help="N ≤ 2048 in part B (minutes)")


if __name__ == "__main__":
    sys.exit(main())
