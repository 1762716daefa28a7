"""Per-layer NTK blocks: Gram form vs neural-tangents vs a dense Jacobian, side by side
(issues 3 and 8, "Performance").

For an MLP with L = 3 Dense layers, width M, N inputs, C = 1, float64 on CPU, time

* ``gram``       ntk_ngd.layer_kernels(net, X, params=params): Θ_l = K^H_l ⊙ K^Δ_l from one
                 forward and one backward pass (no Jacobian);
* ``nt1_layers`` NT ``empirical_ntk_fn`` implementation 1 (Jacobian contraction), one call per
                 layer on the network as a function of that layer's (W, b) only, cost summed;
* ``nt2_layers`` the same with implementation 2 (NTK-vector products);
* ``nt1_full`` / ``nt2_full``  NT's full NTK Θ = Σ_l Θ_l in one call of
                 ``empirical_ntk_fn(net.apply, trace_axes=(), vmap_axes=0, implementation=1|2)`` on the
                 network's own ``apply`` (a JAX function; for reference: it does not give the blocks —
                 issue 13 asks for this ratio at N = 256, M = 1024);
* ``dense``      jax.jacrev of f w.r.t. all parameters, then J_l J_lᵀ per layer.

Every reference differentiates ``net.apply`` itself. Every (N, M, method) runs in its own Python
process under an address-space limit of ``--memory-gib`` GiB (default 24, capped at 90 % of this
machine's RAM) and a wall-clock limit (``_common.run_methods``); a method that runs out of memory
or time is recorded as "did not complete", with the reason, and is not tried at a larger N for the
same M. The Gram form's result of the same size
is saved to disk and every other method is compared with it (max |A − B| / max |B|). Timing:
jit-compiled, one warm-up call, median of ``--repeats``; peak RSS per process (VmHWM).

    python benchmarks/bench_kernels.py            # N ∈ {64, 256, 1024}, M ∈ {256, 1024, 4096}
    python benchmarks/bench_kernels.py --quick    # N ∈ {64, 256},  M ∈ {256, 1024}
    python benchmarks/bench_kernels.py --tiny     # seconds (smoke test)

Writes figures/bench_kernels.png and figures/bench_kernels.json (ntk_ngd.plotting.save).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import plotting
from ntk_ngd.kernels import layer_kernels
from ntk_ngd.networks import mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (case_main, default_log, load_average, memory_cap_gib, method_records, peak_rss_mb,  # noqa: E402
                     profile_config, rel, reported, run_methods, target, targets_lines, timed)

NAME = "bench_kernels"
METHODS = ("gram", "nt1_layers", "nt2_layers", "dense", "nt1_full", "nt2_full")
LABELS = {
    "gram": "Gram form (ntk_ngd)",
    "nt1_layers": "NT impl 1, per layer (summed)",
    "nt2_layers": "NT impl 2, per layer (summed)",
    "dense": r"dense Jacobian, $J_l J_l^\top$",
    "nt1_full": "NT impl 1 on net.apply, full NTK only",
    "nt2_full": "NT impl 2 on net.apply, full NTK only",
}
DEPTH, IN_DIM, OUT_DIM = 3, 16, 1
PROFILES = {
    # apply_point: the (N, M) of the NT-on-net.apply ratio (issue 13: N = 256, M = 1024)
    "tiny": dict(ns=(16, 32), widths=(64, 128), repeats=1, timeout=300, apply_point=(32, 128)),
    "quick": dict(ns=(64, 256), widths=(256, 1024), repeats=2, timeout=600, apply_point=(256, 1024)),
    "full": dict(ns=(64, 256, 1024), widths=(256, 1024, 4096), repeats=3, timeout=600, apply_point=(256, 1024)),
}


def _flat(K):
    n, n2, c, _ = K.shape
    return jnp.transpose(K, (0, 2, 1, 3)).reshape(n * c, n2 * c)


def _problem(n, width):
    net = mlp(depth=DEPTH, width=width, in_dim=IN_DIM, out_dim=OUT_DIM, activation="relu", bias=True)
    X = jnp.asarray(np.random.default_rng(0).standard_normal((n, IN_DIM)))
    return net, net.init(seed=0), X


def _method_fn(method, net, params, X):
    """A zero-argument function computing the per-layer blocks (L, N, N) or the full NTK (N, N)."""
    apply_fn = net.apply  # a JAX function: every reference differentiates the network itself
    if method == "gram":
        return lambda: layer_kernels(net, X, params=params).ntk
    if method.endswith("_full"):
        fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), implementation=int(method[2]), vmap_axes=0))
        return lambda: _flat(fn(X, None, params))
    if method == "dense":
        @jax.jit
        def dense_blocks(params, X):
            jac = jax.jacrev(lambda p: apply_fn(p, X).reshape(-1))(params)  # leaves (N·C, *shape)
            blocks = []
            for l in range(DEPTH):
                J = jnp.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree_util.tree_leaves(jac[2 * l])], 1)
                blocks.append(J @ J.T)
            return jnp.stack(blocks)
        return lambda: dense_blocks(params, X)

    def layer_fn(l):  # the network as a function of layer l's (W, b) only
        def f(p_l, x):
            ps = list(params)
            ps[2 * l] = p_l
            return apply_fn(ps, x)
        return f

    fns = [jax.jit(nt.empirical_ntk_fn(layer_fn(l), trace_axes=(), implementation=int(method[2]), vmap_axes=0))
           for l in range(DEPTH)]
    return lambda: jnp.stack([_flat(fn(X, None, params[2 * l])) for l, fn in enumerate(fns)])


def case(n: int, width: int, repeats: int, ref_path: str, methods_) -> dict:
    """One (N, M) point of one method (``methods_`` has one entry), run in its own process."""
    rss_imports = peak_rss_mb()
    net, params, X = _problem(n, width)

    def measure(method):
        t, runs, out = timed(_method_fn(method, net, params, X), repeats)
        out = np.asarray(out)
        if method == "gram":
            np.save(ref_path, out)
            err = 0.0
        else:
            ref = np.load(ref_path)
            err = rel(out, ref.sum(axis=0) if method.endswith("_full") else ref)
        return {"time_s": t, "runs_s": runs, "max_rel_err_vs_gram": err}

    method_records(methods_, measure)
    return {"P": net.num_params, "rss_after_imports_mb": rss_imports}


CASES = {"point": case}


def _num_params(width):
    return mlp(depth=DEPTH, width=width, in_dim=IN_DIM, out_dim=OUT_DIM).num_params


def run_case(method, n, width, repeats, ref_path, memory_gib, timeout) -> dict:
    """``case`` in a fresh Python under an address-space limit and a time limit; failures become records."""
    # what a Jacobian-based reference must hold at least: J = N·C × P float64
    P = _num_params(width)
    head = {"method": method, "N": n, "M": width, "P": P, "jacobian_gib": n * OUT_DIM * P * 8 / 2**30}
    shared, records = run_methods(__file__, "point", dict(n=n, width=width, repeats=repeats, ref_path=ref_path),
                                  [method], None, budget_s=timeout, memory_gib=memory_gib, setup_s=timeout,
                                  log=lambda *a: None)
    return {**head, **shared, **records[method]}


def make_figure(records, widths, ns, memory_gib):
    fig, axes = plotting.figure(1, len(widths), sharey=True, squeeze=False,
                                title=f"Per-layer NTK blocks, L = {DEPTH}, C = {OUT_DIM}, float64, "
                                f"{jax.devices()[0].platform.upper()}; × = did not complete within {memory_gib:.0f} GiB "
                                "/ time limit")
    markers = dict(zip(METHODS, "osD^vx"))
    done = [r for r in records if r["completed"]]
    top = max(r["time_s"] for r in done) * 3
    for ax, width in zip(axes[0], widths):
        for i, method in enumerate(METHODS):
            pts = [(r["N"], r["time_s"]) for r in done if r["M"] == width and r["method"] == method]
            color = plotting.COLORS[i]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker=markers[method], color=color, label=LABELS[method],
                        linestyle="--" if method.endswith("_full") else "-", linewidth=2.4 if method == "gram" else 1.5)
            fails = [r["N"] for r in records if r["M"] == width and r["method"] == method and not r["completed"]]
            if fails:
                ax.plot(fails, [top] * len(fails), marker="x", linestyle="none", color=color, markersize=9)
        for r in done:  # speed-up of the Gram form over NT impl 1 (per layer)
            if r["M"] == width and r["method"] == "nt1_layers" and "speedup" in r:
                ax.annotate(f"{r['speedup']:.0f}×", (r["N"], r["time_s"]), textcoords="offset points",
                            xytext=(6, 6), fontsize=8, color=plotting.COLORS[1])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("number of inputs N")
        ax.set_title(f"width M = {width}")
        ax.margins(x=0.15)
    axes[0][0].set_ylabel("time per call [s] (median)")
    axes[0][0].text(0.02, 0.98, "k× = NT impl 1 per-layer time / Gram-form time", transform=axes[0][0].transAxes,
                    va="top", fontsize=7.5, color=plotting.COLORS[1])
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    return fig


def table(records, ns, widths) -> str:
    lines = [f"time per call [s] (× = slower than the Gram form; — = did not complete); L={DEPTH}, C={OUT_DIM}, "
             "float64, CPU", f"{'N':>5} {'M':>5} | " + " | ".join(f"{m:>18}" for m in METHODS) + " | Gram peak RSS"]
    by = {(r["method"], r["N"], r["M"]): r for r in records}
    for width in widths:
        for n in ns:
            cells = []
            for m in METHODS:
                r = by.get((m, n, width))
                if r is None or not r["completed"]:
                    cells.append(f"{'—':>18}")
                elif m == "gram":
                    cells.append(f"{r['time_s']:18.4f}")
                else:
                    cells.append(f"{r['time_s']:9.3f} ({r['speedup']:6.1f}×)")
            g = by.get(("gram", n, width))
            rss = f"{g['peak_rss_mb']:.0f} MB" if g and g["completed"] else "—"
            lines.append(f"{n:>5} {width:>5} | " + " | ".join(cells) + f" | {rss}")
    fails = [r for r in records if not r["completed"]]
    if fails:
        lines.append("did not complete: " + "; ".join(
            f"{r['method']} N={r['N']} M={r['M']}: {r['reason']} (its N×P Jacobian alone: {r['jacobian_gib']:.1f} GiB)"
            for r in fails))
    errs = [r["max_rel_err_vs_gram"] for r in records if r["completed"] and r["method"] != "gram"]
    lines.append(f"max relative difference of any completed method vs the Gram form: {max(errs, default=0):.1e}")
    return "\n".join(lines)


def run(quick: bool = False, out_dir="figures", repeats: int | None = None, log=None, profile: str | None = None,
        memory_gib: float = 24.0, skip=(), timeout: float | None = None) -> dict:
    """Every (M, N, method) in a memory-limited subprocess; writes out_dir/bench_kernels.{png,json}."""
    log = log or default_log
    profile, prof = profile_config(PROFILES, quick, profile, repeats)
    if timeout is not None:
        prof["timeout"] = float(timeout)
    total_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    memory_gib = memory_cap_gib(memory_gib)
    load_start = load_average()
    t_start = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in prof["widths"]:
            gave_up = set()  # a method that failed at this width is not tried at a larger N
            for n in prof["ns"]:
                ref_path = os.path.join(tmp, f"gram_{n}_{width}.npy")
                for method in METHODS:
                    if method in skip:
                        continue
                    if method in gave_up:
                        records.append({"method": method, "N": n, "M": width, "completed": False,
                                        "reason": "not tried: did not complete at a smaller N",
                                        "jacobian_gib": n * OUT_DIM * _num_params(width) * 8 / 2**30})
                        continue
                    r = run_case(method, n, width, prof["repeats"], ref_path, memory_gib, prof["timeout"])
                    if method == "gram" and not r["completed"]:
                        raise RuntimeError(f"the Gram form failed at N={n}, M={width}: {r['reason']}")
                    if not r["completed"]:
                        gave_up.add(method)
                    records.append(r)
                    log(f"  N={n} M={width} {method}: " + (f"{r['time_s']:.3f} s, {r['peak_rss_mb']:.0f} MB"
                                                           if r["completed"] else r["reason"]))
    wall = time.perf_counter() - t_start
    gram = {(r["N"], r["M"]): r["time_s"] for r in records if r["method"] == "gram"}
    for r in records:
        if r["completed"]:
            r["speedup"] = r["time_s"] / gram[(r["N"], r["M"])]
    worst = max((r["max_rel_err_vs_gram"] for r in records if r["completed"]), default=0.0)
    targets = [target("every completed method equals the Gram form (max rel diff)", worst, "<= 1e-10",
                      worst <= 1e-10)]
    at = {r["method"]: r for r in records if r["N"] == 256 and r["M"] == 1024 and r["completed"]}
    if "nt1_layers" in at:
        targets.append(target("NT impl 1 per layer / Gram form at N=256, M=1024", at["nt1_layers"]["speedup"],
                              ">= 100", at["nt1_layers"]["speedup"] >= 100))
    n_a, m_a = prof["apply_point"]
    on_apply = [r for r in records if (r["N"], r["M"]) == (n_a, m_a) and r["method"] == "nt1_full" and r["completed"]]
    if on_apply:  # issue 13: NT on the network's own apply (a JAX function), full NTK only
        targets.append(reported(f"NT empirical_ntk_fn impl 1 on net.apply (full NTK) / Gram form (per-layer blocks) "
                                f"at N={n_a}, M={m_a}", on_apply[0]["speedup"],
                                "issue 13 asks for the ratio; NT gives only the sum of the blocks"))
    big = [r for r in records if r["N"] == max(prof["ns"]) and r["M"] == max(prof["widths"])]
    completed_big = [r["method"] for r in big if r["completed"]]
    if max(prof["ns"]) >= 1024 and max(prof["widths"]) >= 4096:
        targets.append(target(f"methods completing at N={max(prof['ns'])}, M={max(prof['widths'])} within "
                              f"{memory_gib:.0f} GiB ({', '.join(completed_big)})", len(completed_big),
                              "== 1 (only the Gram form)", completed_big == ["gram"]))
    text = "\n".join([table(records, prof["ns"], prof["widths"]), ""] + targets_lines(targets)
                     + [f"load average at start {load_start}, at end {load_average()}; wall {wall:.0f} s"])
    config = {"profile": profile, **{k: list(v) if isinstance(v, tuple) else v for k, v in prof.items()},
              "depth": DEPTH, "in_dim": IN_DIM, "out_dim": OUT_DIM, "activation": "relu", "bias": True,
              "memory_limit_gib": memory_gib, "physical_memory_gib": total_gib, "skip": sorted(skip),
              "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "load_average_start": load_start}
    fig = make_figure(records, prof["widths"], prof["ns"], memory_gib)
    png, js = plotting.save(fig, NAME, {"records": records, "methods": LABELS, "targets": targets,
                                        "worst_rel_err_vs_gram": worst}, out_dir=out_dir, config=config, wall_time=wall)
    return {"name": NAME, "png": png, "json": js, "table": text, "wall_time_s": wall, "targets": targets,
            "ok": worst <= 1e-10,
            "ratios": {f"{r['method']}@N={r['N']},M={r['M']}": r["speedup"] for r in records
                       if r["completed"] and r["method"] != "gram"},
            "peak_rss_mb": {f"gram N={r['N']} M={r['M']}": r["peak_rss_mb"] for r in big if r["completed"]}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="N ∈ {64, 256}, M ∈ {256, 1024}")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds; numbers meaningless)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 3, quick 2)")
    p.add_argument("--out-dir", default="figures", help="where to write bench_kernels.{png,json}")
    p.add_argument("--memory-gib", type=float, default=24.0, help="address-space limit per case (default 24)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per case (default: the profile's)")
    p.add_argument("--skip", default="", help="comma-separated methods to leave out, e.g. nt2_full")
    p.add_argument("--blas-threads", default="auto", help="accepted for a uniform command line; unused here")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        return case_main(CASES, args.case)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    skip = {s for s in args.skip.split(",") if s}
    if unknown := skip - set(METHODS[1:]):
        p.error(f"unknown --skip methods {sorted(unknown)}; choose from {', '.join(METHODS[1:])}")
    out = run(quick=args.quick, out_dir=args.out_dir, repeats=args.repeats, profile="tiny" if args.tiny else None,
              memory_gib=args.memory_gib, skip=skip, timeout=args.timeout)
    print(out["table"])
    print(f"wrote {out['png']} and {out['json']}")
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
