"""Factored natural-gradient steps on the deep autoencoder, side by side with kfac-jax and optax (issue 21
items 5-6; THEORY.md "kfac-jax side by side").

Net: the KPSVD paper's MNIST autoencoder 784-1000-500-250-30-250-500-1000-784 (full; quick: 784-256-64-16-64-256-784),
ReLU, linear output, MSE to the input, batch 256 of the shipped MNIST images (pixels in [0, 1]), damping ρ = 1e-3.

Part A — agreement with kfac-jax (float64, first batches, conventions of ntk_ngd/peers.py matched: augmented inputs
with σ_b, exact GGN, common readout, π-split damping, no curvature average, lr 0.1, no momentum): the relative
difference of the first step's parameter change, the convention control (the package's default damping rule, √ρ
on each factor, must differ), and the train loss over k steps on consecutive batches (max relative difference).
Part A runs on the digits autoencoder 64-32-16-32-64 (scikit-learn's 8×8 digits, pixels/16, batch 64): kfac-jax's
exact GGN is one reverse pass per output and its compile time grows with C (measured 2.9 s at C = 16, 8.0 s at
C = 64 for one step), so 784 outputs are out of a benchmark's budget; kfac-jax's empirical Fisher, which would be
one pass, is not the package's ``fisher="empirical"`` (they differ by 1.1-5.7x per layer on a 8-16-16-3 net; its
scaling convention was not resolved).

Part B — step time (float32 and float64, jit-compiled, median of repeats after a compiling call): optax SGD
(momentum 0.9) and Adam; kfac-jax (``ggn_curvature_prop``: one sampled output cotangent per input, curvature EMA
0.95) refreshed every step and amortised (inverses every T_INV = 20 steps: mean over T_INV consecutive steps);
the package's factored methods (every registry method with a factored form; ``fisher="sampled"``, one sample,
decay 0.95), refreshed every step and amortised the same way. kpsvd (rank 2) and kfac_cor twice: "CG", the Gram
form's +ρI, solved by PCG at every step (tolerance 1e-5 in float32, the slow ones: timed in float32, refreshed every
step, in a subprocess with a 360 s limit, and in part C not beyond a width where a step took longer than SLOW_S =
10 s); "π", the damping in the first term's factors and the exact two-term inverse (ntk_ngd/factored/two_term.py),
timed like K-FAC. Their Kronecker terms come from the direct sample-Gram SVD (``kron_fit="auto"``).

Part C — step time vs width M (784-M-M-10, float32, batch 256, refresh every step) for every method of part B;
the exponent k of t ∝ M^k fitted over the widths.

Part D — definiteness: per layer of the autoencoder on the first batch, whether the +ρI systems of kpsvd and
kfac_cor are positive definite (PCG meets no direction with pᵀ(Σ + ρI)p ≤ 0), and how many π-split entries
1 + λ_iμ_j ≤ 0 are clipped.

Also the optimiser state's bytes (ours vs kfac-jax) at the autoencoder size.

    python benchmarks/bench_factored.py [--quick] [--repeats R]

Writes figures/bench_factored.png and figures/bench_factored.json (ntk_ngd.plotting.save). Needs the extra
[peers] (kfac-jax) for the kfac-jax rows; without it they are reported as not run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import datasets, methods, peers, plotting
from ntk_ngd.factored import kpsvd
from ntk_ngd.factored import form as factored_form
from ntk_ngd.factored import minibatch
from ntk_ngd.networks import mlp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (bench_main, fit_exponent, in_subprocess, reported, start_run, target,  # noqa: E402
                     targets_lines, timed)

NAME = "bench_factored"
RHO, LR, T_INV, DECAY = 1e-3, 0.1, 20, 0.95
#: the timed steps move the parameters by this learning rate (small, the same for every optimiser: timings are of
#: the step's arithmetic, and no run may reach a non-finite factor that would switch a Cholesky to its fallback)
TIME_LR = 1e-4
PROFILES = {
    "full": {"hidden": [1000, 500, 250, 30, 250, 500, 1000], "batch": 256, "widths": [256, 512, 1024, 2048],
             "agree_steps": 10, "repeats": 3},
    "quick": {"hidden": [256, 64, 16, 64, 256], "batch": 256, "widths": [256, 512, 1024], "agree_steps": 5,
              "repeats": 3},
    "tiny": {"hidden": [16, 8, 16], "batch": 32, "widths": [16, 32], "agree_steps": 2, "repeats": 1},
}
TOLERANCES = {"float32": 1e-5, "float64": 1e-10}
#: the Kronecker-sum methods (iterative fits and solves): measured once per size (refresh every step, float32 only
#: on the autoencoder), and not at larger widths once a step takes longer than SLOW_S
ITERATIVE = tuple(m.name for m in methods.registered() if kpsvd.is_kronecker_sum(m.factored))
SLOW_S = 10.0
#: wall limit of one Kronecker-sum case (its own process: compile, warm-up and timed steps)
ITERATIVE_TIMEOUT_S = 360.0
#: batch size of each net's iterative case (set by the driver)
BATCH_OF: dict = {}


def have_kfac_jax() -> bool:
    try:
        peers.kfac_jax()
    except ImportError:
        return False
    return True


def images(n: int, dtype):
    """n shipped MNIST images, pixels in [0, 1] (classes interleaved by the dataset's seed-0 draw)."""
    return jnp.asarray(datasets.mnist(n=n, normalise="none")[0], dtype)


def autoencoder(hidden, out_dim: int = 784):
    return mlp(depth=len(hidden) + 1, width=list(hidden), in_dim=784, out_dim=out_dim, activation="relu")


def cast(params, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype), params)


def factored_methods() -> tuple[str, ...]:
    return factored_form.methods_with_factored_form()


def method_options(name: str, dtype, split: str = "rule") -> dict:
    tol = TOLERANCES[str(jnp.dtype(dtype))]
    opts = {"kpsvd": {"rank": 2}}.get(name, {})
    if name in ITERATIVE:
        opts.update(power_tol=tol, cg_tol=tol, factored_damping=split)
    return opts


def variants() -> list:
    """(label, method, damping split) of every timed factored method: the Kronecker sums twice, with the Gram
    form's +ρI (PCG at every step, label "… CG") and with the π-split exact two-term inverse ("… π")."""
    out = []
    for name in factored_methods():
        out += [(f"{name} CG", name, "rule"), (f"{name} π", name, "pi")] if name in ITERATIVE else [(name, name, "rule")]
    return out


def _natural(net, name, split, dtype, every=1, cov_every=1):
    return optax.chain(minibatch.natural_gradient(net, name, RHO, "mse", decay=DECAY, inv_every=every,
                                                  cov_every=cov_every,
                                                  fisher="sampled", **method_options(name, dtype, split)),
                       optax.scale_by_learning_rate(TIME_LR))


# ---------------------------------------------------------------------------------------------
# part A: agreement with kfac-jax
# ---------------------------------------------------------------------------------------------
def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


def _ours_steps(net, params, batches, split):
    tx = minibatch.natural_gradient(net, "kfac", RHO, "mse", decay=0.0, kfac_readout="common", factored_damping=split)
    state, out, update = tx.init(params), [], jax.jit(lambda p, s, b: tx.update(p, s, p, batch=b))
    for batch in batches:
        upd, state = update(params, state, batch)
        params = jax.tree_util.tree_map(lambda p, u: p - LR * u, params, upd)
        out.append(params)
    return out


def _kfac_jax_steps(net, params, batches, estimation_mode="ggn_exact", curvature_ema=0.0, inv_every=1):
    opt = peers.optimizer(net, "mse", inv_every=inv_every, curvature_ema=curvature_ema, estimation_mode=estimation_mode)
    aug = peers.augmented_params(net, params)
    key = jax.random.PRNGKey(0)
    state = opt.init([jnp.array(a, copy=True) for a in aug], key, batches[0])
    out = []
    for t, batch in enumerate(batches):
        aug, state, _ = opt.step([jnp.array(a, copy=True) for a in aug], state, key, batch=batch,
                                 learning_rate=jnp.asarray(LR), momentum=jnp.asarray(0.0), damping=jnp.asarray(RHO),
                                 global_step_int=t)
        out.append(peers.stax_params(net, aug))
    return out


def agreement(prof) -> dict:
    """Part A on the digits autoencoder 64-32-16-32-64 (module docstring)."""
    net = mlp(depth=4, width=[32, 16, 32], in_dim=64, out_dim=64, activation="relu")
    n, k = 64, prof["agree_steps"]
    X = jnp.asarray(datasets.digits(n=n * k, normalise="none")[0], jnp.float64)
    batches = [(X[i * n:(i + 1) * n], X[i * n:(i + 1) * n]) for i in range(k)]
    params = net.init(0)
    theirs = _kfac_jax_steps(net, params, batches)
    ours, control = _ours_steps(net, params, batches, "pi"), _ours_steps(net, params, batches[:1], "rule")
    step = _flat(theirs[0]) - _flat(params)
    loss = lambda p, b: 0.5 * float(jnp.sum((net.apply(p, b[0]) - b[1]) ** 2)) / b[0].shape[0]  # noqa: E731
    l_ours = [loss(p, b) for p, b in zip(ours, batches)]
    l_theirs = [loss(p, b) for p, b in zip(theirs, batches)]
    return {"net": repr(net), "batch": n, "steps": k,
            "first_step_rel_diff": float(np.linalg.norm(_flat(ours[0]) - _flat(params) - step) / np.linalg.norm(step)),
            "first_step_cosine": float(np.dot(_flat(ours[0]) - _flat(params), step)
                                       / np.linalg.norm(_flat(ours[0]) - _flat(params)) / np.linalg.norm(step)),
            "control_rule_damping_rel_diff": float(np.linalg.norm(_flat(control[0]) - _flat(params) - step)
                                                   / np.linalg.norm(step)),
            "loss_ours": l_ours, "loss_kfac_jax": l_theirs,
            "loss_max_rel_diff": float(max(abs(a - b) / abs(b) for a, b in zip(l_ours, l_theirs)))}


# ---------------------------------------------------------------------------------------------
# part B/C: step times
# ---------------------------------------------------------------------------------------------
def _optax_step(tx, loss_fn=None):
    """One jitted step; ``loss_fn`` given: optax on the gradient, else the package's transformation (batch kwarg)."""

    @jax.jit
    def step(carry, X, Y):
        params, state = carry
        grads = jax.grad(loss_fn)(params, X, Y) if loss_fn is not None else params
        updates, state = (tx.update(grads, state, params) if loss_fn is not None
                          else tx.update(grads, state, params, batch=(X, Y)))
        return optax.apply_updates(params, updates), state

    return step


def _time_steps(step, carry, X, Y, repeats, per):
    """Median seconds a step over ``repeats`` runs of ``per`` consecutive steps, after a compiling call."""
    box = {"carry": jax.block_until_ready(step(carry, X, Y))}

    def run():
        for _ in range(per):
            box["carry"] = step(box["carry"], X, Y)
        return box["carry"]

    median, _, _ = timed(run, repeats)
    return median / per


def _state_bytes(state) -> int:
    return int(sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(state) if hasattr(x, "shape")))


def step_times(net, X, dtype, repeats: int, amortised: bool = True, log=print) -> dict:
    """{label: seconds a step} (module docstring, part B) and the states' bytes."""
    params = cast(net.init(0), dtype)
    mse = lambda p, X, Y: 0.5 * jnp.sum((net.apply(p, X) - Y) ** 2) / X.shape[0]  # noqa: E731
    times, state_bytes = {}, {}
    for label, tx in (("sgd", optax.sgd(TIME_LR, momentum=0.9)), ("adam", optax.adam(TIME_LR))):
        times[label] = _time_steps(_optax_step(tx, mse), (params, tx.init(params)), X, X, repeats, 1)
    schedules = (("refresh", 1), (f"amortised T_inv={T_INV}", T_INV)) if amortised else (("refresh", 1),)
    ours = schedules + (((f"amortised T_cov=T_inv={T_INV}", T_INV),) if amortised else ())
    for tag, name, split in variants():
        if tag.endswith(" CG"):
            if str(jnp.dtype(dtype)) == "float32":
                times[f"{tag} refresh"] = _iterative_time(name, net, repeats, log, tag)
            continue
        for label, every in ours:
            tx = _natural(net, name, split, dtype, every, every if "T_cov" in label else 1)
            state = tx.init(params)
            times[f"{tag} {label}"] = _time_steps(_optax_step(tx), (params, state), X, X, repeats, every)
            state_bytes[tag] = _state_bytes(state)
            log(f"    {tag} {label}: {times[f'{tag} {label}']:.3g} s")
    if have_kfac_jax():
        for label, every in schedules:
            kwargs = {"hidden": list(net.hidden), "batch": X.shape[0], "dtype": str(jnp.dtype(dtype)),
                      "every": every, "repeats": repeats}
            case = in_subprocess(__file__, "kfac_jax_step", kwargs, None)
            times[f"kfac-jax {label}"], state_bytes["kfac-jax"] = case["step_s"], case["state_bytes"]
            log(f"    kfac-jax {label}: {times[f'kfac-jax {label}']:.3g} s")
    return {"step_s": times, "state_bytes": state_bytes}


def _iterative_time(name, net, repeats, log, tag, timeout_s: float = ITERATIVE_TIMEOUT_S):
    """A Kronecker-sum method's refresh step with +ρI (PCG; float32) in a fresh process; NaN if over ``timeout_s``."""
    kwargs = {"name": name, "hidden": list(net.hidden), "out_dim": net.out_dim, "batch": BATCH_OF[net.hidden],
              "repeats": repeats}
    try:
        t = in_subprocess(__file__, "iterative_step", kwargs, None, timeout=timeout_s)["step_s"]
    except (subprocess.TimeoutExpired, RuntimeError) as err:
        why = f"did not complete within {timeout_s:.0f} s" if isinstance(err, subprocess.TimeoutExpired) else "failed"
        log(f"    {tag} refresh: {why} (compile + warm-up + timed steps)")
        return float("nan")
    log(f"    {tag} refresh: {t:.3g} s")
    return t


def iterative_step(name, hidden, out_dim, batch, repeats) -> dict:
    """Subprocess side of :func:`_iterative_time`."""
    net = mlp(depth=len(hidden) + 1, width=list(hidden), in_dim=784, out_dim=out_dim, activation="relu")
    params = cast(net.init(0), jnp.float32)
    X = images(batch, jnp.float32)
    Y = X if out_dim == 784 else jnp.asarray(jax.nn.one_hot(jnp.arange(batch) % out_dim, out_dim), jnp.float32)
    tx = _natural(net, name, "rule", jnp.float32)
    return {"step_s": _time_steps(_optax_step(tx), (params, tx.init(params)), X, Y, repeats, 1)}


def _kfac_jax_opt(net, every):
    return peers.optimizer(net, "mse", inv_every=every, curvature_ema=DECAY, estimation_mode="ggn_curvature_prop")


def _kfac_jax_time(net, params, X, every, repeats) -> float:
    opt = _kfac_jax_opt(net, every)
    key = jax.random.PRNGKey(0)
    aug = peers.augmented_params(net, params)
    box = {"aug": aug, "state": opt.init([jnp.array(a, copy=True) for a in aug], key, (X, X)), "t": 0}

    def run_steps(count):
        for _ in range(count):
            box["aug"], box["state"], _ = opt.step(box["aug"], box["state"], key, batch=(X, X),
                                                   learning_rate=jnp.asarray(TIME_LR, X.dtype),
                                                   momentum=jnp.asarray(0.0, X.dtype),
                                                   damping=jnp.asarray(RHO, X.dtype), global_step_int=box["t"])
            box["t"] += 1
        return box["aug"]

    jax.block_until_ready(run_steps(every))  # compiles (both the refresh and the amortised step)
    median, _, _ = timed(lambda: run_steps(every), repeats)
    return median / every


def kfac_jax_step(hidden, batch, dtype, every, repeats) -> dict:
    """kfac-jax's step time in a fresh process. float32 runs with jax's x64 off (kfac-jax draws its sampled
    cotangents in the default float type, float64 under x64, and then rejects float32 outputs)."""
    if dtype == "float32":
        jax.config.update("jax_enable_x64", False)
    dt = jnp.float32 if dtype == "float32" else jnp.float64
    net = autoencoder(hidden)
    params, X = cast(net.init(0), dt), images(batch, dt)
    opt = _kfac_jax_opt(net, 1)
    state_bytes = _state_bytes(opt.init(peers.augmented_params(net, params), jax.random.PRNGKey(0), (X, X)))
    return {"step_s": _kfac_jax_time(net, params, X, every, repeats), "state_bytes": state_bytes}


def definiteness(net, batch: int, dtype) -> list:
    """Part D, per layer on the first batch (sampled Fisher, seed 0): the rank-2 KPSVD and K-FAC-corrected systems
    with +ρI (PCG: iterations, converged, a direction of non-positive curvature met) and with the π-split (entries
    1 + λ_iμ_j ≤ 0 of :mod:`ntk_ngd.factored.two_term`, of d·m)."""
    from ntk_ngd import losses
    from ntk_ngd.damping import Damping
    from ntk_ngd.factored import features, kpsvd, kron_sum, rearranged, two_term

    params, X = cast(net.init(0), dtype), images(batch, dtype)
    feats, curv = minibatch.batch_features(net, params, X, X, losses.get("mse"), "sampled", jax.random.PRNGKey(0), 1)
    tol, rho = TOLERANCES[str(jnp.dtype(dtype))], jnp.asarray(RHO, dtype)
    settings = factored_form.Settings(power_tol=tol, cg_tol=tol)
    rows = []
    for l, (H, D, Dg) in enumerate(zip(feats.inputs, curv, feats.deltas)):
        A, G = features.kron_factors(H, D)
        row = {"layer": l, "d": int(H.shape[1]), "m": int(D.shape[-1])}
        for name, terms in (("kpsvd", rearranged.fit_terms(H, D, 2, "auto", tol, settings.power_maxiter, A)),
                            ("kfac_cor", kpsvd.kfac_cor_terms((A, G), H, D, None, settings, l))):
            sol = kron_sum.solve(terms, features.gradient(H, Dg, feats.u), rho, tol, settings.cg_maxiter)
            inv = two_term.damped_two_term(terms, Damping(rho, True))
            row[name] = {"cg_iterations": int(sol.iterations), "cg_converged": bool(sol.converged),
                         "indefinite": bool(sol.indefinite), "pi_clipped": int(inv.clipped)}
        rows.append(row)
    return rows


def width_sweep(widths, batch, repeats, log) -> dict:
    """{M: {method: seconds}}; a method slower than SLOW_S at one width is not run at the larger ones."""
    X = images(batch, jnp.float32)
    Y = jnp.asarray(jax.nn.one_hot(jnp.arange(batch) % 10, 10), jnp.float32)
    out, names = {}, ["sgd", *[tag for tag, _, _ in variants()]]
    for M in widths:
        net = mlp(depth=3, width=M, in_dim=784, out_dim=10, activation="relu")
        log(f"  part C: M = {M}: {', '.join(names)}")
        out[M] = _width_point(net, X, Y, repeats, names, log)
        names = [m for m in names if out[M][m] <= SLOW_S]  # NaN (timed out) is not <= SLOW_S
    return out


def _width_point(net, X, Y, repeats, names, log) -> dict:
    params = cast(net.init(0), jnp.float32)
    mse = lambda p, X, Y: 0.5 * jnp.sum((net.apply(p, X) - Y) ** 2) / X.shape[0]  # noqa: E731
    tx = optax.sgd(TIME_LR)
    times = {"sgd": _time_steps(_optax_step(tx, mse), (params, tx.init(params)), X, Y, repeats, 1)}
    split_of = {tag: (name, split) for tag, name, split in variants()}
    for tag in [m for m in names if m != "sgd"]:
        name, split = split_of[tag]
        if tag.endswith(" CG"):
            BATCH_OF[net.hidden] = X.shape[0]
            times[tag] = _iterative_time(name, net, repeats, log, tag)
            continue
        tx = _natural(net, name, split, jnp.float32)
        times[tag] = _time_steps(_optax_step(tx), (params, tx.init(params)), X, Y, repeats, 1)
    return times


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def ratio(times, a, b):
    return times[a] / times[b] if a in times and b in times else None


def targets_of(res) -> list:
    rows = []
    agree = res.get("agreement")
    if agree:
        rows += [target("first step, ours (π-split) vs kfac-jax, rel diff", agree["first_step_rel_diff"], "<= 1e-8",
                        agree["first_step_rel_diff"] <= 1e-8),
                 target("control: ours with the √ρ-per-factor rule vs kfac-jax, rel diff",
                        agree["control_rule_damping_rel_diff"], "> 1e-8", agree["control_rule_damping_rel_diff"] > 1e-8),
                 target(f"train loss over {agree['steps']} steps, max rel diff", agree["loss_max_rel_diff"], "<= 1e-8",
                        agree["loss_max_rel_diff"] <= 1e-8)]
    for dtype, part in res["part_b"].items():
        t = part["step_s"]
        r = ratio(t, "kfac refresh", "kfac-jax refresh")
        if r is not None:
            rows.append(target(f"{dtype}: K-FAC step / kfac-jax step, refresh every step", r, "<= 1.0", r <= 1.0))
            ra = ratio(t, f"kfac amortised T_inv={T_INV}", f"kfac-jax amortised T_inv={T_INV}")
            rows.append(reported(f"{dtype}: K-FAC / kfac-jax, amortised T_inv={T_INV}", ra, "no target set"))
        r = ratio(t, f"kfac amortised T_inv={T_INV}", "sgd")
        rows.append(target(f"{dtype}: K-FAC amortised T_inv={T_INV} / SGD step", r, "<= 1.5", r <= 1.5))
        r = ratio(t, f"kfac amortised T_cov=T_inv={T_INV}", "sgd")
        rows.append(target(f"{dtype}: K-FAC amortised T_cov=T_inv={T_INV} / SGD step", r, "<= 1.5", r <= 1.5))
        for tag in [tag for tag, name, _ in variants() if name in ITERATIVE]:
            r = ratio(t, f"{tag} refresh", "kfac refresh")
            if r is not None:
                rows.append(target(f"{dtype}: {tag} / K-FAC step, refresh every step", r, "<= 3", r <= 3))
    for name, k in res["part_c_exponents"].items():
        rows.append(reported(f"step time exponent in M, {name}", k, "cost model O(M³) per refresh, O(N·M²) per pass"))
    return rows


def run(quick: bool = False, out_dir="figures", blas_threads="auto", repeats: int | None = None, log=None,
        profile: str | None = None) -> dict:
    """Run parts A-C; write out_dir/bench_factored.{png,json}; return the summary (``table``, ``targets``, ``ok``)."""
    log, profile, prof, threads, load_start, t_start = start_run(PROFILES, quick, profile, repeats, blas_threads, log)
    res = {"kfac_jax": have_kfac_jax()}
    if res["kfac_jax"]:
        log("  part A: agreement with kfac-jax (float64)")
        res["agreement"] = agreement(prof)
    net = autoencoder(prof["hidden"])
    BATCH_OF[net.hidden] = prof["batch"]
    res["part_b"] = {}
    for dtype in (jnp.float32, jnp.float64):
        log(f"  part B: step times, {jnp.dtype(dtype)}")
        res["part_b"][str(jnp.dtype(dtype))] = step_times(net, images(prof["batch"], dtype), dtype, prof["repeats"],
                                                          log=log)
    res["part_c"] = width_sweep(prof["widths"], prof["batch"], prof["repeats"], log)
    res["part_d"] = {}
    for dtype in (jnp.float32, jnp.float64):
        log(f"  part D: definiteness of the Kronecker sums, {jnp.dtype(dtype)}")
        res["part_d"][str(jnp.dtype(dtype))] = definiteness(net, prof["batch"], dtype)
    res["part_c_exponents"] = {}
    for m in res["part_c"][prof["widths"][0]]:
        ws = [M for M in prof["widths"] if m in res["part_c"][M]]
        if len(ws) >= 2:
            res["part_c_exponents"][m] = fit_exponent(ws, [res["part_c"][M][m] for M in ws])
    wall = time.perf_counter() - t_start
    res["config"] = {"profile": profile, **prof, "net": repr(net), "damping": RHO, "lr_agreement": LR,
                     "lr_timing": TIME_LR, "t_inv": T_INV, "decay": DECAY, "fisher": "sampled (1 per input)",
                     "tolerances": TOLERANCES, "methods": list(factored_methods()), "devices": str(jax.devices()),
                     "cpu_count": os.cpu_count(), "load_average_start": load_start, "blas_threads": threads,
                     "versions": {"jax": jax.__version__, "optax": optax.__version__,
                                  "kfac_jax": getattr(peers.kfac_jax(), "__version__", "?") if res["kfac_jax"] else None}}
    targets = res["targets"] = targets_of(res)
    png, js = plotting.save(make_figure(res), NAME, res, out_dir=out_dir, config=res["config"], wall_time=wall)
    table = "\n".join([table_of(res), ""] + targets_lines(targets) + [f"wall {wall:.0f} s"])
    ok = all(t["met"] is not False for t in targets if "rel diff" in t["name"])
    return {"name": NAME, "png": png, "json": js, "table": table, "targets": targets, "ok": ok, "wall_time_s": wall}


def table_of(res) -> str:
    lines = []
    for dtype, rows in res.get("part_d", {}).items():
        lines.append(f"definiteness, {dtype} (per layer d×m: +ρI PCG iterations [converged/indefinite]; π-split "
                     "entries 1 + λμ ≤ 0):")
        for r in rows:
            cells = [f"{n} {r[n]['cg_iterations']} [{'converged' if r[n]['cg_converged'] else 'NOT converged'}"
                     f"{', indefinite' if r[n]['indefinite'] else ''}], π clipped {r[n]['pi_clipped']}"
                     for n in ("kpsvd", "kfac_cor")]
            lines.append(f"  layer {r['layer']} {r['d']}×{r['m']}: " + "; ".join(cells))
    for dtype, part in res["part_b"].items():
        sgd = part["step_s"]["sgd"]
        lines.append(f"step time, {dtype} (s; × SGD):")
        lines += [f"  {k:32s} {v:9.4f}  {v / sgd:8.2f}x" for k, v in part["step_s"].items()]
    return "\n".join(lines)


def make_figure(res):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    parts = list(res["part_b"].items())
    labels = list(parts[0][1]["step_s"])
    y = np.arange(len(labels))
    for i, (dtype, part) in enumerate(parts):
        ax.barh(y + 0.4 * i, [part["step_s"].get(k, np.nan) for k in labels], height=0.4, label=dtype)
    ax.set_yticks(y + 0.2)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    for j, k in enumerate(labels):
        if not any(np.isfinite(part["step_s"].get(k, np.nan)) for _, part in parts):
            ax.text(0.05, j + 0.2, f"did not finish in {ITERATIVE_TIMEOUT_S:.0f} s", fontsize=7, va="center",
                    transform=ax.get_yaxis_transform())
    ax.set_xlabel("seconds per step (median; amortised: mean over T_inv steps)")
    ax.set_title(f"step time, {res['config']['net'].split(', activation')[0]}, batch {res['config']['batch']}"
                 "\n(the +ρI \"CG\" rows: float32 only)", fontsize=9)
    ax.legend()
    ax = axes[1]
    widths = sorted(res["part_c"])
    for name in res["part_c_exponents"]:
        ws = [M for M in widths if name in res["part_c"][M]]
        ax.plot(ws, [res["part_c"][M][name] for M in ws], "o-",
                label=f"{name} (k = {res['part_c_exponents'][name]:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("hidden width M (784-M-M-10)")
    ax.set_ylabel("seconds per step, float32, refresh every step")
    ax.set_title("step time vs width: t ∝ M^k fitted", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[2]
    agree = res.get("agreement")
    if agree:
        steps = np.arange(1, agree["steps"] + 1)
        ax.plot(steps, agree["loss_kfac_jax"], "o-", label="kfac-jax (π-split damping, exact GGN)")
        ax.plot(steps, agree["loss_ours"], "x--", label="ntk_ngd factored K-FAC, same conventions")
        ax.set_xlabel("step (batch of %d MNIST images)" % agree["batch"])
        ax.set_ylabel("train loss on the step's batch (MSE, ½·mean)")
        ax.set_title(f"agreement: first step rel diff {agree['first_step_rel_diff']:.1e}; "
                     f"√ρ-rule control {agree['control_rule_damping_rel_diff']:.1e}", fontsize=9)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "kfac-jax not installed (extra [peers])", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


CASES = {"iterative_step": iterative_step, "kfac_jax_step": kfac_jax_step}


def main(argv=None) -> int:
    return bench_main(__doc__, NAME, run, CASES, argv, quick_help="the 784-256-64-16-64-256-784 net (minutes)")


if __name__ == "__main__":
    sys.exit(main())
