r"""Full-batch training of a deep linear network with a closed-form direction, as a
:class:`~ntk_ngd.trajectory.Trajectory`.

W_i ← W_i − η Δ_i with Δ the direction of ``method``:

* "exact": the Moore–Penrose natural gradient F⁺∇Loss (:func:`~.closed_forms.natural_gradient`);
* "gd": the plain gradient ∇_i = W_{>i}ᵀ G W_{<i}ᵀ (:func:`~.closed_forms.gradient_direction`);
* "block_diag": the per-layer form of THEORY.md claim 9, block-diagonal NG with the 1/L factor,
  (1/L) W_{>i}⁺ (G S⁻¹)(W_{<i}S)⁺ (:func:`~.closed_forms.paper_natural_gradient`). Note the 1/L: the
  registry's "block_diag" method (:mod:`ntk_ngd.methods`) has none.

The trajectory's ``alpha``/``deviation`` are the isotropy of the step-0 function-space kernel of
the method (derivation step 9, :mod:`~.kernels`): Θ Θ⁺ for "exact", Θ/N for "gd" and
(1/L) Σ_l Θ_l Θ_l⁺ for "block_diag", with Θ_l the closed-form layer blocks.
"""
from __future__ import annotations

import numpy as np

from .._validate import choice
from ..trajectory import Trajectory, first_divergence
from .algebra import end_to_end_gradient, end_to_end_map, input_covariance, mse_loss
from .closed_forms import gradient_direction, natural_gradient, paper_natural_gradient
from .kernels import block_diagonal_function_space_kernel, exact_function_space_kernel, isotropy, layer_ntk_blocks
from .validation import check_data, check_step

_DIRECTIONS = {
    "exact": natural_gradient,
    "gd": gradient_direction,
    "block_diag": paper_natural_gradient,
}
METHODS = tuple(_DIRECTIONS)


def method_kernel(method: str, weights, X) -> np.ndarray:
    """The function-space kernel Θ_G(X, X) (N·C × N·C, index n·C + c) of ``method`` at ``weights``."""
    method = choice("method", method, METHODS)
    blocks = layer_ntk_blocks(weights, X)
    if method == "exact":
        return exact_function_space_kernel(blocks)
    if method == "gd":
        return sum(blocks) / np.shape(X)[0]
    return block_diagonal_function_space_kernel(blocks) / len(blocks)


def train(weights0, X, Y, method: str = "exact", lr: float = 0.1, steps: int = 10) -> Trajectory:
    """Full-batch training W_i ← W_i − lr·Δ_i for ``steps`` steps (``method``: module docstring).

    ``train_loss[t]`` and ``train_pred[t]`` = X W_tᵀ (N×C) after t steps; ``params`` the final
    layers [W_1, …, W_L]; ``lr_rule`` "given". A loss that is non-finite or exceeds the divergence
    factor × the initial loss (:func:`ntk_ngd.trajectory.first_divergence`) stops the run at that
    step: ``diverged_at`` records it, the later entries are NaN and ``params`` are the last finite
    layers. :func:`end_to_end_maps` recovers the maps W_t.
    """
    layers, X, Y = check_data(weights0, X, Y)
    method = choice("method", method, METHODS)
    lr, steps = check_step(lr, steps)
    alpha, deviation = isotropy(method_kernel(method, layers, X))
    direction, cov = _DIRECTIONS[method], input_covariance(X)
    losses = np.full(steps + 1, np.nan)
    preds = np.full((steps + 1,) + Y.shape, np.nan)
    W = end_to_end_map(layers)
    losses[0], preds[0] = mse_loss(W, X, Y), X @ W.T
    diverged_at = None
    for t in range(1, steps + 1):
        step = direction(layers, end_to_end_gradient(W, X, Y), cov)
        with np.errstate(over="ignore", invalid="ignore"):   # a blow-up is recorded below, not warned about
            new = [w - lr * d for w, d in zip(layers, step)]
            W_new = end_to_end_map(new)
            loss = mse_loss(W_new, X, Y) if np.all(np.isfinite(W_new)) else np.inf
        if first_divergence([losses[0], loss]) is not None:
            diverged_at = t
            break
        layers, W = new, W_new
        losses[t], preds[t] = loss, X @ W.T
    return Trajectory(method, "mse", np.arange(steps + 1, dtype=float), losses, preds, None, None, float(lr),
                      "given", alpha, deviation, diverged_at, params=layers)


def end_to_end_maps(trajectory: Trajectory, X) -> np.ndarray:
    """W_t (T×C×D) from the predictions f_t = X W_tᵀ of a deep-linear trajectory: W_tᵀ = X⁺ f_t.

    Σ_x = XᵀX/N is invertible (checked by :func:`train`), so X has full column rank and X⁺X = I;
    the recovery is exact up to rounding ~cond(X)·ε relative. NaN rows stay NaN.
    """
    pseudo_inverse = np.linalg.pinv(np.asarray(X, dtype=np.float64))
    return np.einsum("dn,tnc->tcd", pseudo_inverse, np.asarray(trajectory.train_pred, dtype=np.float64))


__all__ = ["METHODS", "end_to_end_maps", "method_kernel", "train"]
