r"""Closed-form training dynamics of a deep linear network (derivation step 8).

8. Step with W_i ← W_i − ηΔ_i. To first order W changes by −η A(Δ) = −η E for the exact
   natural gradient (reachable case, :mod:`~.closed_forms` step 5), so
       W_{t+1} − W* = (1 − η)(W_t − W*) + O(η²),  W_t − W* ≈ (1 − η)^t (W_0 − W*),
       Loss_t − Loss* = ½ tr(E_t Σ_x E_tᵀ) ≈ (1 − η)^{2t} (Loss_0 − Loss*),
   a rate independent of Σ_x (the curvature) and of the weights. Continuous time (θ̇ = −F⁺∇L):
   Ẇ = A(θ̇) = −E exactly, W(τ) − W* = e^{−τ}(W_0 − W*), excess loss e^{−2τ}, τ = η·step.
   Exact discrete step of the per-layer form for square invertible layers (C = D = M_i): since
   W_i = W_{>i}⁻¹ W W_{<i}⁻¹ and Δ_i = (1/L) W_{>i}⁻¹ E W_{<i}⁻¹ (Σ_x cancels: G S⁻¹ S⁻¹ = E),
   W_i − ηΔ_i = W_{>i}⁻¹ Z W_{<i}⁻¹ with Z = W − (η/L)E; the product telescopes,
       W_{t+1} = (Z W⁻¹)^L W = (I − (η/L) E_t W_t⁻¹)^L W_t
              = W_t − η E_t + η² (L−1)/(2L) E_t W_t⁻¹ E_t − …,
   whose first-order part is again (1 − η); Σ_x enters only the loss, never the trajectory of W.
   Gradient descent: Δ_i = ∇_i, first-order change Σ_i P_i E Σ_x Q_i; for L = 1 exactly
   E_{t+1} = E_t (I − ηΣ_x): stability needs η < 2/λ_max and the slowest mode then contracts by
   ≥ 1 − 2/κ(Σ_x) per step, so gradient descent slows down with the condition number.
"""
from __future__ import annotations

import numpy as np

from .._validate import choice
from .algebra import end_to_end_map, input_covariance, least_squares_map, mse_loss
from .closed_forms import end_to_end_reachable
from .validation import check_data, check_step

LOSS_FORMS = ("first_order", "continuous", "exact")


def exact_block_diagonal_step(end_to_end, target, lr: float, depth: int) -> np.ndarray:
    """One exact step of the per-layer form, square invertible layers:
    W' = (I − (η/L)(W − W*)W⁻¹)^L W."""
    error_ratio = (end_to_end - target) @ np.linalg.inv(end_to_end)
    factor = np.eye(end_to_end.shape[0]) - (lr / depth) * error_ratio
    return np.linalg.matrix_power(factor, depth) @ end_to_end


def _all_square(layers) -> bool:
    return all(w.shape[0] == w.shape[1] == layers[0].shape[0] for w in layers)


def predicted_end_to_end_maps(weights0, X, Y, lr: float, steps: int,
                              form: str = "first_order") -> np.ndarray:
    """Predicted W(t), t = 0..steps.

    "first_order": W* + (1 − η)^t (W_0 − W*); "continuous": W* + e^{−ηt}(W_0 − W*) (the NG flow at
    time τ = ηt); both need the end-to-end map to be reachable (no bottleneck). "exact": iterate
    W' = (I − (η/L)E W⁻¹)^L W, exact for method "block_diag" with square invertible layers.
    """
    layers, X, Y = check_data(weights0, X, Y)
    form = choice("form", form, LOSS_FORMS)
    lr, steps = check_step(lr, steps)
    target, start = least_squares_map(X, Y), end_to_end_map(layers)
    if form == "exact":
        if not _all_square(layers) or abs(np.linalg.det(start)) == 0:
            raise ValueError("form='exact' needs square invertible layers (all widths = in = out)")
        maps = [start]
        for _ in range(steps):
            maps.append(exact_block_diagonal_step(maps[-1], target, lr, len(layers)))
        return np.stack(maps)
    if not end_to_end_reachable(layers, input_covariance(X)):
        raise ValueError("a bottleneck (a width below both in_dim and out_dim) makes W* "
                         "unreachable; the closed-form curve needs every width >= in or >= out")
    t = np.arange(steps + 1)
    decay = (1.0 - lr) ** t if form == "first_order" else np.exp(-lr * t)
    return target + decay[:, None, None] * (start - target)


def predicted_loss(weights0, X, Y, lr: float, steps: int, form: str = "first_order"
                   ) -> np.ndarray:
    """Loss of the predicted end-to-end maps; for "first_order" it is
    Loss* + (1 − η)^{2t}(Loss_0 − Loss*), for "continuous" Loss* + e^{−2ηt}(Loss_0 − Loss*)."""
    maps = predicted_end_to_end_maps(weights0, X, Y, lr, steps, form)
    return np.array([mse_loss(m, X, Y) for m in maps])


__all__ = ["LOSS_FORMS", "exact_block_diagonal_step", "predicted_end_to_end_maps", "predicted_loss"]
