"""The cases of issue 24 and 25 (default step sizes), printed as one table: method, damping, lr, rule, loss after
5 (MSE) or 10 (cross-entropy) steps, diverged_at. Run before and after a change of the step-size policy.

    python scripts/step_rule_cases.py [--quick]
"""
from __future__ import annotations

import sys
import warnings

import numpy as np

import ntk_ngd as nn


def mse_cases():
    net = nn.mlp(depth=3, width=256, in_dim=8, out_dim=2, activation="erf")
    params = net.init(seed=0)
    X, Y = nn.datasets.synthetic(n=32, in_dim=8, out_dim=2, seed=0)
    rows = []
    for method, damping in [("exact", 1e-3), ("kfac", 1e-3), ("block_diag", 1e-3), ("exact", 1e-2), ("diag", 0.0),
                            ("diag", 1e-3)]:
        rows.append(("train", method, damping, nn.train(net, params, X, Y, method=method, steps=5, damping=damping)))
    for method in ("kfac", "block_diag", "exact"):
        rows.append(("simulate", method, 1e-2, nn.simulate(net, X, Y, method=method, steps=5, damping=1e-2)))
    return rows


def ce_cases(n=150):
    X, labels = nn.datasets.digits(n=n, classes=10, seed=0)
    net = nn.mlp(depth=2, width=512, in_dim=X.shape[1], out_dim=10)
    params = net.init(seed=0)
    rows = []
    for method, damping in [("exact", 0.0), ("exact", 1e-3), ("block_diag", 0.0), ("kfac", 0.0), ("gd", 0.0)]:
        rows.append(("train CE", method, damping, nn.train(net, params, X, labels, method=method, steps=10,
                                                            damping=damping, loss="cross_entropy")))
    return rows


def main(argv):
    warnings.simplefilter("ignore")
    rows = mse_cases() + ce_cases()
    print(f"{'entry':<10}{'method':<12}{'damping':>9}{'lr':>11}  {'loss_0':>9} {'loss_end':>10}  {'div_at':>6}  rule")
    for entry, method, damping, t in rows:
        print(f"{entry:<10}{method:<12}{damping:>9.0e}{t.lr:>11.4g}  {t.train_loss[0]:>9.4g} "
              f"{t.train_loss[t.steps_run]:>10.4g}  {str(t.diverged_at):>6}  {t.lr_rule}")


if __name__ == "__main__":
    main(sys.argv[1:])
