"""Per-layer NTK blocks: Gram form vs neural-tangents vs a dense Jacobian, side by side.

For an MLP with L = 3 Dense layers, width M, N inputs, C = 1, float64 on CPU, time

* ``gram``       ntk_ngd.layer_kernels(net, X, params=params): Θ_l = K^H_l ⊙ K^Δ_l from one
                 forward and one backward pass (no Jacobian);
* ``nt1_layers`` NT ``empirical_ntk_fn`` implementation 1 (Jacobian contraction), one call per
                 layer on the network as a function of that layer's (W, b) only, cost summed;
* ``nt2_layers`` the same with implementation 2 (NTK-vector products);
* ``nt1_full`` / ``nt2_full``  NT's full NTK Θ = Σ_l Θ_l in one call (for reference: it does
                 not give the blocks);
* ``dense``      jax.jacrev of f w.r.t. all parameters, then J_l J_lᵀ per layer.

Every function is jit-compiled and run once before timing (warm-up); the time is the median
of ``--repeats`` runs, each ending in ``block_until_ready``. In the same run every method's
result is compared with the Gram form (max |A − B| / max |B|).

    python benchmarks/bench_kernels.py            # N ∈ {64, 256}, M ∈ {256, 1024}
    python benchmarks/bench_kernels.py --quick    # N ∈ {32, 64}, M ∈ {128, 256}

Writes figures/bench_kernels.png and figures/bench_kernels.json (ntk_ngd.plotting.save).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
from neural_tangents import stax

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import plotting
from ntk_ngd.kernels import layer_kernels
from ntk_ngd.networks import mlp

METHODS = ("gram", "nt1_layers", "nt2_layers", "dense", "nt1_full", "nt2_full")
LABELS = {
    "gram": "Gram form (ntk_ngd)",
    "nt1_layers": "NT impl 1, per layer (summed)",
    "nt2_layers": "NT impl 2, per layer (summed)",
    "dense": r"dense Jacobian, $J_l J_l^\top$",
    "nt1_full": "NT impl 1, full NTK only",
    "nt2_full": "NT impl 2, full NTK only",
}
DEPTH, IN_DIM, OUT_DIM = 3, 16, 1


def _flat(K):
    n, n2, c, _ = K.shape
    return jnp.transpose(K, (0, 2, 1, 3)).reshape(n * c, n2 * c)


def _timed(fn, repeats):
    """(median seconds, result): one warm-up (compile) call, then ``repeats`` timed calls
    (3 if the warm-up took over 2 s, 2 if over 10 s: the slow references dominate the run)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    warm = time.perf_counter() - t0
    if warm > 10:
        repeats = min(repeats, 2)
    elif warm > 2:
        repeats = min(repeats, 3)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def bench_case(n: int, width: int, repeats: int, skip: set[str]) -> dict:
    net = mlp(depth=DEPTH, width=width, in_dim=IN_DIM, out_dim=OUT_DIM, activation="relu", bias=True)
    params = net.init(seed=0)
    X = jnp.asarray(np.random.default_rng(0).standard_normal((n, IN_DIM)))
    apply_fn = stax.serial(*net.stax_layers)[1]

    def layer_fn(l):
        def f(p_l, x):
            ps = list(params)
            ps[2 * l] = p_l
            return apply_fn(ps, x)
        return f

    times, errors = {}, {}
    t, lk = _timed(lambda: layer_kernels(net, X, params=params).ntk, repeats)
    times["gram"], ref = t, lk
    ref_full = jnp.sum(ref, axis=0)

    for impl in (1, 2):
        key = f"nt{impl}_layers"
        if key not in skip:
            total, blocks = 0.0, []
            for l in range(DEPTH):
                fn = jax.jit(nt.empirical_ntk_fn(layer_fn(l), trace_axes=(), implementation=impl, vmap_axes=0))
                t, K = _timed(lambda fn=fn, l=l: fn(X, None, params[2 * l]), repeats)
                total += t
                blocks.append(_flat(K))
            times[key], errors[key] = total, _rel(jnp.stack(blocks), ref)
        key = f"nt{impl}_full"
        if key not in skip:
            fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), implementation=impl, vmap_axes=0))
            t, K = _timed(lambda fn=fn: fn(X, None, params), repeats)
            times[key], errors[key] = t, _rel(_flat(K), ref_full)

    if "dense" not in skip:
        @jax.jit
        def dense_blocks(params, X):
            jac = jax.jacrev(lambda p: apply_fn(p, X).reshape(-1))(params)  # leaves (N·C, *shape)
            blocks = []
            for l in range(DEPTH):
                leaves = jax.tree_util.tree_leaves(jac[2 * l])
                J = jnp.concatenate([a.reshape(a.shape[0], -1) for a in leaves], axis=1)
                blocks.append(J @ J.T)
            return jnp.stack(blocks)

        t, D = _timed(lambda: dense_blocks(params, X), repeats)
        times["dense"], errors["dense"] = t, _rel(D, ref)

    return {"N": n, "M": width, "P": net.num_params, "times_s": times, "max_rel_err_vs_gram": errors,
            "speedup_vs_gram": {k: v / times["gram"] for k, v in times.items()}}


def make_figure(results, widths, ns):
    fig, axes = plotting.figure(1, len(widths), sharey=True, squeeze=False,
                                title=f"Per-layer NTK blocks, L = {DEPTH}, C = {OUT_DIM}, float64, "
                                f"{jax.devices()[0].platform.upper()}")
    markers = dict(zip(METHODS, "osD^vx"))
    for ax, width in zip(axes[0], widths):
        rows = [r for r in results if r["M"] == width]
        for method in METHODS:
            pts = [(r["N"], r["times_s"][method]) for r in rows if method in r["times_s"]]
            if not pts:
                continue
            x, y = zip(*pts)
            ax.plot(x, y, marker=markers[method], label=LABELS[method],
                    linestyle="--" if method.endswith("_full") else "-",
                    linewidth=2.4 if method == "gram" else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("number of inputs N")
        ax.set_title(f"width M = {width}")
        # speed-up of the Gram form over NT impl 1 (per layer), written next to each point
        for r in rows:
            if "nt1_layers" in r["times_s"]:
                ax.annotate(f"{r['speedup_vs_gram']['nt1_layers']:.0f}×", (r["N"], r["times_s"]["nt1_layers"]),
                            textcoords="offset points", xytext=(6, 6), fontsize=8, color=plotting.COLORS[1])
        ax.margins(x=0.15)
    axes[0][0].set_ylabel("time per call [s] (median)")
    axes[0][0].text(0.02, 0.98, "k× = NT impl 1 per-layer time / Gram-form time", transform=axes[0][0].transAxes,
                    va="top", fontsize=7.5, color=plotting.COLORS[1])
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (N ∈ {32, 64}, M ∈ {128, 256}), 2 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 5, quick 2)")
    p.add_argument("--out-dir", default="figures", help="where to write bench_kernels.{png,json}")
    p.add_argument("--skip", default="", help="comma-separated methods to leave out, e.g. nt2_full")
    p.add_argument("--replot", metavar="JSON", help="redraw the figure from a saved bench_kernels.json "
                   "(no timing; data, config and wall time are kept)")
    args = p.parse_args(argv)
    if args.replot:
        import json

        with open(args.replot, encoding="utf-8") as fh:
            saved = json.load(fh)
        cfg = saved["config"]
        fig = make_figure(saved["data"]["results"], cfg["M"], cfg["N"])
        png, js = plotting.save(fig, "bench_kernels", saved["data"], out_dir=args.out_dir,
                                config={**cfg, "replotted_from": saved["timestamp_utc"]},
                                wall_time=saved["wall_time_s"])
        print(f"redrew {png} and {js} from {args.replot}")
        return 0
    ns, widths = ((32, 64), (128, 256)) if args.quick else ((64, 256), (256, 1024))
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        p.error("--repeats must be >= 1")
    skip = {s for s in args.skip.split(",") if s}
    if unknown := skip - set(METHODS[1:]):
        p.error(f"unknown --skip methods {sorted(unknown)}; choose from {', '.join(METHODS[1:])}")

    cpu = jax.devices("cpu")[0]
    t_start = time.perf_counter()
    results = []
    with jax.default_device(cpu):
        for width in widths:
            for n in ns:
                r = bench_case(n, width, repeats, skip)
                results.append(r)
                print(f"  done N={n} M={width} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    wall = time.perf_counter() - t_start

    cols = [m for m in METHODS if any(m in r["times_s"] for r in results)]
    head = f"{'N':>5} {'M':>5} {'P':>9} | " + " | ".join(f"{m:>17}" for m in cols)
    print(f"time per call in ms (× = slower than the Gram form); L={DEPTH}, C={OUT_DIM}, float64 on "
          f"{cpu.platform}, median of {repeats} (3 for calls > 2 s, 2 for calls > 10 s)")
    print(head)
    print("-" * len(head))
    for r in results:
        cells = []
        for m in cols:
            t = r["times_s"].get(m)
            cells.append(f"{'—':>17}" if t is None else
                         f"{t * 1e3:9.2f} ({r['speedup_vs_gram'][m]:5.1f}×)" if m != "gram" else f"{t * 1e3:17.2f}")
        print(f"{r['N']:>5} {r['M']:>5} {r['P']:>9} | " + " | ".join(cells))
    print("max relative error vs the Gram form:")
    for r in results:
        errs = ", ".join(f"{k} {v:.1e}" for k, v in r["max_rel_err_vs_gram"].items())
        print(f"  N={r['N']:<4} M={r['M']:<5} {errs}")
    worst = max((v for r in results for v in r["max_rel_err_vs_gram"].values()), default=0.0)
    target = [r for r in results if r["N"] == 256 and r["M"] == 1024 and "nt1_layers" in r["times_s"]]
    if target:
        s = target[0]["speedup_vs_gram"]["nt1_layers"]
        print(f"target (Gram ≥ 50× faster than NT impl 1 per layer at N=256, M=1024): {s:.0f}× "
              f"{'MET' if s >= 50 else 'NOT MET'}")

    fig = make_figure(results, widths, ns)
    config = {"quick": args.quick, "repeats": repeats, "depth": DEPTH, "in_dim": IN_DIM, "out_dim": OUT_DIM,
              "activation": "relu", "bias": True, "N": list(ns), "M": list(widths), "skip": sorted(skip),
              "device": str(cpu)}
    png, js = plotting.save(fig, "bench_kernels", {"results": results, "methods": LABELS,
                                                   "worst_rel_err_vs_gram": worst},
                            out_dir=args.out_dir, config=config, wall_time=wall)
    print(f"wrote {png} and {js} ({wall:.0f} s)")
    return 0 if worst <= 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())
