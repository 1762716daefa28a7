"""Closed-form function-space dynamics: every fixed-kernel method at N = 1024 vs neural-tangents'
``predict.gradient_descent_mse`` on the same kernel, and time vs N up to 8192 (issues 5 and 8).

Methods: every registered method with a fixed infinite-width kernel, i.e. not residual-dependent,
not random and not finite-width-only (``_common.fixed_kernel``, ``_common.infinite_width``), with
its ``example_options``; the step size is the method's own rule (``Method.step_rule``,
``ntk_ngd.trajectory.default_lr``).

Part A — N = 1024, infinite width (depth 3, ReLU, input dimension 2048 so that every layer's
input Gram has full rank and unit-wise/K-FAC have their infinite-width isotropic kernels). The
per-layer kernels are computed once; for each method its kernel Θ_G(X, X) and Θ_G(X_test, X) (256
test points; a method that has no infinite-width test kernel says so and is timed on the training
points only) are computed once from them, and then 1000 steps (1001 time points, train and test
outputs) are timed:

* ``ours_discrete``   ``ntk_ngd.dynamics.closed_form`` (discrete steps);
* ``ours_continuous`` the same in continuous time (τ = lr·t);
* ``nt``              ``nt.predict.gradient_descent_mse(Θ_G, Y, learning_rate=lr·N)`` and its
                      ``predict_fn(t, …)`` at the same 1001 times (NT divides time by y.size = N,
                      so this is the same flow: the two outputs are compared in the same run).

Target: ≤ 5 s per method after compilation, ratio ours / NT ≤ 1.5. The end-to-end
``ntk_ngd.simulate(..., steps=1000, X_test=...)`` (per-layer kernels included) is timed too.

Part B — time vs N (quick: N ≤ 2048; full: N ≤ 8192): per-layer kernels (infinite width), the
method's kernel from them, and 1000 closed-form steps, each N in its own subprocess (peak RSS per
N). Every method runs under a time and memory budget (``_common.Sweep``: corrected K-FAC's kernel
is an (N²)-sized solve), and one over it is not tried at larger N. The cost model is one
N-sized eigendecomposition (K-FAC, block-diagonal: a few; block-tridiagonal: one of size L·N):
t ∝ N^k with k ≤ 3 for every method, checked within 3 standard errors of the fitted slope over
N ≥ 1024. Above ``warmup_max_n`` every call runs once without a separate warm-up (op-by-op
compilation is < 1 s of a > 1 min call).

Part C — compilations: a cross-entropy damping sweep of 10 values through ``nn.simulate`` (the
step-by-step ``dynamics.scan``) compiles once per method (issue 13), for one method per damping
rule, in a fresh process.

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
from ntk_ngd import plotting
from ntk_ngd.diagnostics import isotropy
from ntk_ngd.dynamics import closed_form, scan, simulate
from ntk_ngd.function_space import method_kernels
from ntk_ngd.kernels import layer_kernels
from ntk_ngd.networks import mlp
from ntk_ngd.trajectory import default_lr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (bench_main, blas_limit, compile_target, cross_entropy_problem,  # noqa: E402
                     damping_sweep_compilations, exponent_target, fit_exponent, fit_exponent_with_error,
                     fixed_kernel, in_subprocess, infinite_width, load_average, log_axes, memory_cap_gib,
                     method_options, method_records, not_completed, peak_rss_mb, registered, rel, run_methods,
                     start_run, style, sweep_points, target, targets_lines, timed)

NAME = "bench_dynamics"
DEPTH, OUT_DIM, WIDTH = 3, 1, 512  # WIDTH: the nominal width unit-wise's infinite-width α uses
IN_DIM_A, IN_DIM_B = 2048, 16

PROFILES = {
    "tiny": dict(n_a=64, n_test=16, steps=100, ns_b=(64, 128, 256), warmup_max_n=256, repeats=1, budget_s=30),
    "quick": dict(n_a=1024, n_test=256, steps=1000, ns_b=(256, 512, 1024, 2048), warmup_max_n=2048, repeats=3,
                  budget_s=300),
    "full": dict(n_a=1024, n_test=256, steps=1000, ns_b=(256, 512, 1024, 2048, 4096, 8192), warmup_max_n=4096,
                 repeats=5, budget_s=600),
}


def _methods() -> list:
    """Every registered method with a fixed infinite-width kernel (closed-form dynamics apply)."""
    return [s.name for s in registered(lambda s: fixed_kernel(s) and infinite_width(s))]


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
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


def _lr(name, K) -> float:
    """The method's step rule on its measured kernel (``default_lr`` without a theory prediction)."""
    return default_lr(ntk_ngd.methods.get(name).step_rule, K)[0]


def case_fixed_kernels(n: int, n_test: int, steps: int, repeats: int, methods_) -> dict:
    """Part A: closed-form ``steps`` steps per method vs NT's gradient_descent_mse on the same kernel."""
    net = mlp(depth=DEPTH, width=WIDTH, in_dim=IN_DIM_A, out_dim=OUT_DIM, activation="relu", bias=True)
    X, Y = ntk_ngd.datasets.synthetic(n=n + n_test, in_dim=IN_DIM_A, out_dim=OUT_DIM, seed=0)
    X, Xt, Y = X[:n], X[n:], jnp.asarray(Y[:n])
    t_lk, _, lk = timed(lambda: layer_kernels(net, X), repeats)
    t_lkt, _, _ = timed(lambda: layer_kernels(net, Xt, X), repeats)
    times = np.arange(steps + 1, dtype=float)

    def measure(name):
        opts = method_options(ntk_ngd.methods.get(name))
        t_k, _, K = timed(lambda: method_kernels(net, X, name, train_kernels=lk, **opts).train, repeats)
        try:
            K_test, train_only = method_kernels(net, X, name, X_test=Xt, train_kernels=lk, **opts).test, None
        except ValueError as err:  # the method has no infinite-width test kernel (its own message)
            K_test, train_only = None, str(err)
        lr = _lr(name, K)
        iso = isotropy(K)
        t_d, _, (fd, _) = timed(lambda: _ours(K, Y, lr, times, K_test, False), repeats)
        t_c, _, (fc, mc) = timed(lambda: _ours(K, Y, lr, times, K_test, True), repeats)
        t_nt, _, (fn, mn) = timed(lambda: _nt_predict(K, Y, lr, times, K_test), repeats)
        diff = rel(fc, fn) if mc is None else max(rel(fc, fn), rel(mc, mn))
        t_sim, _, _ = timed(lambda: simulate(net, X, np.asarray(Y), name, steps=steps,
                                             X_test=None if train_only else Xt, **opts).train_loss, min(repeats, 3))
        loss = 0.5 * np.sum(np.asarray(fd - Y[None]) ** 2, axis=(1, 2)) / n
        print(f"    A {name:<13} closed form {t_d:.3f} s (cont. {t_c:.3f}), NT {t_nt:.3f} s, "
              f"diff {diff:.1e}, simulate {t_sim:.2f} s", file=sys.stderr, flush=True)
        return {"method": name, "alpha": iso.alpha, "deviation": iso.deviation, "lr": lr,
                "kernel_from_grams_s": t_k, "ours_discrete_s": t_d, "ours_continuous_s": t_c, "nt_s": t_nt,
                "ratio_discrete_over_nt": t_d / t_nt, "ratio_continuous_over_nt": t_c / t_nt,
                "max_rel_diff_vs_nt": diff, "simulate_end_to_end_s": t_sim, "test_points": train_only is None,
                "train_only_reason": train_only, "final_loss_over_initial": float(loss[-1] / loss[0])}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        method_records(methods_, measure)
    return {"N": n, "N_test": n_test, "steps": steps, "layer_kernels_s": t_lk, "test_layer_kernels_s": t_lkt}


def case_sweep_point(n: int, steps: int, repeats: int, methods_: list, warmup: bool) -> dict:
    """Part B, one N: per-layer kernels, then per method kernel-from-Grams and closed form."""
    rss_before = peak_rss_mb()  # after the imports (jax, neural-tangents, TensorFlow)
    net = mlp(depth=DEPTH, width=WIDTH, in_dim=IN_DIM_B, out_dim=OUT_DIM, activation="relu", bias=True)
    X, Y = ntk_ngd.datasets.synthetic(n=n, in_dim=IN_DIM_B, out_dim=OUT_DIM, seed=0)
    Y = jnp.asarray(Y)
    t_lk, _, lk = timed(lambda: layer_kernels(net, X), repeats, warmup)
    times = np.arange(steps + 1, dtype=float)

    def measure(name):
        opts = method_options(ntk_ngd.methods.get(name))
        t_k, _, K = timed(lambda: method_kernels(net, X, name, train_kernels=lk, **opts).train, repeats, warmup)
        lr = _lr(name, K)
        t_c, _, _ = timed(lambda: _ours(K, Y, lr, times, None, False)[0], repeats, warmup)
        print(f"    B N={n} {name}: layer kernels {t_lk:.2f} s, kernel {t_k:.2f} s, closed form {t_c:.2f} s",
              file=sys.stderr, flush=True)
        return {"kernel_s": t_k, "closed_form_s": t_c, "total_s": t_lk + t_k + t_c}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        method_records(methods_, measure)
    return {"N": n, "steps": steps, "layer_kernels_s": t_lk, "rss_after_imports_mb": rss_before}


def case_compilations() -> dict:
    """Part C (fresh process): new compilations of ``dynamics.scan`` per cross-entropy damping sweep."""
    net, _, X, labels = cross_entropy_problem()
    counts = damping_sweep_compilations(scan, lambda spec, rho: simulate(
        net, X, labels, spec.name, lr=0.5, steps=3, damping=rho, loss="cross_entropy", **method_options(spec)))
    return {"counts": counts}


CASES = {"fixed_kernels": case_fixed_kernels, "sweep_point": case_sweep_point, "compilations": case_compilations}


# ---------------------------------------------------------------------------------------------
# figure and tables
# ---------------------------------------------------------------------------------------------
def make_figure(res: dict):
    fig, axes = plotting.figure(1, 3, figsize=(15.5, 5.6), title=f"Closed-form dynamics, infinite width, L = {DEPTH}, "
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
    ax.set_xticklabels([r["method"] + ("" if r["test_points"] else "†") for r in rows], rotation=45, ha="right")
    ax.set_ylabel(f"time for {a['steps']} steps [s] (median)")
    ax.set_title(f"A: {a['steps']} steps, N = {a['N']}, {a['N_test']} test points († train only)")
    ax.set_ylim(top=60)
    ax.legend(loc="upper left", fontsize=7)

    pts = res["part_b"]
    ax = axes[1]
    for i, m in enumerate(_methods()):
        sel = [p for p in pts if m in p["total_s"]]
        if sel:
            ax.plot([p["N"] for p in sel], [p["total_s"][m] for p in sel], label=m, **style(i))
    ax.plot([p["N"] for p in pts], [p["layer_kernels_s"] for p in pts], color="0.4", linestyle="--", marker="x",
            linewidth=2.2, label="per-layer kernels alone")
    ns = np.array([p["N"] for p in pts], float)
    ref = max(pts[-1]["total_s"].values(), default=pts[-1]["layer_kernels_s"])
    ax.plot(ns, ref * (ns / ns[-1]) ** 3, "k:", linewidth=1, label="∝ N³")
    log_axes(ax, ns, "number of inputs N", "time [s]")
    ax.set_title(f"B: layer kernels + Θ_G + {pts[0]['steps']} steps vs N")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=7, frameon=False, fontsize=7.5)

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
    lines += [f"  {r['method']}: train only: {r['train_only_reason']}" for r in a["rows"] if not r["test_points"]]
    lines += [f"  {m}: did not complete: {why}" for m, why in a["not_completed"].items()]
    pts = res["part_b"]
    meths = [m for m in _methods() if any(m in p["kernel_s"] for p in pts)]
    lines.append("")
    lines.append("B. time vs N, infinite width: per-layer kernels (LK), then per method Θ_G from them + "
                 f"{pts[0]['steps']} closed-form steps [s]")
    lines.append(f"{'N':>6} {'LK':>8} | " + " | ".join(f"{m + ' Θ_G/steps':>22}" for m in meths)
                 + f" | {'peak RSS':>9}")
    for p in pts:
        cells = [f"{p['kernel_s'][m]:10.2f}/{p['closed_form_s'][m]:<11.2f}" if m in p["kernel_s"] else f"{'—':>22}"
                 for m in meths]
        lines.append(f"{p['N']:>6} {p['layer_kernels_s']:8.2f} | " + " | ".join(cells)
                     + f" | {p['peak_rss_mb']:6.0f} MB")
    ex = res["exponents"]
    lines.append(f"  fitted exponents t ∝ N^k over N ∈ {res['exponent_range']}:")
    for part, d in ex.items():
        lines.append(f"    {part:<12} " + ", ".join(f"{m} {v:.2f}" for m, v in d.items()))
    fails = [f"    N={p['N']}: {m}: {why}" for p in pts for m, why in p["not_completed"].items()]
    lines += (["  did not complete:"] + fails) if fails else []
    lines.append("")
    lines.append("C. cross-entropy damping sweep (10 values) through simulate: new compilations of dynamics.scan: "
                 + ", ".join(f"{m} {c}" for m, c in res["compilations"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run(quick: bool = False, out_dir="figures", blas_threads="auto", repeats: int | None = None, log=None,
        profile: str | None = None) -> dict:
    """Run the benchmark; write out_dir/bench_dynamics.{png,json}; return a summary dict with
    ``table``, ``ratios``, ``targets`` and ``ok`` (closed form == NT to ≤ 1e-8)."""
    log, profile, prof, threads, load_start, t_start = start_run(PROFILES, quick, profile, repeats, blas_threads, log)
    memory_gib = memory_cap_gib()
    res = {}
    with blas_limit(threads):
        log(f"  part A: {prof['steps']} steps of every fixed-kernel method at N={prof['n_a']} (subprocess)")
        shared, records = run_methods(__file__, "fixed_kernels", dict(n=prof["n_a"], n_test=prof["n_test"],
                                                                      steps=prof["steps"], repeats=prof["repeats"]),
                                      _methods(), threads, budget_s=prof["budget_s"], memory_gib=memory_gib, log=log)
        res["part_a"] = {**shared, "rows": [r for r in records.values() if r["completed"]],
                         "not_completed": not_completed(records)}
        pts = res["part_b"] = sweep_points(
            __file__, "sweep_point", prof["ns_b"], lambda n: dict(n=n, steps=prof["steps"], repeats=prof["repeats"],
                                                                  warmup=n <= prof["warmup_max_n"]),
            _methods(), ("kernel_s", "closed_form_s", "total_s"), threads, budget_s=prof["budget_s"],
            memory_gib=memory_gib, exponent=2.0, log=log)
        log("  part C: compilations of a cross-entropy damping sweep (subprocess)")
        res["compilations"] = in_subprocess(__file__, "compilations", {}, threads)["counts"]
    wall = time.perf_counter() - t_start
    big = [p for p in pts if p["N"] >= 1024]
    big = big if len(big) >= 2 else pts
    res["exponent_range"] = [p["N"] for p in big]
    ex = {"total": {}, "kernel": {}, "closed_form": {}, "layer_kernels": {}}
    fits = {}
    for m in _methods():
        xs = [p for p in big if m in p["total_s"]]
        if len(xs) >= 2:
            ns = [p["N"] for p in xs]
            fits[m] = fit_exponent_with_error(ns, [p["total_s"][m] for p in xs])
            ex["total"][m] = fits[m][0]
            ex["kernel"][m] = fit_exponent(ns, [p["kernel_s"][m] for p in xs])
            ex["closed_form"][m] = fit_exponent(ns, [p["closed_form_s"][m] for p in xs])
    ex["layer_kernels"]["infinite width"] = fit_exponent([p["N"] for p in big], [p["layer_kernels_s"] for p in big])
    res["exponents"] = ex
    res["exponent_errors"] = {m: e for m, (_, e) in fits.items()}
    load_end = load_average()
    note = f"OpenBLAS threads {threads or 'default'}"
    res["config"] = {"profile": profile, **{k: list(v) if isinstance(v, tuple) else v for k, v in prof.items()},
                     "depth": DEPTH, "in_dim_part_a": IN_DIM_A, "in_dim_part_b": IN_DIM_B, "out_dim": OUT_DIM,
                     "nominal_width": WIDTH, "activation": "relu", "bias": True, "methods": _methods(),
                     "options": {m: method_options(ntk_ngd.methods.get(m)) for m in _methods()},
                     "memory_limit_gib": memory_gib, "blas_threads": threads, "blas_note": note,
                     "load_average_start": load_start, "load_average_end": load_end, "cpu_count": os.cpu_count()}
    rows = res["part_a"]["rows"]
    worst_time = max(r["ours_discrete_s"] for r in rows)
    worst_ratio = max(max(r["ratio_discrete_over_nt"], r["ratio_continuous_over_nt"]) for r in rows)
    worst_diff = max(r["max_rel_diff_vs_nt"] for r in rows)
    targets = [
        target(f"closed form, {prof['steps']} steps, N={prof['n_a']}, slowest method [s]", worst_time, "<= 5",
               worst_time <= 5.0),
        target("closed form / NT gradient_descent_mse, worst method", worst_ratio, "<= 1.5", worst_ratio <= 1.5),
        target("closed form == NT (max rel diff)", worst_diff, "<= 1e-8", worst_diff <= 1e-8),
        exponent_target(f"fitted exponent t ∝ N^k (kernel + dynamics) over N ∈ {res['exponent_range']}", fits, 3.0,
                        "one N-sized eigendecomposition per kernel"),
        compile_target("cross-entropy damping sweep (10 values) through nn.simulate: dynamics.scan",
                       res["compilations"]),
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
                       "exponents": ex, "compilations": res["compilations"]},
            "peak_rss_mb": {f"N={pts[-1]['N']}": pts[-1]["peak_rss_mb"]}, "load_average": [load_start, load_end]}


def main(argv=None) -> int:
    return bench_main(__doc__, NAME, run, CASES, argv, quick_help="N ≤ 2048 in part B (minutes)")


if __name__ == "__main__":
    sys.exit(main())
