"""Tolerances and floors of the deep_linear figure (what each check allows, and why)."""
from __future__ import annotations

#: |ρ_t − (1 − η)²| ≤ RATIO_COEF·η² ("within O(η²)", coefficient stated).
RATIO_COEF = 5.0
#: exponent of the first-step deviation in η, fitted from η and η·order_factor.
ORDER_RANGE = (1.8, 2.2)
#: max/min over conditionings of the O(η²) coefficient |ρ − (1 − η)²|/η² at one depth.
COEF_SPREAD = 3.0
LINEAR_TOL = 1e-10
GD_RATE_TOL = 1e-2
GD_EXACT_TOL = 1e-8
GD_SLOPE_RANGE = (-1.15, -0.85)
DENSE_TOL = 1e-8
#: a run's loss is used for ratios only while the excess is above this fraction of its start (and
#: above 1e-6·Loss*): W is O(1), so E = W − W* carries ~1e-16 absolute rounding, i.e. a relative
#: error ~1e-8 in the excess at this floor (ratios accurate to ~1e-7).
FLOOR = 1e-16
#: the depth-1 GD closed form is compared where the excess is above this fraction of its start.
EXACT_FLOOR = 1e-10
#: a GD run is asymptotic when the second-slowest mode's share of the excess,
#: (λ_max/λ_1)·((1−ηλ_2)/(1−ηλ_1))^{2t} at the final weights, is below this.
DOMINANCE = 1e-4

#: a run whose measured per-step gap still drifts by more than this (relative, over the last fifth
#: of the run) is not in the linear regime (oscillation, saddle plateau) and is left out of the
#: rate check. The λ_min of the moving weights itself drifts by up to ~2 % over long runs, which
#: the prediction tracks (it uses the final weights), hence the loose bound.
DRIFT = 5e-2

__all__ = ["COEF_SPREAD", "DENSE_TOL", "DOMINANCE", "DRIFT", "EXACT_FLOOR", "FLOOR", "GD_EXACT_TOL",
           "GD_RATE_TOL", "GD_SLOPE_RANGE", "LINEAR_TOL", "ORDER_RANGE", "RATIO_COEF"]
