"""Continual learning (issue 15, "Performance"): forgetting predicted from cross-task Gram kernels vs the same
prediction from dense Jacobians, and one projected training step vs a plain one.

Part A — the one-step forgetting J_A d of exact NGD (ρ = 1e-3) with the projections none, ogd and ong, at N per
task (full: N = 256 per task, M = 1024, L = 3; P ≈ 1.07M), C = 1:
* kernel route: ``ntk_ngd.continual.projected_kernels`` (per-layer features, N-sized Grams, push-through), then
  the forgetting kernel applied to r_B;
* dense route: the explicit Jacobian J_R (2N × P, ``jax.jacrev`` in row chunks, float64), Θ = J_RJ_Rᵀ, and the same
  push-through formulas on Θ (K = [Θ − Θ_RB(Θ_BB + Nρ)⁻¹Θ_BR]/(Nρ)); the P×P metric is never formed (it would be
  9 TB), so this is the cheapest dense-Jacobian computation, and the ratio measures what the Gram form saves.
Both must agree (max relative difference ≤ 1e-8); the ratio is dense time / kernel time.

Part B — one parameter-space step at width M = 4096 (full; P ≈ 16.9M), N = 64 samples of task B, N_A = 64 stored
rows of task A: the plain exact-NGD direction (the method's Gram-form ``direction``) vs the projected one (``ong``
and ``ogd``: ``ntk_ngd.continual.training``), both jit-compiled, median of repeats. Target: projected ≤ 2× plain.

    python benchmarks/bench_continual.py [--quick|--tiny]

Writes figures/bench_continual.png and .json (ntk_ngd.plotting.save).
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
from ntk_ngd import continual, losses, methods, plotting
from ntk_ngd.continual import training as _training
from ntk_ngd.damping import Damping
from ntk_ngd.kernels import LayerKernels, layer_features
from ntk_ngd.networks import mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import bench_main, blas_limit, in_subprocess, rel, start_run, targets_lines, timed  # noqa: E402

NAME = "bench_continual"
DEPTH, IN_DIM, RHO = 3, 16, 1e-3
PROJECTIONS = ("none", "ogd", "ong")

PROFILES = {
    "tiny": dict(n=32, width=128, step_width=256, step_n=16, repeats=1, chunk=32),
    "quick": dict(n=128, width=512, step_width=2048, step_n=64, repeats=3, chunk=64),
    "full": dict(n=256, width=1024, step_width=4096, step_n=64, repeats=3, chunk=32),
}


def _problem(n: int, width: int, seed: int = 0):
    net = mlp(depth=DEPTH, width=width, in_dim=IN_DIM, out_dim=1, activation="relu", bias=True)
    XA, _ = ntk_ngd.datasets.synthetic(n=n, in_dim=IN_DIM, out_dim=1, seed=seed)
    XB, YB = ntk_ngd.datasets.synthetic(n=n, in_dim=IN_DIM, out_dim=1, seed=seed + 1)
    return net, net.init(seed), np.asarray(XA, float), np.asarray(XB, float), np.asarray(YB, float)


# ---------------------------------------------------------------------------------------------
# part A
# ---------------------------------------------------------------------------------------------
def _kernel_route(net, params, XA, XB, r):
    kernels = continual.kernels.every_projection(net, XA, XB, "exact", PROJECTIONS, params=params, damping=RHO)
    return {p: np.asarray(k.forgetting @ r) for p, k in kernels.items()}


def _dense_jacobian(net, params, X, chunk: int):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    jac = jax.jit(jax.jacrev(lambda t, x: net.apply(unravel(t), x).reshape(-1)))
    return np.concatenate([np.asarray(jac(flat, jnp.asarray(X[i:i + chunk]))) for i in range(0, len(X), chunk)])


def _dense_route(net, params, XA, XB, r, chunk: int):
    """The same forgetting from the explicit Jacobian: Θ = J_RJ_Rᵀ and the push-through formulas on it."""
    J = _dense_jacobian(net, params, np.concatenate([XB, XA]), chunk)
    theta = J @ J.T
    del J
    n = len(XB)
    B, A = slice(0, n), slice(n, None)
    solve = np.linalg.solve(theta[B, B] + n * RHO * np.eye(n), theta[B])  # (Θ_BB + Nρ)⁻¹Θ_BR
    K = (theta - theta[:, B] @ solve) / (n * RHO)  # J_R M⁻¹ J_Rᵀ/N
    step = K[:, B]
    hat = theta / n
    out = {"none": step[A] @ r}
    out["ogd"] = (step[A] - hat[A, A] @ np.linalg.solve(hat[A, A], step[A])) @ r
    out["ong"] = (step[A] - K[A, A] @ np.linalg.solve(K[A, A], step[A])) @ r
    return out


def case_forgetting(n: int, width: int, repeats: int, chunk: int) -> dict:
    net, params, XA, XB, YB = _problem(n, width)
    r = (np.asarray(net.apply(params, XB)) - YB).reshape(-1)
    tk, _, kern = timed(lambda: _kernel_route(net, params, XA, XB, r), repeats)
    td, _, dense = timed(lambda: _dense_route(net, params, XA, XB, r, chunk), 1, warmup=False)
    plain = np.max(np.abs(dense["none"]))
    diffs = {p: float(np.max(np.abs(kern[p] - dense[p])) / plain) for p in PROJECTIONS}
    out = {"N": n, "M": width, "P": net.num_params, "kernel_s": tk, "dense_s": td, "rel_diff": diffs,
           "forgetting_norm": {p: float(np.linalg.norm(kern[p])) for p in PROJECTIONS}}
    print(f"    A N={n} M={width} P={net.num_params}: kernels {tk:.2f} s, dense Jacobian {td:.1f} s "
          f"({td / tk:.0f}x), max diff {max(diffs.values()):.1e}", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# part B
# ---------------------------------------------------------------------------------------------
def case_step(n: int, width: int, repeats: int) -> dict:
    net, params, XA, XB, YB = _problem(n, width)
    spec = methods.get("exact")
    opts, damping = spec.normalise_options({}, net.depth), Damping.of(RHO)
    stored = continual.store(net, params, XA)
    Xj, Yj = jnp.asarray(XB), jnp.asarray(YB)

    @jax.jit
    def plain(params):
        inputs, deltas, f = layer_features(net, params, Xj, with_outputs=True)
        ctx = methods.Context(n, damping, opts, None, jnp.reshape(losses.MSE.whiten(f, Yj).u, (-1,)))
        return spec.direction(LayerKernels.from_features(inputs, deltas), ctx)

    out = {"N": n, "N_stored": len(XA), "M": width, "P": net.num_params}
    out["plain_s"], _, _ = timed(lambda: plain(params), repeats)
    for p in ("ogd", "ong"):
        out[f"{p}_s"], _, _ = timed(lambda p=p: _training._direction(
            params, Xj, Yj, stored, damping, damping, 0, None, net=net, method="exact", projection=p, opts=opts,
            rcond=None)[0], repeats)
    print(f"    B M={width} P={net.num_params}: plain {out['plain_s']:.3f} s, ogd {out['ogd_s']:.3f} s, "
          f"ong {out['ong_s']:.3f} s", file=sys.stderr, flush=True)
    return out


CASES = {"forgetting": case_forgetting, "step": case_step}


def make_figure(res: dict):
    a, b = res["part_a"], res["part_b"]
    fig, axes = plotting.figure(1, 2, figsize=(11, 4.6), title=f"Continual learning, exact NGD, L = {DEPTH}, "
                                f"ρ = {RHO:g}, float64, CPU")
    ax = axes[0]
    ax.bar([0, 1], [a["kernel_s"], a["dense_s"]], color=plotting.COLORS[:2])
    ax.set_xticks([0, 1], ["Gram kernels\n(features)", "dense Jacobian\n(J Jᵀ)"])
    ax.set_yscale("log")
    ax.set_ylabel("time [s]")
    ax.set_title(f"(A) forgetting J_A d (none, ogd, ong): N = {a['N']}/task, M = {a['M']}, P = {a['P']:,}: "
                 f"{a['dense_s'] / a['kernel_s']:.0f}×", fontsize=9)
    ax = axes[1]
    keys = ["plain_s", "ogd_s", "ong_s"]
    ax.bar(range(3), [b[k] for k in keys], color=plotting.COLORS[:3])
    ax.set_xticks(range(3), ["plain NGD", "ogd-projected", "ong-projected"])
    ax.set_ylabel("time per step [s] (median)")
    ax.axhline(2 * b["plain_s"], color="k", ls=":", label="2× plain (target)")
    ax.legend(fontsize=8)
    ax.set_title(f"(B) one step, M = {b['M']}, P = {b['P']:,}, N = {b['N']} + {b['N_stored']} stored", fontsize=9)
    return fig


def run(quick: bool = False, out_dir="figures", blas_threads="auto", repeats: int | None = None, log=None,
        profile: str | None = None) -> dict:
    """Run both parts (each in a fresh process: peak RSS per case); write out_dir/bench_continual.{png,json}."""
    log, profile, prof, threads, load_start, t_start = start_run(PROFILES, quick, profile, repeats, blas_threads, log)
    with blas_limit(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        log(f"  part A: forgetting, N={prof['n']} per task, M={prof['width']} (subprocess)")
        a = in_subprocess(__file__, "forgetting", dict(n=prof["n"], width=prof["width"], repeats=prof["repeats"],
                                                       chunk=prof["chunk"]), threads)
        log(f"  part B: one step, M={prof['step_width']} (subprocess)")
        b = in_subprocess(__file__, "step", dict(n=prof["step_n"], width=prof["step_width"],
                                                 repeats=prof["repeats"]), threads)
    wall = time.perf_counter() - t_start
    res = {"part_a": a, "part_b": b, "config": {"profile": profile, **prof, "depth": DEPTH, "in_dim": IN_DIM,
                                                  "damping": RHO, "load_average_start": load_start,
                                                  "cpu_count": os.cpu_count(), "blas_threads": threads}}
    worst = max(a["rel_diff"].values())
    ratio_b = max(b["ogd_s"], b["ong_s"]) / b["plain_s"]
    targets = [
        {"name": "kernel forgetting == dense-Jacobian forgetting (max rel diff)", "value": worst, "target": "<= 1e-8",
         "met": worst <= 1e-8},
        {"name": f"dense-Jacobian / kernel time (N={a['N']}, M={a['M']})", "value": a["dense_s"] / a["kernel_s"],
         "target": "> 1 (reported)", "met": a["dense_s"] > a["kernel_s"]},
        {"name": f"projected / plain step time (M={b['M']})", "value": ratio_b, "target": "<= 2", "met": ratio_b <= 2},
    ]
    res["targets"] = targets
    table = "\n".join([
        f"A. forgetting J_A d, exact NGD, N={a['N']}/task, M={a['M']}, P={a['P']}: kernels {a['kernel_s']:.3f} s, "
        f"dense Jacobian {a['dense_s']:.2f} s ({a['dense_s'] / a['kernel_s']:.0f}x); peak RSS {a['peak_rss_mb']:.0f} MB; "
        "max rel diff " + ", ".join(f"{p} {v:.1e}" for p, v in a["rel_diff"].items()),
        f"B. one step, M={b['M']}, P={b['P']}, N={b['N']} + {b['N_stored']} stored: plain {b['plain_s']:.3f} s, "
        f"ogd {b['ogd_s']:.3f} s ({b['ogd_s'] / b['plain_s']:.2f}x), ong {b['ong_s']:.3f} s "
        f"({b['ong_s'] / b['plain_s']:.2f}x); peak RSS {b['peak_rss_mb']:.0f} MB", ""] + targets_lines(targets)
        + [f"load average at start {load_start}; wall {wall:.0f} s"])
    fig = make_figure(res)
    png, js = plotting.save(fig, NAME, res, out_dir=out_dir, config=res["config"], wall_time=wall)
    return {"name": NAME, "png": png, "json": js, "table": table, "wall_time_s": wall, "targets": targets,
            "ok": worst <= 1e-8, "ratios": {"dense_over_kernel": a["dense_s"] / a["kernel_s"],
                                            "projected_over_plain": ratio_b}}


def main(argv=None) -> int:
    return bench_main(__doc__, NAME, run, CASES, argv, quick_help="N = 128, M = 512; step at M = 2048 (minutes)")


if __name__ == "__main__":
    sys.exit(main())
