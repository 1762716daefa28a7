r"""Figure `online_ng`: the online deep-linear natural gradient (Bernacchia, Lengyel & Hennequin 2018) as an optimiser
(:func:`ntk_ngd.factored.online.online_ngd`, trained with ``nn.fit``) converges at the depth-independent rate of the
exact natural gradient, (1 − η)^{2t} in excess loss (docs/THEORY.md "Online deep-linear natural gradient", claim 9).

Problem: square deep linear networks (D = C = M = ``dim``, no bias, the package's NTK parametrisation) of depths
``depths``, inputs with cond Σ_x = ``cond``, a realisable teacher W* = (I − r_0 O)W_0 (‖E_0W_0⁻¹‖₂ = r_0, Loss* = 0).
Each depth is trained four ways through ``nn.fit`` at the same η: the online NG full batch with exact moments (EMA
decay 0, ρ = 0), the online NG with EMA ``decay`` and mini-batches of ``batch`` (fisher="whitened"), the same
amortised K-FAC *without* the 1/L (its rate is 2 log(1 − Lη)), and gradient descent (optax.sgd, lr 0.5/λ_max of the
Fisher at W_0 per depth). The loss is evaluated after every step; rates are least-squares slopes of log excess loss
(full batch: all steps; online: the window [``fit_start``, ``online_steps``], after the EMA forgot the start).

(a) Rows per depth: full-batch rate = 2 log(1 − η) within the O(η²) band of the exact step (:mod:`._model`);
    full-batch curve = ``deep_linear.predicted_loss(form="exact")`` (numpy recurrence) to 1e-8; online rate = the
    rate of the linearised online NG (numpy, the same batches, exact at depth 1) within the EMA-lag band; online
    rate = 2 log(1 − η) within the mini-batch terms + 3σ of the linearised slope over calibration batch orders + the
    lag band. Controls: GD/SGD and the no-1/L K-FAC through the same pipeline (other methods), the first-order
    curve as a wrong theory of the full-batch curve.
(b) Depth independence: spread of the rates over depths within the bands; control: the no-1/L spread.

Pre-registration: the error models of :mod:`._model` were written while exploring problem seed 0 (where the first
lag model, every layer moving by r_0/L, fell short of the measured depth-4 deviation by ~2x and was replaced by the
computed per-layer moves δ_j); every judged run uses ``seed`` = 1 and calibration batch orders
``calibration_seed``.. (numpy only), disjoint from the judged batch order.
"""
from __future__ import annotations

from ._run import run

_COMMON = {"cond": 100.0, "jitter": 0.3, "r0": 0.25, "decay": 0.95, "seed": 1, "calibration_seed": 1000}

PROFILES = {
    "tiny": {**_COMMON, "depths": [1, 2], "dim": 3, "n": 64, "batch": 32, "lr": 0.1, "full_steps": 20, "decay": 0.8,
             "online_steps": 80, "fit_start": 50, "calibration_orders": 4},  # smoke test: EMA 0.8 forgets the start sooner
    "quick": {**_COMMON, "depths": [1, 2, 3, 4], "dim": 5, "n": 512, "batch": 64, "lr": 0.1, "full_steps": 60,
              "online_steps": 200, "fit_start": 100, "calibration_orders": 16},
    "full": {**_COMMON, "depths": [1, 2, 3, 4, 5, 6], "dim": 8, "n": 2048, "batch": 128, "lr": 0.05,
             "full_steps": 120, "online_steps": 400, "fit_start": 160, "calibration_orders": 32},
}

__all__ = ["PROFILES", "run"]
