"""Parameter-space NGD training step: time per step vs width for every registered method
(Woodbury / push-through forms, no P×P matrix), the dense reference where it fits, and what the
optax path costs (issues 5, 8, 13 and 16, "Performance").

Methods: every method of the registry (``ntk_ngd.methods.registered()``), with its
``example_options``; residual-dependent methods take their residual from the targets.

Part A — widths M ∈ {256, 512, …, 8192} (quick: ≤ 2048), depth 3 (two hidden layers of width M,
P ≈ M²), N = 64 inputs, C = 1, damping ρ = 1e-3, float64. For each method time one step of
``ntk_ngd.optim.ngd(net, lr, method, damping)`` in a jit-compiled loop body — features, Grams,
solve, Jᵀu and θ + Δθ; warm-up first, then the median of repeats with ``block_until_ready``.
Cost model: the forward/backward passes and Jᵀu are O(N·P), the Grams O(N²·M), the solves depend
on N only (unit-wise: O(M·N³) ∝ P^½; corrected K-FAC: an (N²)-sized solve), so t ∝ P^k with k ≤ 1
— at most linear in P, never the dense P³ — where k is fitted over M ≥ 1024 (quick: M ≥ 512) and
the bound is checked within 3 standard errors of the fit (fixed costs lower k over a finite range,
so the cost model gives no lower bound). Every method runs under a time and memory budget
(``_common.Sweep``); one over it is not tried at larger widths.

Correctness in the same run, at every width: the linearised function step J·Δθ (one jvp) must
equal −η Θ_G(X, X) u from the function-space step ``ntk_ngd.function_space.function_step`` (an
independent code path: kernels from Grams, not the update formulas).

Part B — small widths where the dense reference fits (full: M ∈ {32, 64, 96}, P ≤ 11041;
quick: M ∈ {32, 64}): ``ntk_ngd.reference.parameter_update`` (explicit Jacobian, P×P matrices,
blockwise symmetric solve) vs ``ntk_ngd.training.parameter_update`` side by side: time and
max |Δθ_gram − Δθ_dense| / max |Δθ_dense|.

Part C — optax overhead (issue 16): at one width, one step of ``nn.optim.ngd(...)`` in a user's
jit-compiled loop vs ``nn.train``'s jit-compiled step (``training._step``, called as ``nn.train``
calls it), from the same parameters at the method's own step size, for one method per damping
rule. Both run the same optax transformation; ``nn.train``'s step also evaluates the outputs at
every point (for the trajectory), so the ratio is expected ≤ 1; it is reported without a verdict.

Part D — compilations: a cross-entropy damping sweep of 10 values through ``nn.train`` compiles its
step once per method (issue 13), for one method per damping rule, in a fresh process.

Every part but C runs in subprocesses that report their peak RSS. BLAS threads: see
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
import optax

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import optim, plotting, reference, training
from ntk_ngd.damping import Damping
from ntk_ngd.function_space import function_step
from ntk_ngd.networks import mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (bench_main, blas_limit, compile_target, cross_entropy_problem,  # noqa: E402
                     damping_sweep_compilations, exponent_target, fit_exponent, fit_exponent_with_error,
                     in_subprocess, load_average, memory_cap_gib, method_options, method_records,
                     one_per_damping_rule, registered, rel, reported, start_run, style, sweep_points, target,
                     targets_lines, timed)

NAME = "bench_training"
DEPTH, IN_DIM, OUT_DIM = 3, 16, 1
DAMPING, LR = 1e-3, 1.0

PROFILES = {
    "tiny": dict(n=16, widths=(64, 128, 256), fit_from=64, dense_widths=(8, 16), optax_width=128,
                 repeats=1, budget_s=30),
    "quick": dict(n=64, widths=(256, 512, 1024, 2048), fit_from=512, dense_widths=(32, 64), optax_width=1024,
                  repeats=3, budget_s=300),
    "full": dict(n=64, widths=(256, 512, 1024, 2048, 4096, 8192), fit_from=1024, dense_widths=(32, 64, 96),
                 optax_width=1024, repeats=5, budget_s=600),
}


def _names() -> list:
    return [s.name for s in registered()]


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
def _problem(n: int, width: int, seed: int = 0):
    net = mlp(depth=DEPTH, width=width, in_dim=IN_DIM, out_dim=OUT_DIM, activation="relu", bias=True)
    params = net.init(seed=seed)
    X, Y = ntk_ngd.datasets.synthetic(n=n, in_dim=IN_DIM, out_dim=OUT_DIM, seed=seed)
    return net, params, np.asarray(X, float), np.asarray(Y, float)


def user_step(net, name: str, lr: float):
    """(optax transformation, jit-compiled loop body): what a JAX user writes around ``nn.optim.ngd``.
    The body returns (new params, new state, Δθ)."""
    tx = optim.ngd(net, lr, name, DAMPING, **method_options(ntk_ngd.methods.get(name)))

    @jax.jit
    def step(params, state, X, Y):
        updates, state = tx.update(None, state, params, batch=(X, Y))
        return optax.apply_updates(params, updates), state, updates

    return tx, step


def _function_step_check(net, params, X, Y, name, delta) -> float:
    """max rel. difference of J·Δθ (jvp) and −η Θ_G(X, X) u (function-space step)."""
    _, jdelta = jax.jvp(lambda p: net.apply(p, jnp.asarray(X)), (params,), (delta,))
    step, _ = function_step(net, X, name, params=params, damping=DAMPING, targets=Y,
                            **method_options(ntk_ngd.methods.get(name)))
    return rel(np.asarray(jdelta).reshape(-1), -LR * np.asarray(step).reshape(-1))


def case_width_point(n: int, width: int, repeats: int, methods_) -> dict:
    """Part A, one width: step time per method, and the function-step check."""
    net, params, X, Y = _problem(n, width)
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)

    def measure(name):
        tx, step = user_step(net, name, LR)
        state = tx.init(params)
        t, runs, (_, _, delta) = timed(lambda: step(params, state, Xj, Yj), repeats)
        check = _function_step_check(net, params, X, Y, name, delta)
        print(f"    A M={width} {name}: {t:.3f} s, step check {check:.1e}", file=sys.stderr, flush=True)
        return {"step_s": t, "runs_s": runs, "function_step_rel_diff": check}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        method_records(methods_, measure)
    return {"M": width, "N": n, "P": net.num_params}


def case_dense_point(n: int, width: int, repeats: int, methods_) -> dict:
    """Part B, one small width: Gram-form update vs the dense reference update."""
    net, params, X, Y = _problem(n, width)

    def measure(name):
        opts = method_options(ntk_ngd.methods.get(name))
        tg, _, dg = timed(lambda: training.parameter_update(net, params, X, Y, name, LR, damping=DAMPING, **opts),
                          repeats)
        td, _, dd = timed(lambda: reference.parameter_update(net, params, X, Y, name, LR, damping=DAMPING, **opts),
                          repeats)
        diff = rel(reference.flatten_params(net, dg), dd)
        print(f"    B M={width} {name}: dense/gram {td / tg:.0f}×, rel diff {diff:.1e}", file=sys.stderr, flush=True)
        return {"gram_s": tg, "dense_s": td, "rel_diff": diff}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        method_records(methods_, measure)
    return {"M": width, "N": n, "P": net.num_params}


def train_step(net, params, X, Y, name: str, lr: float):
    """nn.train's own jit-compiled step (``training._step``: the same optax transformation, then the
    outputs at every point), called as ``nn.train`` calls it for an MSE run without test points."""
    spec = ntk_ngd.methods.get(name)
    opts = spec.normalise_options(method_options(spec), net.depth)
    damping = Damping.of(DAMPING)
    state = training._transformation(net, name, opts, "mse", damping, None, lr).init(params)
    zeros = jnp.zeros(Y.shape)
    return lambda: training._step(params, state, X, Y, zeros, X, zeros, lr, damping, net=net, method=name, opts=opts,
                                  loss_name="mse", rcond=None)


def optax_overhead(n: int, width: int, repeats: int) -> list:
    """Part C: one step of a user's jit-compiled optax loop and one of ``nn.train``'s step, side by side,
    from the same parameters at the method's own step size."""
    net, params, X, Y = _problem(n, width)
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    rows = []
    for spec in one_per_damping_rule(registered()):
        lr = ntk_ngd.train(net, params, X, Y, spec.name, steps=0, damping=DAMPING, **method_options(spec)).lr
        tx, step = user_step(net, spec.name, lr)
        state = tx.init(params)
        t_user, runs_user, (p_user, _, _) = timed(lambda: step(params, state, Xj, Yj), repeats)
        t_train, runs_train, (p_train, _, _) = timed(train_step(net, params, Xj, Yj, spec.name, lr), repeats)
        same = rel(reference.flatten_params(net, p_user), reference.flatten_params(net, p_train))
        rows.append({"method": spec.name, "lr": lr, "user_step_s": t_user, "train_step_s": t_train,
                     "user_runs_s": runs_user, "train_runs_s": runs_train, "user_over_train": t_user / t_train,
                     "new_params_rel_diff": same})
        print(f"    C M={width} {spec.name}: user {t_user * 1e3:.2f} ms/step, nn.train {t_train * 1e3:.2f} ms/step, "
              f"same new params to {same:.1e}", file=sys.stderr, flush=True)
    return rows


def case_compilations() -> dict:
    """Part D (fresh process): new compilations of nn.train's step per cross-entropy damping sweep."""
    net, params, X, labels = cross_entropy_problem()
    counts = damping_sweep_compilations(training._step, lambda spec, rho: ntk_ngd.train(
        net, params, X, labels, spec.name, lr=0.1, steps=3, damping=rho, loss="cross_entropy", **method_options(spec)))
    return {"counts": counts}


CASES = {"width_point": case_width_point, "dense_point": case_dense_point, "compilations": case_compilations}


# ---------------------------------------------------------------------------------------------
# figure and tables
# ---------------------------------------------------------------------------------------------
def make_figure(res: dict):
    fig, axes = plotting.figure(1, 2, figsize=(13.5, 6.2), title=f"One NGD training step (Δθ), L = {DEPTH}, "
                                f"N = {res['part_a'][0]['N']}, ρ = {DAMPING:g}, float64, CPU ({res['config']['blas_note']})")
    pts, d = res["part_a"], res["part_b"]
    ax = axes[0]
    for i, m in enumerate(_names()):
        st = style(i)
        sel = [p for p in pts if m in p["step_s"]]
        if sel:
            k = res["exponents"].get(m)
            ax.plot([p["P"] for p in sel], [p["step_s"][m] for p in sel], **st,
                    label=f"{m} (k = {k:.2f})" if k is not None else m)
        sel = [p for p in d if m in p["dense_s"]]
        if sel:
            dP = [p["P"] for p in sel]
            ax.plot(dP, [p["dense_s"][m] for p in sel], color=st["color"], marker=st["marker"], linestyle=":",
                    alpha=0.8)
            ax.plot(dP, [p["gram_s"][m] for p in sel], color=st["color"], marker=st["marker"], linestyle="-",
                    alpha=0.4)
    Ps = np.array([p["P"] for p in pts], float)
    dP = np.array([p["P"] for p in d], float)
    ref = max(pts[-1]["step_s"].values())
    ax.plot(Ps, ref * Ps / Ps[-1], "k-", linewidth=0.8, label="∝ P")
    dref = max(d[-1]["dense_s"].values())
    ax.plot(dP, dref * (dP / dP[-1]) ** 3, "k:", linewidth=0.8, label="∝ P³ (dense solve)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of parameters P")
    ax.set_ylabel("time per step [s] (median)")
    ax.set_title("Gram/Woodbury forms (solid) vs dense reference (dotted)")
    allP = np.concatenate([dP, Ps])
    widths = [p["M"] for p in d] + [p["M"] for p in pts]
    top = ax.secondary_xaxis("top", functions=(lambda P: P, lambda P: P))
    top.set_xticks(list(allP), [str(m) for m in widths], fontsize=7)
    top.minorticks_off()
    top.set_xlabel("hidden width M")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=6, frameon=False, fontsize=7.5,
               title="time ∝ P^k, k fitted over the largest widths", title_fontsize=8)

    ax = axes[1]
    for i, m in enumerate(_names()):
        sel = [p for p in pts if m in p["step_s"] and "gd" in p["step_s"]]
        if m != "gd" and sel:
            ax.plot([p["M"] for p in sel], [p["step_s"][m] / p["step_s"]["gd"] for p in sel], label=m, **style(i))
    ax.text(0.02, 0.97, "\n".join(f"{r['method']}: optax loop / nn.train step {r['user_over_train']:.2f}"
                                  for r in res["part_c"]), transform=ax.transAxes, va="top", fontsize=7)
    Ms = [p["M"] for p in pts]
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(Ms)
    ax.set_xticklabels([str(v) for v in Ms])
    ax.set_xlabel("hidden width M")
    ax.set_ylabel("step time / gradient step time")
    ax.set_title(f"cost of preconditioning relative to plain gd (text: per-step ratio at M = {res['config']['optax_width']})",
                 fontsize=9)
    return fig


def tables(res: dict) -> str:
    pts = res["part_a"]
    names = [m for m in _names() if any(m in p["step_s"] for p in pts)]
    lines = [f"A. one optax ngd step per method, N={pts[0]['N']}, L={DEPTH}, ρ={DAMPING:g}: time [s] "
             "(in parentheses: / gd)"]
    lines.append(f"{'M':>6} {'P':>10} | " + " | ".join(f"{m:>17}" for m in names) + " | worst J·Δθ check")
    for p in pts:
        gd = p["step_s"].get("gd")
        cells = [(f"{p['step_s'][m]:8.3f} ({p['step_s'][m] / gd:5.2f})" if gd else f"{p['step_s'][m]:17.3f}")
                 if m in p["step_s"] else f"{'—':>17}" for m in names]
        lines.append(f"{p['M']:>6} {p['P']:>10} | " + " | ".join(cells)
                     + f" | {max(p['function_step_rel_diff'].values(), default=float('nan')):.1e}")
    lines.append(f"  fitted exponent t ∝ P^k over M ∈ {res['fit_widths']}: "
                 + ", ".join(f"{m} {v:.2f}±{res['exponent_errors'][m]:.2f}" for m, v in res["exponents"].items()))
    lines += [f"  M={p['M']}: {m}: did not complete: {why}" for p in pts for m, why in p["not_completed"].items()]
    d = res["part_b"]
    lines.append("")
    lines.append(f"B. Gram/Woodbury update vs dense reference (N={d[0]['N']}, ρ={DAMPING:g}): gram [s] / dense [s] "
                 "(dense/gram×, max rel diff of Δθ)")
    for p in d:
        lines.append(f"  M={p['M']:<4} P={p['P']:<6} " + "; ".join(
            f"{m} {p['gram_s'][m]:.3f}/{p['dense_s'][m]:.2f} ({p['dense_s'][m] / p['gram_s'][m]:.0f}×, "
            f"{p['rel_diff'][m]:.0e})" for m in _names() if m in p["gram_s"]))
        lines += [f"    {m}: did not complete: {why}" for m, why in p["not_completed"].items()]
    lines.append("")
    c = res["part_c"]
    lines.append(f"C. optax overhead at M={res['config']['optax_width']}, N={pts[0]['N']}: one nn.optim.ngd step in a "
                 "jit-compiled user loop vs nn.train's jit-compiled step (which also evaluates the outputs)")
    for r in c:
        lines.append(f"  {r['method']:<14} user loop {r['user_step_s'] * 1e3:9.2f} ms   nn.train {r['train_step_s'] * 1e3:9.2f} ms"
                     f"   ratio {r['user_over_train']:5.2f}   (new params equal to {r['new_params_rel_diff']:.0e})")
    lines.append("")
    lines.append("D. cross-entropy damping sweep (10 values) through nn.train: new compilations of its step: "
                 + ", ".join(f"{m} {k}" for m, k in res["compilations"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def run(quick: bool = False, out_dir="figures", blas_threads="auto", repeats: int | None = None, log=None,
        profile: str | None = None) -> dict:
    """Run the benchmark; write out_dir/bench_training.{png,json}; return a summary dict with
    ``table``, ``ratios``, ``targets`` and ``ok`` (updates equal the function-space steps and
    the dense reference to ≤ 1e-8)."""
    log, profile, prof, threads, load_start, t_start = start_run(PROFILES, quick, profile, repeats, blas_threads, log)
    memory_gib = memory_cap_gib()
    res = {}
    with blas_limit(threads):
        sweep = dict(kwargs_of=lambda m: dict(n=prof["n"], width=m, repeats=prof["repeats"]), names=_names(),
                     threads=threads, budget_s=prof["budget_s"], memory_gib=memory_gib, log=log)
        # the width sweep's cost grows at least linearly in M once the O(N·P) passes dominate
        pts = res["part_a"] = sweep_points(__file__, "width_point", prof["widths"], exponent=1.0,
                                           keys=("step_s", "runs_s", "function_step_rel_diff"), **sweep)
        dpts = res["part_b"] = sweep_points(__file__, "dense_point", prof["dense_widths"],
                                            keys=("gram_s", "dense_s", "rel_diff"), **sweep)
        log(f"  part C: optax loop vs nn.train at M={prof['optax_width']}")
        res["part_c"] = optax_overhead(prof["n"], prof["optax_width"], prof["repeats"])
        log("  part D: compilations of a cross-entropy damping sweep (subprocess)")
        res["compilations"] = in_subprocess(__file__, "compilations", {}, threads)["counts"]
    wall = time.perf_counter() - t_start
    fit = [p for p in pts if p["M"] >= prof["fit_from"]]
    res["fit_widths"] = [p["M"] for p in fit]
    fits = {}
    for m in _names():
        sel = [p for p in fit if m in p["step_s"]]
        if len(sel) >= 2:
            fits[m] = fit_exponent_with_error([p["P"] for p in sel], [p["step_s"][m] for p in sel])
    res["exponents"] = {m: k for m, (k, _) in fits.items()}
    res["exponent_errors"] = {m: e for m, (_, e) in fits.items()}
    res["dense_exponents"] = {m: fit_exponent([p["P"] for p in dpts if m in p["dense_s"]],
                                              [p["dense_s"][m] for p in dpts if m in p["dense_s"]]) for m in _names()}
    load_end = load_average()
    note = f"OpenBLAS threads {threads or 'default'}"
    res["config"] = {"profile": profile, **{k: list(v) if isinstance(v, tuple) else v for k, v in prof.items()},
                     "depth": DEPTH, "in_dim": IN_DIM, "out_dim": OUT_DIM, "activation": "relu", "bias": True,
                     "damping": DAMPING, "lr": LR, "methods": _names(),
                     "options": {s.name: method_options(s) for s in registered()}, "memory_limit_gib": memory_gib,
                     "blas_threads": threads, "blas_note": note, "load_average_start": load_start,
                     "load_average_end": load_end, "cpu_count": os.cpu_count()}
    worst_step = max(v for p in pts for v in p["function_step_rel_diff"].values())
    worst_dense = max(v for p in dpts for v in p["rel_diff"].values())
    unchecked = sorted({m for p in dpts for m in p["not_completed"]})
    targets = [
        target("J·Δθ == −η Θ_G u at every width (max rel diff)", worst_step, "<= 1e-8", worst_step <= 1e-8),
        target("Gram-form Δθ == dense reference Δθ (max rel diff)"
               + (f"; not completed: {', '.join(unchecked)}" if unchecked else ""), worst_dense, "<= 1e-8",
               worst_dense <= 1e-8 and not unchecked),
        exponent_target(f"exponent t ∝ P^k over M ∈ {res['fit_widths']}", fits, 1.0,
                        "O(N·P) passes, O(N²·M) Grams, solves independent of P"),
    ] + [reported(f"optax ngd step in a user's jitted loop / nn.train's step, {r['method']} (M={prof['optax_width']})",
                  r["user_over_train"], "the same transformation; nn.train's step also evaluates the outputs")
         for r in res["part_c"]] + [
        compile_target("cross-entropy damping sweep (10 values) through nn.train: its step", res["compilations"])]
    table = "\n".join([tables(res), ""] + targets_lines(targets)
                      + [f"peak RSS, largest case (M={pts[-1]['M']}, P={pts[-1]['P']}): {pts[-1]['peak_rss_mb']:.0f} MB",
                         f"load average at start {load_start}, at end {load_end}; {note}; wall {wall:.0f} s"])
    res["targets"] = targets
    fig = make_figure(res)
    png, js = plotting.save(fig, NAME, res, out_dir=out_dir, config=res["config"], wall_time=wall)
    last = pts[-1]["step_s"]
    return {"name": NAME, "png": png, "json": js, "table": table, "wall_time_s": wall, "targets": targets,
            "ok": worst_step <= 1e-8 and worst_dense <= 1e-8 and not unchecked,
            "ratios": {"over_gd_at_largest_M": {m: t / last["gd"] for m, t in last.items()} if "gd" in last else {},
                       "dense_over_gram": {f"{m}@M={p['M']}": p["dense_s"][m] / p["gram_s"][m]
                                           for p in dpts for m in p["gram_s"]},
                       "exponents_in_P": res["exponents"],
                       "optax_loop_over_train_step": {r["method"]: r["user_over_train"] for r in res["part_c"]},
                       "compilations": res["compilations"]},
            "peak_rss_mb": {f"M={pts[-1]['M']}": pts[-1]["peak_rss_mb"]}, "load_average": [load_start, load_end]}


def main(argv=None) -> int:
    return bench_main(__doc__, NAME, run, CASES, argv, quick_help="M ≤ 2048 (minutes)")


if __name__ == "__main__":
    sys.exit(main())
