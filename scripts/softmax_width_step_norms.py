"""Relative size ||Δθ₁||/||θ₀|| of the first parameter step in the runs behind THEORY.md#finding-softmax-width
(figure `cross_entropy`, ntk_ngd/experiments/cross_entropy.py, its profile settings).

Two families of runs, exactly as the figure makes them (digits, 10 classes, N training inputs, depth L, ReLU,
cross-entropy, damping 0, centred model f(x; θ) − f(x; θ₀), so the first step is taken at logits 0):

* panel (d) "softmax width scaling": exact NGD at every width of the profile and every seed (calibration and
  judged), lr = the infinite-width rule's η (``simulate(...).lr``);
* panels (a, b): every panel method (``cross_entropy.panel_methods``, from the registry) at the profile's
  width, seed ``seed``, lr = that method's infinite-width η.

For each run it prints ||Δθ₁||/||θ₀|| (Euclidean norms over all leaves of the params pytree) of the centred step
(what the figure trains) and, beside it, of the uncentred step at the network's own initial logits
(``ntk_ngd.training.parameter_update``). Usage: ``python scripts/softmax_width_step_norms.py [quick|full]``
(quick: < 2 min on 2 CPU cores; full adds width 8192 and is much slower).
"""
from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntk_ngd import datasets, methods, optim
from ntk_ngd.dynamics import simulate
from ntk_ngd.experiments import cross_entropy as figure
from ntk_ngd.networks import mlp
from ntk_ngd.training import parameter_update

LOSS = "cross_entropy"


def tree_norm(tree) -> float:
    return float(jnp.sqrt(sum(jnp.sum(jnp.asarray(leaf) ** 2) for leaf in jax.tree_util.tree_leaves(tree))))


def relative_steps(net, params, X, Y, method, lr, options) -> tuple[float, float]:
    """(centred, uncentred) ||Δθ₁||/||θ₀|| at damping 0."""
    f0 = net.apply(params, X)
    tx = optim.ngd(net, lr, method, 0.0, LOSS, **options)
    centred, _ = tx.update(None, tx.init(params), params, batch=(jnp.asarray(X), jnp.asarray(Y)), offset=f0)
    plain = parameter_update(net, params, X, Y, method, lr, 0.0, loss=LOSS, **options)
    size = tree_norm(params)
    return tree_norm(centred) / size, tree_norm(plain) / size


def trajectory_steps(net, params, X, Y, lr, steps) -> list[float]:
    """||Δθ_t||/||θ_{t−1}|| along centred exact-NGD training (the figure's width runs), t = 1..steps; stops
    at the first non-finite step or loss (the divergence the figure records)."""
    f0 = net.apply(params, X)
    tx = optim.ngd(net, lr, "exact", 0.0, LOSS)
    state = tx.init(params)
    out = []
    for _ in range(steps):
        d, state = tx.update(None, state, params, batch=(jnp.asarray(X), jnp.asarray(Y)), offset=f0)
        rel = tree_norm(d) / tree_norm(params)
        out.append(rel)
        if not np.isfinite(rel):
            break
        params = optax.apply_updates(params, d)
        logits = np.asarray(net.apply(params, X) - f0)
        if not np.all(np.isfinite(logits)):
            break
    return out


def main(profile: str = "quick") -> None:
    cfg = figure.PROFILES[profile]
    t0 = time.time()
    X_all, Y_all = datasets.digits(cfg["n"] + cfg["n_test"], classes=cfg["classes"], seed=cfg["seed"])
    X, Y = X_all[:cfg["n"]], Y_all[:cfg["n"]]

    def net_of(width):
        return mlp(depth=cfg["depth"], width=width, in_dim=X.shape[1], out_dim=Y.shape[1], activation=cfg["activation"])

    net = net_of(cfg["width"])
    panel = figure.panel_methods(net, X, Y)
    lrs = {}
    for m in panel:
        opts = dict(methods.get(m).example_options)
        lrs[m] = (simulate(net, X, Y, m, steps=1, loss=LOSS, **opts).lr, opts)
    print(f"profile {profile}: digits N = {cfg['n']}, C = {Y.shape[1]}, depth {cfg['depth']}, {cfg['activation']}, "
          f"cross-entropy, damping 0, float64")
    print("\n(d) softmax width scaling: exact NGD, lr = %.6g (infinite-width rule)" % lrs["exact"][0])
    print("| width | seed | ||Δθ₁||/||θ₀|| centred (figure) | uncentred (parameter_update) |")
    print("|---|---|---|---|")
    seeds = list(cfg["calibration_seeds"]) + list(cfg["seeds"])
    for w in cfg["widths"]:
        netw = net_of(w)
        for sd in seeds:
            c, u = relative_steps(netw, netw.init(sd), X, Y, "exact", lrs["exact"][0], lrs["exact"][1])
            kind = "calibration" if sd in cfg["calibration_seeds"] else "judged"
            print(f"| {w} | {sd} ({kind}) | {c:.3g} | {u:.3g} |")
    print(f"\n(a, b) panel methods at width {cfg['width']}, seed {cfg['seed']}")
    print("| method | lr (infinite-width rule) | ||Δθ₁||/||θ₀|| centred (figure) | uncentred (parameter_update) |")
    print("|---|---|---|---|")
    params = net.init(cfg["seed"])
    for m in panel:
        lr, opts = lrs[m]
        c, u = relative_steps(net, params, X, Y, m, lr, opts)
        print(f"| {m} | {lr:.4g} | {c:.3g} | {u:.3g} |")
    w = cfg["widths"][0]
    print(f"\n(d) along the trajectory at the smallest width {w}: ||Δθ_t||/||θ_(t-1)||, t = 1..{cfg['steps']}")
    netw = net_of(w)
    for sd in seeds:
        rel = trajectory_steps(netw, netw.init(sd), X, Y, lrs["exact"][0], cfg["steps"])
        print(f"seed {sd}: " + ", ".join(f"{r:.3g}" for r in rel))
    print(f"\n({time.time() - t0:.0f} s wall, {time.process_time():.0f} s CPU)")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["quick"]))
