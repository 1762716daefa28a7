"""The runs behind the unit_wise figure: the unit-wise kernel per (activation, depth, width, seed), its
Gram-form reference from the backward signals, the quadrature limit of the active fraction, and the arc-cosine
prediction of the ReLU deviation (the theory: the package docstring)."""
from __future__ import annotations

import jax
import numpy as np

from ... import backends, datasets, linalg
from ...diagnostics import isotropy
from ...function_space import method_kernels
from ...kernels import layer_kernels
from ...methods import unit_wise
from ...networks import mlp
from .._base import progress


def _angle_term(K) -> float:
    """c = (1/N) Σ_{n,m} θ_nm/(2π) with θ_nm the angle between the feature vectors of Gram K."""
    K = np.asarray(K, dtype=float)
    d = np.sqrt(np.diag(K))
    cos = np.clip(K / np.outer(d, d), -1.0, 1.0)
    return float(np.sum(np.arccos(cos)) / (2 * np.pi) / K.shape[0])


def _fast_init(net):
    """``net.init`` compiled once per network (neural-tangents' eager init dispatches op by op); the pure-jax
    MLP draws the same parameters from the same key as either backend (tests/test_backends.py)."""
    jitted = jax.jit(lambda key: backends.mlp.init(key, net.in_dim, net.hidden, net.out_dim, net.bias))
    return lambda seed: jitted(jax.random.PRNGKey(seed))


def _run_one(net, X, params):
    """Unit-wise kernel at one width/seed, and everything the figure needs from it."""
    lk = layer_kernels(net, X, params=params)
    K = np.asarray(method_kernels(net, X, "unit_wise", params=params, train_kernels=lk).train)
    n = K.shape[0]
    # Gram-form reference from the backward signals alone: units with δ ≠ 0 at x_n (hidden
    # layers), plus 1 for the readout unit.
    hidden_active = np.zeros(n)
    for d in lk.deltas[:-1]:
        hidden_active += np.sum(np.asarray(d)[:, 0, :] != 0, axis=1)
    reference = np.diag(hidden_active + 1.0)
    iso = isotropy(K)
    ranks = [linalg.rank(f) for f in lk.fwd]
    # conditioning of the unit blocks K_j = diag(d_j) K^H diag(d_j): smallest |δ| ratio of a unit
    # over the samples where it is non-zero (the method's eigh works on K_j, condition ~ ratio^-2)
    ratio = 1.0
    for d in lk.deltas[:-1]:
        a = np.abs(np.asarray(d)[:, 0, :])
        big = a.max(axis=0)
        small = np.where(a > 0, a, np.inf).min(axis=0)
        ok = big > 0
        if np.any(ok):
            ratio = min(ratio, float(np.min(small[ok] / big[ok])))
    return {
        "deviation": iso.deviation,
        "alpha": iso.alpha,
        "off_diagonal": iso.off_diagonal,
        "gram_form_error": float(np.max(np.abs(K - reference)) / np.mean(hidden_active + 1.0)),
        "active_min": float(hidden_active.min()),
        "active_max": float(hidden_active.max()),
        "fwd_ranks": ranks,
        "min_unit_delta_ratio": ratio,
        "full_rank_inputs": all(r == n for r in ranks),
        "active_counts": hidden_active,
        "kernel_diagonal": np.diag(K).copy(),
        "kernel_off_diagonal_max": float(np.max(np.abs(K - np.diag(np.diag(K))))),
    }


def _angle_terms(net, X) -> list[float]:
    """c_l of every hidden layer's input from the infinite-width forward Grams (width-free;
    fwd[0] = X̃X̃ᵀ exactly, fwd[l>0] the NNGP kernel of h̃_l)."""
    fwd = np.asarray(layer_kernels(net, X).fwd)
    return [_angle_term(fwd[l]) for l in range(net.depth - 1)]


def _predicted_deviation(angle_terms, widths_per_layer, n) -> float:
    """Arc-cosine prediction sqrt(Σ_l M_l c_l / N) / (Σ_l M_l/2 + 1) (module docstring)."""
    total = float(sum(widths_per_layer))
    return float(np.sqrt(sum(m * c for m, c in zip(widths_per_layer, angle_terms)) / n) / (total / 2 + 1))


def _summarise(runs, activations, depths, widths):
    rows = []
    for act in activations:
        for depth in depths:
            for width in widths:
                sel = [r for r in runs if r["activation"] == act and r["depth"] == depth and r["width"] == width]
                dev = np.array([r["deviation"] for r in sel])
                frac = np.array([r["alpha"] / r["sum_width"] for r in sel])
                rows.append({
                    "activation": act, "depth": depth, "width": width, "sum_width": width * (depth - 1),
                    "deviation_mean": float(dev.mean()), "deviation_min": float(dev.min()),
                    "deviation_max": float(dev.max()), "deviation_rms": float(np.sqrt(np.mean(dev**2))),
                    "alpha_over_sum_width_mean": float(frac.mean()), "alpha_over_sum_width_min": float(frac.min()),
                    "alpha_over_sum_width_max": float(frac.max()), "seeds": len(sel),
                })
    return rows


def _interp_prediction(predictions, depth, widths, width) -> float:
    """RMS arc-cosine prediction at any width M (the angle terms are width-free)."""
    terms = predictions[(depth, widths[0])]["angle_terms"]
    n = predictions[(depth, widths[0])]["n"]
    vals = [_predicted_deviation(c, [width] * (depth - 1), n) for c in terms]
    return float(np.sqrt(np.mean(np.square(vals))))


def measure(config: dict):
    """(runs, predictions, limits, init_max_diff): one record per (activation, depth, width, seed), the arc-cosine
    prediction per (depth, width), and the quadrature limit of the per-unit active fraction per (activation, depth)."""
    widths = [int(w) for w in config["widths"]]
    depths = [int(d) for d in config["depths"]]
    n, in_dim, n_seeds = int(config["n"]), int(config["in_dim"]), int(config["seeds"])
    activations = list(config.get("activations", ["relu", "erf"]))
    inputs = [datasets.sphere(n, in_dim, seed) for seed in range(n_seeds)]

    runs = []  # one record per (activation, depth, width, seed)
    init_max_diff = 0.0
    jobs = [(a, d, w) for a in activations for d in depths for w in widths]
    for act, depth, width in progress(jobs, len(jobs), "unit_wise"):
        net = mlp(depth=depth, width=width, in_dim=in_dim, activation=act)  # one net: jit cache reused
        init = _fast_init(net)
        if not runs:  # the compiled init draws exactly net.init's parameters
            ref, fast = jax.tree_util.tree_leaves(net.init(0)), jax.tree_util.tree_leaves(init(0))
            init_max_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ref, fast))
            if init_max_diff > 0:
                raise RuntimeError(f"compiled init differs from net.init by {init_max_diff:g}")
        for seed, X in enumerate(inputs):
            rec = _run_one(net, X, init(seed))
            rec.update(activation=act, depth=depth, width=width, seed=seed, sum_width=width * (depth - 1))
            runs.append(rec)

    for rec in runs:  # negative control of the Gram-form check: the kernel against another seed's counts
        other = next(r for r in runs if (r["activation"], r["depth"], r["width"]) ==
                     (rec["activation"], rec["depth"], rec["width"]) and r["seed"] == (rec["seed"] + 1) % n_seeds)
        scale = np.mean(other["active_counts"] + 1.0)
        rec["gram_form_error_other_seed"] = float(max(np.max(np.abs(rec["kernel_diagonal"] - other["active_counts"] - 1.0)),
                                                      rec["kernel_off_diagonal_max"]) / scale)

    # arc-cosine prediction (ReLU) per depth, seed and width; the angle terms do not depend on M
    predictions = {}
    for depth in depths if "relu" in activations else []:
        net = mlp(depth=depth, width=widths[0], in_dim=in_dim, activation="relu")
        terms = [_angle_terms(net, X) for X in inputs]
        for width in widths:
            vals = [_predicted_deviation(c, [width] * (depth - 1), n) for c in terms]
            predictions[(depth, width)] = {
                "rms": float(np.sqrt(np.mean(np.square(vals)))),
                "per_seed": vals,
                "angle_terms": terms,
                "n": n,
            }

    limits = {}  # theory: the quadrature active fraction at the NNGP variances, per hidden unit (no kernel)
    for act in activations:
        for depth in depths:
            net = mlp(depth=depth, width=widths[-1], in_dim=in_dim, activation=act)
            limits[(act, depth)] = [float(np.mean(unit_wise.leading_order_fractions(net, X))) for X in inputs]
    return runs, predictions, limits, init_max_diff


__all__ = ["measure"]
