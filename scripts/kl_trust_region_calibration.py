"""Calibration of the cross-entropy trust region κ (docs/THEORY.md "Step size"): issue 25's problem (digits, 10
classes one-hot, 150 images, seed 0; 2-layer width-512 MLP, init seed 0), 10 full-batch steps of nn.train with each
method's default step capped at ½η²q(Δθ) ≤ κ (q in the trust region's metric: "fisher" ΔθᵀFΔθ, "euclidean" the
mean squared logit move), for κ in a grid. Prints final loss, whether the loss was monotone and the largest
||Δθ||/||θ||. Selection rule (stated after the "fisher" runs of exact at ρ = 0 and the first "euclidean" row had been
seen, before the rest): the metric with which every run is monotone, and the largest κ of the grid with which every
run with it is monotone and none diverges; judged on other data and seeds in tests/test_trust_region.py.

    python scripts/kl_trust_region_calibration.py
"""
from __future__ import annotations

import warnings

import ntk_ngd as nn

KAPPAS = (0.01, 0.1, 1.0)
METHODS = ("exact", "block_diag", "kfac")


def main(methods=METHODS, dampings=(0.0, 1e-3), metrics=("euclidean", "fisher"), kappas=KAPPAS):
    warnings.simplefilter("ignore")
    X, labels = nn.datasets.digits(n=150, classes=10, seed=0)
    net = nn.mlp(depth=2, width=512, in_dim=X.shape[1], out_dim=10)
    params = net.init(seed=0)
    print(f"{'method':<12}{'damping':>8}{'metric':>10}{'kappa':>7}{'loss_0':>9}{'loss_10':>10}  monotone  "
          "max|dθ|/|θ|", flush=True)
    for method in methods:
        for damping in dampings:
            for metric in metrics:
                for kappa in kappas:
                    t = nn.train(net, params, X, labels, method=method, steps=10, damping=damping,
                                 loss="cross_entropy", trust_region=kappa, trust_metric=metric)
                    print(f"{method:<12}{damping:>8.0e}{metric:>10}{kappa:>7.2g}{t.train_loss[0]:>9.4f}"
                          f"{t.final_loss:>10.4f}  {str(t.monotone):<8}  {t.step_norm_max:.3g}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", help="default: " + " ".join(METHODS))
    parser.add_argument("--damping", action="append", type=float, help="default: 0 1e-3")
    parser.add_argument("--metric", action="append", help="default: euclidean fisher")
    parser.add_argument("--kappa", action="append", type=float, help="default: " + " ".join(map(str, KAPPAS)))
    a = parser.parse_args()
    main(a.method or METHODS, a.damping or (0.0, 1e-3), a.metric or ("euclidean", "fisher"), a.kappa or KAPPAS)
