"""Reproduce the coverage numbers of docs/THEORY.md#finding-mc-totals: how often the 3-SE band on a Monte Carlo
total E||F̂ − F||_F² (figure `fisher_variance`, its tiny profile) misses its closed form over fresh seeds.

For each seed s = 0 … S−1, each model (gaussian, softmax), each k of the tiny profile and each estimator
(F̂₁ squared score, F̂₂ −Hessian): draw the tiny profile's replicates with ``fv.sample_estimates`` seed
10⁶ + 7919·s + k, split them into its batches (``fv.monte_carlo``) and compute z = (MC total − closed form)/SE.
Prints the fraction of rows with |z| > 3 (all rows, and the Gaussian F̂₁ rows), the mean and s.d. of z.
The finding quotes S = 40 (480 rows, jax 0.4.38): 0.83% overall, 2.5% (3/120) Gaussian F̂₁, mean 0.03, s.d. 1.04.

    python scripts/mc_totals_coverage.py [--seeds 40] [--json out.json]

(40 seeds take minutes on a laptop CPU; ``--seeds 2`` checks that the script runs.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ntk_ngd import datasets, fisher_variance as fv  # noqa: E402
from ntk_ngd.experiments.fisher_variance import ESTIMATORS, PROFILES  # noqa: E402
from ntk_ngd.networks import mlp  # noqa: E402


def z_scores(seeds: int, config=PROFILES["tiny"]) -> list[dict]:
    """One record (seed, model, k, estimator, z) per row of the figure's total-variance family."""
    X = datasets.sphere(config["n_inputs"], config["in_dim"], seed=config["seed"])
    rows = []
    for model in fv.MODELS:
        net = mlp(depth=config["depth"], width=config["width"], in_dim=config["in_dim"],
                  out_dim=config["out_dims"][model], activation=config["activation"])
        f, theta = fv.flat_network(net, net.init(config["seed"]))
        d = fv.network_derivatives(f, theta, X)
        for k in (int(k) for k in config["ks"]):
            theory = fv.closed_form_variance(model, d, samples=k)
            for s in range(seeds):
                draws = fv.sample_estimates(model, f, theta, X, k, config["replicates"], seed=10**6 + 7919 * s + k)
                for (est, _), E, v in zip(ESTIMATORS, draws, theory):
                    mc = fv.monte_carlo(E, config["batches"])
                    z = (mc.total_var - float(np.sum(v))) / mc.total_var_se
                    rows.append({"seed": s, "model": model, "k": k, "estimator": est, "z": float(z)})
    return rows


def summary(rows) -> dict:
    z = np.array([r["z"] for r in rows])
    g1 = np.array([r["z"] for r in rows if r["model"] == "gaussian" and r["estimator"] == "score"])
    return {"rows": int(z.size), "frac_abs_z_above_3": float(np.mean(np.abs(z) > 3)),
            "gaussian_score_rows": int(g1.size), "gaussian_score_abs_z_above_3": int(np.sum(np.abs(g1) > 3)),
            "mean_z": float(z.mean()), "sd_z": float(z.std(ddof=1)) if z.size > 1 else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--json", default=None, help="also write every z and the summary here")
    args = parser.parse_args(argv)
    rows = z_scores(args.seeds)
    out = summary(rows)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": out, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
