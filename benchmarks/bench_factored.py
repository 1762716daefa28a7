"""Factored K-FAC step vs an optax SGD step (issue 21; indicative, small): a 784-256-64-16 MLP (ReLU, bias),
batch 256, MSE to random targets, float64 (or --float32), jit-compiled, median of repeats.

* sgd: ``jax.value_and_grad`` + ``optax.sgd``;
* kfac factored, refresh every step: ``ntk_ngd.factored.minibatch.natural_gradient(net, "kfac", decay=0.95)``
  (statistics, two eigendecompositions per layer (785², 256², 257², 64², 65², 16²) and the apply, every step);
* kfac factored amortised: the same with ``inv_every=20`` (mean step time over 20 consecutive steps);
* kfac Gram form: ``ntk_ngd.optim.ngd(method="kfac")`` (its default route: N-sized Grams where a factor is larger).
Also the one-step agreement of the factored and Gram-form directions (relative difference) on the first batch.

    python benchmarks/bench_factored.py [--repeats R] [--float32]

Prints one JSON object (no figure is written).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import optim
from ntk_ngd.factored import minibatch
from ntk_ngd.networks import mlp

RHO, LR, T_INV = 1e-3, 0.1, 20


def problem(dtype):
    net = mlp(depth=3, width=[256, 64], in_dim=784, out_dim=16, activation="relu")
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), net.init(0))
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((256, 784)), dtype)
    Y = jnp.asarray(rng.standard_normal((256, 16)), dtype)
    return net, params, X, Y


def median_time(step, carry, batch, repeats: int, per: int = 1):
    """Median over ``repeats`` of (time for ``per`` consecutive steps)/per, after one compiling call (the batch is
    an argument, not a compile-time constant)."""
    carry = jax.block_until_ready(step(carry, *batch))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(per):
            carry = step(carry, *batch)
        jax.block_until_ready(carry)
        times.append((time.perf_counter() - t0) / per)
    return statistics.median(times)


def optax_step(tx):
    @jax.jit
    def step(carry, X, Y):
        params, state = carry
        updates, state = tx.update(params, state, params, batch=(X, Y))
        return optax.apply_updates(params, updates), state

    return step


def sgd_step(net):
    tx = optax.sgd(LR)

    def loss(p, X, Y):
        return 0.5 * jnp.mean(jnp.sum((net.apply(p, X) - Y) ** 2, axis=1))

    @jax.jit
    def step(carry, X, Y):
        params, state = carry
        grads = jax.grad(loss)(params, X, Y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step, tx


def run(repeats: int, dtype) -> dict:
    net, params, X, Y = problem(dtype)
    out = {"net": "784-256-64-16 relu", "batch": 256, "dtype": str(jnp.dtype(dtype)), "damping": RHO,
           "machine": "shared CPU (indicative timings)", "devices": str(jax.devices())}
    step, tx = sgd_step(net)
    out["sgd_s"] = median_time(step, (params, tx.init(params)), (X, Y), repeats)
    for label, inv_every in (("kfac_factored_refresh_every_step_s", 1), (f"kfac_factored_amortised_T{T_INV}_s", T_INV)):
        tx = optax.chain(minibatch.natural_gradient(net, "kfac", RHO, "mse", decay=0.95, inv_every=inv_every),
                         optax.scale_by_learning_rate(LR))
        out[label] = median_time(optax_step(tx), (params, tx.init(params)), (X, Y), repeats, per=inv_every)
    tx = optim.ngd(net, LR, method="kfac", damping=RHO)
    out["kfac_gram_s"] = median_time(optax_step(tx), (params, tx.init(params)), (X, Y), repeats)
    dirs = [optim.natural_gradient(net, "kfac", RHO, form=form) for form in ("gram", "factored")]
    flat = [np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(
        tx.update(params, tx.init(params), params, batch=(X, Y))[0])]) for tx in dirs]
    out["direction_rel_diff_factored_vs_gram"] = float(np.linalg.norm(flat[1] - flat[0]) / np.linalg.norm(flat[0]))
    for key in [k for k in out if k.endswith("_s") and k != "sgd_s"]:
        out[key[:-2] + "_over_sgd"] = out[key] / out["sgd_s"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--float32", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.repeats, jnp.float32 if args.float32 else jnp.float64), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
