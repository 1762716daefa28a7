r"""Figure `ief_optimiser`: iEF vs EF vs SF vs SGD vs Adam as optimisers on an MNIST classifier (issue 22 item 3;
Wu, Yu, Zhang & Woodland, "An Improved Empirical Fisher Approximation for Natural Gradient Descent", 2024).

Softmax cross-entropy, 10 classes, a ReLU MLP in the NTK parameterisation, float64. Every optimiser is an optax
transformation trained by :func:`ntk_ngd.fitting.fit`: ``optim.ngd(net, lr, method="ef"|"sf"|"ief", damping=ρ,
loss="cross_entropy", form="gram")`` (the package's definitions, as in figure ``ef_vs_ief``: EF G = Σ_n g̃_ng̃_nᵀ/N + ρI,
SF one categorical model sample per input + ρI, iEF Δθ = −η Gᵀ(GGᵀ + λI)⁻¹s with s_n = ||p_n − y_n||²),
``optax.sgd`` and ``optax.adam``.

Indicator (:mod:`._indicator`): γ(Δθ) = (ΔθᵀFΔθ)^{1/2}/|Δθᵀ∇L| on a fixed evaluation batch, F the exact Fisher (= GGN),
from one jvp; γ ≥ γ_NG = (∇LᵀF⁺∇L)^{-1/2} = (mean_n (1 − p_{n,y})/p_{n,y})^{-1/2} when the whitened Jacobian has full
row rank. Checked against the dense P×P reference Fisher (:mod:`._dense`) and the closed form against the package's
exact NG direction (ρ = 0).

Protocol (all bands in :mod:`._checks`, fixed before the runs):

1. Calibration seeds: each method's learning rate from a small grid (``lr_grid``) by the mean log final train loss,
   at a damping fixed per method (``damping``: iEF 1e-8, the paper's "no tuning"; EF and SF 1e-2, the value that
   did not diverge in exploratory runs on calibration seed 0 — at 1e-4 SF diverged at every lr tried).
2. Judged seeds: each method at its chosen lr; at every ``every`` steps the parameters (and optimiser state) are
   snapshotted and γ of SGD/EF/SF/iEF directions is computed at the *same* parameters (the ranking rows), plus γ of
   the run's own update (panel b; γ grows as the loss falls, so γ at a method's own parameters is confounded by how
   far it has trained — reported as γ/γ_NG, not ranked).
3. Damping sweep on the judged seeds (``sweep``) at the chosen lr: final loss and γ vs ρ. Exact NG is not trained
   (its N(C−1)-sized Gram eigendecomposition costs seconds per step on 2 cores): it enters as γ_NG at every snapshot
   and as its direction's γ vs damping at fixed snapshots of the iEF runs.
"""
from __future__ import annotations

from ._run import run

_DENSE = {"n": 6, "classes": 3, "in_dim": 4, "width": 16, "random": 3}

PROFILES = {
    "tiny": {"data": "digits", "n": 320, "widths": [32], "batch": 32, "epochs": 2, "every": 4, "eval_every": 4,
             "eval_batch": 32, "calibration_seeds": [0], "judged_seeds": [10],
             "lr_grid": {"sgd": [30.0], "adam": [3e-2], "ef": [1.0], "sf": [1.0], "ief": [3.0]},
             "damping": {"ef": 1e-2, "sf": 1e-2, "ief": 1e-8}, "slow_factor": 0.01,
             "sweep": {"ief": [1e-8, 1e-2, 1.0], "ef": [1e-8, 1e-2], "sf": [1e-8, 1e-2]},
             "exact_dampings": [1e-2], "dense": _DENSE},
    "quick": {"data": "mnist", "n": 1000, "widths": [128], "batch": 64, "epochs": 2, "every": 10, "eval_every": 5,
              "eval_batch": 64, "calibration_seeds": [0], "judged_seeds": [10, 11],
              "lr_grid": {"sgd": [100.0], "adam": [1e-1], "ef": [1.0, 3.0], "sf": [1.0, 3.0], "ief": [3.0, 10.0]},
              "damping": {"ef": 1e-2, "sf": 1e-2, "ief": 1e-8}, "slow_factor": 0.01,
              "sweep": {"ief": [1e-8, 1e-2, 1.0], "ef": [1e-8, 1e-2], "sf": [1e-8, 1e-2]},
              "exact_dampings": [1e-8, 1e-2, 1.0], "dense": None},
    "full": {"data": "mnist", "n": 5000, "widths": [512, 512], "batch": 128, "epochs": 2, "every": 13, "eval_every": 13,
             "eval_batch": 128, "calibration_seeds": [0, 1], "judged_seeds": [10, 11, 12],
             "lr_grid": {"sgd": [100.0, 300.0, 1000.0], "adam": [1e-2, 3e-2, 1e-1], "ef": [3.0, 10.0],
                         "sf": [3.0, 10.0], "ief": [3.0, 10.0]},
             "damping": {"ef": 1e-2, "sf": 1e-2, "ief": 1e-8}, "slow_factor": 0.01,
             "sweep": {"ief": [1e-8, 1e-5, 1e-2, 1.0], "ef": [1e-8, 1e-2, 1.0], "sf": [1e-8, 1e-2, 1.0]},
             "exact_dampings": [1e-8, 1e-5, 1e-2, 1.0], "dense": _DENSE},
}

__all__ = ["PROFILES", "run"]
