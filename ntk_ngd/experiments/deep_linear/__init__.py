r"""Figure `deep_linear`: exact natural gradient in deep linear networks converges at a rate that
does not depend on the curvature; gradient descent does (THEORY.md claim 9, issue 6).

Network f(x) = W_L⋯W_1 x, MSE loss, inputs with a prescribed covariance Σ_x = XᵀX/N of condition
number cond ∈ {1, 1e2, 1e4, 1e6} (:func:`ntk_ngd.deep_linear.make_regression`: eigenvalues
geometrically spaced from 1 to 1/cond, realizable targets by default). Trained with
:func:`ntk_ngd.deep_linear.train` (exact Moore–Penrose NG in closed form) and plain GD.

Theory the figure draws and checks (each derived independently of the code that trains):

* Exact NG: W_{t+1} − W* = (1 − η)(W_t − W*) + O(η²), so the excess loss obeys
  Loss_t − Loss* = (1 − η)^{2t}(Loss_0 − Loss*) to first order, and the per-step ratio
  ρ_t = (Loss_{t+1} − Loss*)/(Loss_t − Loss*) is (1 − η)² + O(η²) for every depth and every Σ_x.
  Loss* comes from ``numpy.linalg.lstsq``. Tolerance: |ρ_t − (1 − η)²| ≤ 5η². The O(η²) claim is
  also checked as an order: the first-step deviation at η and at η/10 must scale with exponent
  2 ± 0.2. Depth 1 is linear in θ, so there the first-order step is exact (ρ = (1 − η)² to 1e-10).
  Stronger: when W* is reachable (every hidden width ≥ C, or every one ≥ D) the Moore–Penrose
  update solves A(Δ) = E, which does not involve Σ_x, so from the same W_0 and W* (noise-free
  targets: W* = teacher for every cond) the whole W-trajectory is the same for every
  conditioning; only the loss, ½tr(EΣ_xEᵀ), differs.
* Gradient descent, step η_GD = 0.5/λ_max(Θ_0/N) (Θ = JJᵀ the NTK, from the closed-form
  per-layer blocks; its λ_min is cross-checked against the C·D-sized operator 𝒦 = BBᵀ), halved
  until η λ_max ≤ 1 also at the final weights (the layers grow while fitting; deep nets otherwise
  drift to the edge of stability, η λ_max → 2, where the λ_max mode would set the late rate): r_{t+1} = (I − η Θ/N) r_t to first order, so
  once the slowest mode dominates ρ_t → (1 − η λ_min)², λ_min the smallest *non-zero* eigenvalue
  of Θ/N at the final weights (the non-zero spectrum of Θ/N is that of the Fisher JᵀJ/N).
  λ_min ∝ 1/cond, hence the late per-step gap 1 − ρ ∝ 1/cond (fitted log-log slope −1). The
  number of GD steps is chosen from the initial spectrum so the second-slowest mode dies out
  (capped by ``gd_max_steps``); a run counts as asymptotic when (λ_max/λ_1)·((1−ηλ_2)/(1−ηλ_1))^{2t}
  ≤ 1e-4 at the final weights and its measured gap drifted by ≤ 5 % over the last fifth of the run
  (no oscillation or plateau); only those enter the rate check
  (the others are drawn open). Depth 1 GD also has an exact closed form, E_t = E_0(I − ηΣ_x)^t.
* Closed form vs dense reference: :func:`~ntk_ngd.deep_linear.natural_gradient` (Moore–Penrose,
  closed form) against :func:`~ntk_ngd.deep_linear.dense_natural_gradient` (P×P pseudo-inverse of
  the explicit Fisher), at the initial and the trained weights and on a second family of
  networks with C = 2 outputs and rectangular hidden layers; the per-layer form of the paper
  (block-diagonal/L, :func:`~ntk_ngd.deep_linear.paper_natural_gradient`) changes W the same way
  when every width ≥ max(C, D) but splits it differently: its norm is ≥ the Moore–Penrose one
  (minimum norm), = at depth 1.

The ``full`` profile keeps small layer widths on purpose: nothing here depends on the width
(every claim holds at any width ≥ max(C, D)), GD needs ~√cond·log(cond) steps for the late-time
rate, and the dense reference needs P ≤ 20000; it uses N = 256 samples, more depths and conds.

Modules: ``_measure`` (the problems and runs), ``_checks`` (the claims above as checks),
``_constants`` (their tolerances), ``_plot`` (the six panels), ``_run`` (:func:`run`).
"""
from __future__ import annotations

from ._run import run

PROFILES = {
    "tiny": {"depths": [1, 2], "conds": [1.0, 1e2, 1e4], "in_dim": 3, "out_dim": 1, "width": 4, "n": 12,
             "noise": 0.0, "lr": 0.1, "steps": 15, "order_factor": 0.1, "gd_max_steps": 6000,
             "gd_plot_depth": 2, "multi_out_dim": 2, "multi_widths": [5, 3, 4, 6], "seed": 0},
    "quick": {"depths": [1, 2, 3, 5], "conds": [1.0, 1e2, 1e4, 1e6], "in_dim": 3, "out_dim": 1, "width": 4,
              "n": 16, "noise": 0.0, "lr": 0.1, "steps": 60, "order_factor": 0.1, "gd_max_steps": 40000,
              "gd_plot_depth": 3, "multi_out_dim": 2, "multi_widths": [5, 3, 4, 6], "seed": 0},
    "full": {"depths": [1, 2, 3, 4, 5, 6, 8], "conds": [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6], "in_dim": 3,
             "out_dim": 1, "width": 16, "n": 256, "noise": 0.0, "lr": 0.1, "steps": 100, "order_factor": 0.1,
             "gd_max_steps": 150000, "gd_plot_depth": 3, "multi_out_dim": 2,
             "multi_widths": [5, 3, 4, 6, 8, 3, 5], "seed": 0},
}

__all__ = ["PROFILES", "run"]
