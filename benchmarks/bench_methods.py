"""Function-space kernels Θ_G of every registered method: Gram form vs the dense parameter-space
reference, and the Gram form's cost vs N and vs width (issue 4, "Performance").

Methods: every method of the registry (``ntk_ngd.methods.registered()``), with its
``example_options``; methods that depend on the residual get the MSE residual f − Y at init.

Part A — Gram form vs dense reference, side by side in one run. At the largest P the dense
reference handles in reasonable time (full: depth 3, M = 64, P = 5313, N = 64; quick: M = 32,
P = 1633, N = 32), for each method and damping ρ ∈ {1e-3, 0} time

* ``gram``  ``ntk_ngd.method_kernels(net, X, method, params=...)`` (per-layer Grams + method);
* ``dense`` ``ntk_ngd.reference.preconditioned_kernel`` (explicit N×P Jacobian, P×P approximation G,
            blockwise solve / pseudo-inverse), Θ_G = J (G + ρI)⁻¹ Jᵀ / N,

and the max relative difference max|A − B| / max|B| of the two train kernels.

Part B — Gram form at width M = 4096 for N ∈ {64, …, 1024} (quick: N ≤ 256): the per-layer
Grams (``layer_kernels``) and, separately, the kernel-from-Grams part (``method_kernels(...,
train_kernels=precomputed)``); then at fixed N (full 256, quick 128) M ∈ {256, 1024, 4096}. The
from-Grams part of a method whose kernel reads only the per-layer N×N Grams cannot depend on the
width; which methods those are is measured, not listed: a method reads the per-unit features
(unit-wise: one N×N Gram per unit, O(M·N³); diag: one weight per parameter) when its kernel computed
from the Grams alone (features dropped) raises or differs from the full one (:func:`reads_features`).

Costs differ by orders of magnitude between methods (corrected K-FAC solves an (N·C)²-sized system),
so every method runs at every size under a time and memory budget (``_common.run_methods``,
``_common.Sweep``); one over it is shown as "did not complete", with the reason, and is not tried at
larger sizes.

Every function is run once before timing (warm-up: jit compilation); the time is the median of
``--repeats`` runs ending in ``block_until_ready`` (fewer for slow calls). Part A and every
point of part B run in their own subprocess (same conditions for every point), which reports its
peak RSS (VmHWM; see ``peak_rss_mb``).

BLAS threads: jax's CPU eigendecompositions call LAPACK in scipy's OpenBLAS. On an
oversubscribed machine (load average > cores) multithreaded OpenBLAS spins and an eigh of a
1024×1024 matrix took 13–16 s instead of 0.4–0.5 s (measured), so ``--blas-threads auto``
(default) limits OpenBLAS to 1 thread when the 1-minute load average exceeds the core count;
the choice is recorded in the JSON.

    python benchmarks/bench_methods.py            # full profile
    python benchmarks/bench_methods.py --quick    # minutes

Writes figures/bench_methods.png and figures/bench_methods.json (ntk_ngd.plotting.save).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings

import numpy as np

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import plotting, reference
from ntk_ngd.function_space import method_kernels
from ntk_ngd.kernels import layer_kernels
from ntk_ngd.networks import mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (bench_main, blas_limit, fit_exponent, load_average, log_axes, memory_cap_gib,  # noqa: E402
                     method_options, method_records, not_completed, peak_rss_of, registered, rel, run_methods, short,
                     start_run, style, sweep_points, target, targets_lines, timed)

NAME = "bench_methods"
DEPTH, IN_DIM, OUT_DIM = 3, 16, 1

PROFILES = {
    "tiny": dict(dense_width=8, dense_n=8, dampings=(1e-3, 0.0), width_b=256, ns_b=(16, 32),
                 n_width_sweep=16, widths_sweep=(64, 256), repeats=1, budget_s=30),
    "quick": dict(dense_width=32, dense_n=32, dampings=(1e-3, 0.0), width_b=4096, ns_b=(64, 128, 256),
                  n_width_sweep=128, widths_sweep=(256, 1024, 4096), repeats=3, budget_s=300),
    "full": dict(dense_width=64, dense_n=64, dampings=(1e-3, 0.0), width_b=4096, ns_b=(64, 128, 256, 512, 1024),
                 n_width_sweep=256, widths_sweep=(256, 1024, 4096), repeats=5, budget_s=600),
}


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
def _problem(n: int, width: int, seed: int = 0):
    net = mlp(depth=DEPTH, width=width, in_dim=IN_DIM, out_dim=OUT_DIM, activation="relu", bias=True)
    params = net.init(seed=seed)
    X, Y = ntk_ngd.datasets.synthetic(n=n, in_dim=IN_DIM, out_dim=OUT_DIM, seed=seed)
    residual = np.asarray(net.apply(params, X)) - Y
    return net, params, X, residual


def reads_features(n: int = 6, width: int = 12) -> dict:
    """{method: True when its finite-width kernel needs the per-unit features, not only the per-layer
    Grams}: the kernel from Grams-only kernels (features dropped) raises or differs from the full one."""
    net, params, X, residual = _problem(n, width)
    lk = layer_kernels(net, X, params=params)
    grams_only = dataclasses.replace(lk, deltas=None, deltas2=None, inputs=None, inputs2=None)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for spec in registered():
            opts = method_options(spec, residual)
            full = np.asarray(method_kernels(net, X, spec.name, params=params, train_kernels=lk, **opts).train)
            try:
                bare = np.asarray(method_kernels(net, X, spec.name, params=params, train_kernels=grams_only,
                                                 **opts).train)
                out[spec.name] = bool(rel(bare, full) > 1e-12)
            except ValueError:
                out[spec.name] = True
    return out


def case_dense_vs_gram(width: int, n: int, dampings, repeats: int, methods_) -> dict:
    """Part A: every method × damping, Gram form and dense reference, times and max rel. diff."""
    net, params, X, residual = _problem(n, width)

    def measure(name):
        rows = []
        opts = method_options(ntk_ngd.methods.get(name), residual)
        for damping in dampings:
            tg, tg_all, Kg = timed(lambda: method_kernels(net, X, name, params=params, damping=damping,
                                                          **opts).train, repeats)
            td, td_all, Kd = timed(lambda: reference.preconditioned_kernel(net, params, X, name, damping=damping,
                                                                           **opts)[0], repeats)
            rows.append({"method": name, "damping": damping, "gram_s": tg, "dense_s": td, "gram_runs_s": tg_all,
                         "dense_runs_s": td_all, "dense_over_gram": td / tg, "max_rel_diff": rel(Kg, Kd)})
            print(f"    A {name:<13} rho={damping:g}: gram {tg * 1e3:8.2f} ms, dense {td:8.2f} s, "
                  f"rel diff {rows[-1]['max_rel_diff']:.1e}", file=sys.stderr, flush=True)
        return {"rows": rows}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ρ = 0 pseudo-inverse notes
        method_records(methods_, measure)
    return {"N": n, "M": width, "P": net.num_params}


def case_n_point(n: int, width: int, repeats: int, methods_) -> dict:
    """Part B, one (N, M): Gram time, then per method the kernel-from-Grams time and the total time."""
    net, params, X, residual = _problem(n, width)
    t_grams, _, lk = timed(lambda: layer_kernels(net, X, params=params), repeats)

    def measure(name):
        opts = method_options(ntk_ngd.methods.get(name), residual)
        t_from, _, _ = timed(lambda: method_kernels(net, X, name, params=params, train_kernels=lk, **opts).train,
                             repeats)
        t_total, _, _ = timed(lambda: method_kernels(net, X, name, params=params, **opts).train, min(repeats, 3))
        print(f"    B N={n} M={width} {name}: from grams {t_from:.3f} s, total {t_total:.3f} s", file=sys.stderr,
              flush=True)
        return {"from_grams_s": t_from, "total_s": t_total}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        method_records(methods_, measure)
    return {"N": n, "M": width, "P": net.num_params, "grams_s": t_grams}


CASES = {"dense_vs_gram": case_dense_vs_gram, "n_point": case_n_point}


# ---------------------------------------------------------------------------------------------
# figure and tables
# ---------------------------------------------------------------------------------------------
def _names() -> list:
    return [s.name for s in registered()]


def _sweep_panel(ax, pts, key: str, xlabel: str, features: dict) -> list:
    """Per-layer Grams and every method's kernel-from-Grams time against N or M (* = reads the per-unit
    features)."""
    xs_all = [p[key] for p in pts]
    ax.plot(xs_all, [p["grams_s"] for p in pts], "--o", color="0.45", linewidth=2.6,
            label="per-layer Grams (layer_kernels)")
    for i, m in enumerate(_names()):
        sel = [p for p in pts if m in p["from_grams_s"]]
        if sel:
            ax.plot([p[key] for p in sel], [p["from_grams_s"][m] for p in sel], label=f"{m}{'*' if features[m] else ''} (from Grams)",
                    **style(i))
    log_axes(ax, xs_all, xlabel, "time [s] (median)")
    return xs_all


def make_figure(res: dict):
    fig, axes = plotting.figure(1, 3, figsize=(15.5, 5.4), title=f"Function-space kernels Θ_G, L = {DEPTH}, "
                                f"C = {OUT_DIM}, float64, CPU ({res['config']['blas_note']})")
    ax = axes[0]
    a = res["part_a"]
    rows = [r for r in a["rows"] if r["damping"] == a["rows"][0]["damping"]]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["gram_s"] for r in rows], 0.4, label="Gram form (ntk_ngd)", color=plotting.COLORS[0])
    ax.bar(x + 0.2, [r["dense_s"] for r in rows], 0.4, label="dense P×P reference", color=plotting.COLORS[1])
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([r["method"] for r in rows], rotation=45, ha="right")
    ax.set_ylabel("time per kernel [s] (median)")
    ax.set_title(f"A: Gram vs dense, N = {a['N']}, P = {a['P']}, ρ = {rows[0]['damping']:g}")
    for xi, r in zip(x, rows):
        ax.annotate(f"{r['dense_over_gram']:.0f}×", (xi + 0.2, r["dense_s"]), textcoords="offset points",
                    xytext=(0, 3), ha="center", fontsize=6.5, rotation=90)
    lo = min(r["gram_s"] for r in rows)
    hi = max(r["dense_s"] for r in rows)
    ax.set_ylim(lo / 3, hi * 300)  # room for the ratio labels and the legend above the bars
    ax.legend(loc="upper left", ncols=2, fontsize=7.5)
    ax.text(0.99, 0.84, "labels: dense / Gram", transform=ax.transAxes, ha="right", fontsize=7)

    ax = axes[1]
    pts = res["part_b_n"]
    ns = _sweep_panel(ax, pts, "N", "number of inputs N", res["reads_features"])
    ref = np.array(ns, float)
    y0 = pts[-1]["from_grams_s"].get("exact", pts[-1]["grams_s"])
    ax.plot(ref, y0 * (ref / ref[-1]) ** 3, "k:", linewidth=1, label="∝ N³")
    ax.set_title(f"B: Gram form vs N, width M = {pts[0]['M']}")

    ax = axes[2]
    pts = res["part_b_width"]
    _sweep_panel(ax, pts, "M", "hidden width M", res["reads_features"])
    ax.set_title(f"B: Gram form vs width, N = {pts[0]['N']} (* reads per-unit features)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=6, frameon=False, fontsize=7.5)
    return fig


def _not_completed_lines(pts, key) -> list:
    lines = []
    for p in pts:
        for m, why in p["not_completed"].items():
            lines.append(f"    {key}={p[key]}: {m}: {why}")
    return (["  did not complete:"] + lines) if lines else []


def tables(res: dict) -> str:
    lines = []
    a = res["part_a"]
    lines.append(f"A. Gram form vs dense reference: N={a['N']}, M={a['M']}, P={a['P']}, L={DEPTH} "
                 f"(dense/gram = how many times slower the dense reference is)")
    lines.append(f"{'method':<14}{'rho':>7} {'gram [ms]':>10} {'dense [s]':>10} {'dense/gram':>11} {'max rel diff':>13}")
    for r in a["rows"]:
        lines.append(f"{r['method']:<14}{r['damping']:>7g} {r['gram_s'] * 1e3:10.2f} {r['dense_s']:10.3f} "
                     f"{r['dense_over_gram']:10.0f}× {r['max_rel_diff']:13.1e}")
    lines += [f"    {m}: did not complete: {why}" for m, why in a["not_completed"].items()]
    pts = res["part_b_n"]
    meths = [m for m in _names() if any(m in p["from_grams_s"] for p in pts)]
    lines.append("")
    lines.append(f"B1. Gram form vs N at width M={pts[0]['M']}: per-layer Grams and kernel-from-Grams [s]")
    lines.append(f"{'N':>6} {'P':>9} {'grams':>8} | " + " ".join(f"{m:>13}" for m in meths) + " | peak RSS")
    for p in pts:
        cells = [f"{p['from_grams_s'][m]:13.4f}" if m in p["from_grams_s"] else f"{'—':>13}" for m in meths]
        lines.append(f"{p['N']:>6} {p['P']:>9} {p['grams_s']:8.3f} | " + " ".join(cells)
                     + f" | {p['peak_rss_mb']:6.0f} MB")
    lines.append(f"    fitted exponent t ∝ N^k (N ∈ {res['exponent_range']}): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in res["exponents_n"].items()))
    lines.append(f"    ratio kernel-from-Grams / Grams at N={pts[-1]['N']}: "
                 + ", ".join(f"{m} {pts[-1]['from_grams_s'][m] / pts[-1]['grams_s']:.2f}"
                             for m in meths if m in pts[-1]["from_grams_s"]))
    lines += _not_completed_lines(pts, "N")
    pts = res["part_b_width"]
    lines.append("")
    lines.append(f"B2. Gram form vs width at N={pts[0]['N']} [s]; last column: t(M={pts[-1]['M']}) / t(M={pts[0]['M']}); "
                 "* = reads the per-unit features")
    lines.append(f"{'':>14}" + "".join(f"{'M=' + str(p['M']):>11}" for p in pts) + f"{'ratio':>9}")
    keys = [("grams", None)] + [(m + ("*" if res["reads_features"].get(m) else ""), m) for m in _names()]
    for label, m in keys:
        vals = [p["grams_s"] if m is None else p["from_grams_s"].get(m) for p in pts]
        if any(v is None for v in vals):
            continue
        lines.append(f"{label:>14}" + "".join(f"{v:11.4f}" for v in vals) + f"{vals[-1] / vals[0]:8.2f}×")
    lines += _not_completed_lines(pts, "M")
    lines.append("")
    lines.append("Peak RSS (subprocess, largest case): " + ", ".join(f"{k} {v:.0f} MB" for k, v in res["peak_rss_mb"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run(quick: bool = False, out_dir="figures", blas_threads="auto", repeats: int | None = None, log=None,
        profile: str | None = None) -> dict:
    """Run the benchmark; write out_dir/bench_methods.{png,json}; return a summary dict with
    ``table`` (text), ``ratios``, ``targets`` and ``ok`` (every Gram form equals the dense
    reference at ρ > 0 to ≤ 1e-8)."""
    log, profile, prof, threads, load_start, t_start = start_run(PROFILES, quick, profile, repeats, blas_threads, log)
    memory_gib = memory_cap_gib()
    budget = prof["budget_s"]
    res = {"reads_features": reads_features()}
    with blas_limit(threads):
        log(f"  part A: dense vs Gram at M={prof['dense_width']}, N={prof['dense_n']} (subprocess)")
        shared, records = run_methods(__file__, "dense_vs_gram", dict(width=prof["dense_width"], n=prof["dense_n"],
                                                                      dampings=list(prof["dampings"]),
                                                                      repeats=prof["repeats"]),
                                      _names(), threads, budget_s=budget, memory_gib=memory_gib, log=log)
        res["part_a"] = {**shared, "rows": [row for r in records.values() if r["completed"] for row in r["rows"]],
                         "not_completed": not_completed(records)}
        rss = {f"A dense+gram P={shared['P']}": peak_rss_of(shared, records)}
        # every point in a fresh process (the same conditions for all: no other sizes' compiled
        # code or buffers around), which also gives a peak RSS per point
        sweep = dict(names=_names(), keys=("from_grams_s", "total_s"), threads=threads, budget_s=budget,
                     memory_gib=memory_gib, log=log)
        res["part_b_n"] = sweep_points(__file__, "n_point", prof["ns_b"], lambda n: dict(
            n=n, width=prof["width_b"], repeats=prof["repeats"]), exponent=2.0, **sweep)
        rss[f"B gram N={res['part_b_n'][-1]['N']} M={prof['width_b']}"] = res["part_b_n"][-1]["peak_rss_mb"]
        res["part_b_width"] = sweep_points(__file__, "n_point", prof["widths_sweep"], lambda m: dict(
            n=prof["n_width_sweep"], width=m, repeats=prof["repeats"]), exponent=1.0, **sweep)
    wall = time.perf_counter() - t_start
    res["peak_rss_mb"] = rss
    big = [p for p in res["part_b_n"] if p["N"] >= 256]
    big = big if len(big) >= 2 else res["part_b_n"]
    res["exponent_range"] = [p["N"] for p in big]
    exps = {"grams": fit_exponent([p["N"] for p in big], [p["grams_s"] for p in big])}
    for m in _names():
        xs = [(p["N"], p["from_grams_s"][m]) for p in big if m in p["from_grams_s"]]
        if len(xs) >= 2:
            exps[m] = fit_exponent(*zip(*xs))
    res["exponents_n"] = exps
    load_end = load_average()
    note = f"OpenBLAS threads {threads or 'default'}"
    res["config"] = {"profile": profile, **{k: list(v) if isinstance(v, tuple) else v for k, v in prof.items()},
                     "depth": DEPTH, "in_dim": IN_DIM, "out_dim": OUT_DIM, "activation": "relu", "bias": True,
                     "methods": _names(), "options": {s.name: method_options(s) for s in registered()},
                     "memory_limit_gib": memory_gib, "blas_threads": threads, "blas_note": note,
                     "load_average_start": load_start, "load_average_end": load_end, "cpu_count": os.cpu_count()}
    table = tables(res)

    strict = [r for r in res["part_a"]["rows"] if r["damping"] > 0]
    worst_damped = max(r["max_rel_diff"] for r in strict) if strict else 0.0
    worst_zero = max((r["max_rel_diff"] for r in res["part_a"]["rows"] if r["damping"] == 0), default=0.0)
    wb = res["part_b_width"]
    width_ratio = {m: wb[-1]["from_grams_s"][m] / wb[0]["from_grams_s"][m] for m in _names()
                   if m in wb[0]["from_grams_s"] and m in wb[-1]["from_grams_s"]}
    # the width-independence claim is about kernels computed from the N×N Grams only (measured above)
    flat_methods = [m for m in width_ratio if not res["reads_features"][m]]
    flat_ratio = (sum(wb[-1]["from_grams_s"][m] for m in flat_methods)
                  / sum(wb[0]["from_grams_s"][m] for m in flat_methods)) if flat_methods else float("nan")
    features = [m for m in _names() if res["reads_features"][m]]
    targets = [
        target("Gram == dense at rho > 0 (max rel diff)", worst_damped, "<= 1e-8", worst_damped <= 1e-8),
        target("Gram == dense at rho = 0 (pseudo-inverse; informational)", worst_zero, "<= 1e-6", worst_zero <= 1e-6),
        target(f"kernel-from-Grams time summed over the methods that read only the Grams (all but "
               f"{short(features)}), M={wb[-1]['M']} / M={wb[0]['M']}", flat_ratio, "<= 1.5 (width-independent)",
               flat_ratio <= 1.5),
    ]
    lines = [table, ""] + targets_lines(targets)
    lines.append(f"load average at start {load_start}, at end {load_end}; {note}; wall {wall:.0f} s")
    table = "\n".join(lines)
    res["targets"] = targets
    res["width_ratio_from_grams"] = width_ratio
    fig = make_figure(res)
    png, js = plotting.save(fig, NAME, res, out_dir=out_dir, config=res["config"], wall_time=wall)
    a_rows = res["part_a"]["rows"]
    return {"name": NAME, "png": png, "json": js, "table": table, "wall_time_s": wall, "targets": targets,
            "ok": worst_damped <= 1e-8 and not res["part_a"]["not_completed"],
            "ratios": {"dense_over_gram": {f"{r['method']}@rho={r['damping']:g}": r["dense_over_gram"]
                                           for r in a_rows},
                       "from_grams_width_ratio": width_ratio, "exponents_n": exps},
            "peak_rss_mb": rss, "load_average": [load_start, load_end]}


def main(argv=None) -> int:
    return bench_main(__doc__, NAME, run, CASES, argv, quick_help="small sizes (minutes)")


if __name__ == "__main__":
    sys.exit(main())
