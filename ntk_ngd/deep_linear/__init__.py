r"""Exact natural gradient in deep linear networks, in closed form (THEORY.md claim 9).

Bernacchia, Lengyel & Hennequin (2018), "Exact natural gradient in deep linear networks and
its application to the nonlinear case". Everything here is plain float64 numpy; the dense
reference (:mod:`.reference`) differentiates the network by complex steps, so that it shares no
algebra with the closed forms it checks.

Conventions (THEORY.md "Setup", no bias, no NTK scaling)
--------------------------------------------------------
X is N×D (rows are samples), Y is N×C. ``weights = [W_1 (M_1×D), …, W_L (C×M_{L−1})]``,
M_0 = D, M_L = C. End-to-end map W = W_L⋯W_1 (C×D), f(X) = X W_1ᵀ⋯W_Lᵀ = X Wᵀ.
Loss = (1/2N) Σ_n ||f(x_n) − y_n||², residual R = XWᵀ − Y (N×C), flattened row-major (index
n·C + c) wherever a vector in function space is needed. Parameters θ are the row-major
``W_i.ravel()`` concatenated for i = 1..L; P = Σ_i M_i M_{i−1}.
Products around layer i: W_{>i} = W_L⋯W_{i+1} (C×M_i, I_C for i = L) and
W_{<i} = W_{i−1}⋯W_1 (M_{i−1}×D, I_D for i = 1), so W = W_{>i} W_i W_{<i}.
Σ_x = XᵀX/N (required symmetric positive definite), Σ_yx = YᵀX/N, S = Σ_x^{1/2} (symmetric),
W* = Σ_yx Σ_x⁻¹ (the least-squares map), E = W − W* (the error of the end-to-end map).

The derivation, one module per part
-----------------------------------
* :mod:`.algebra` — steps 1–3: Loss = ½ tr(E Σ_x Eᵀ) + Loss*, G = ∂Loss/∂W = E Σ_x, first-order
  change A(Δ) = Σ_i W_{>i} Δ_i W_{<i}, Fisher F = BᵀB with B(Δ) = A(Δ) S, ∇Loss = Bᵀ(E S).
* :mod:`.closed_forms` — steps 4–7: the Moore–Penrose natural gradient
  Δ_MP,i = W_{>i}ᵀ M S W_{<i}ᵀ, vec M = 𝒦⁺ vec(G S⁻¹), 𝒦 = Σ_i (W_{>i}W_{>i}ᵀ) ⊗ (S W_{<i}ᵀW_{<i} S)
  (whitened and general Σ_x), when it reaches E (no bottleneck), the block-diagonal natural gradient
  and the per-layer generalised inverse (1/L) W_{>i}⁺ (G S⁻¹)(W_{<i}S)⁺ (a {1,2}-inverse, not F⁺).
* :mod:`.dynamics` — step 8: Loss_t − Loss* ≈ (1 − η)^{2t}(Loss_0 − Loss*) for every Σ_x, the
  continuous flow, and the exact per-layer recurrence W' = (I − (η/L)E W⁻¹)^L W.
* :mod:`.kernels` — step 9: Θ_l = (X W_{<l}ᵀW_{<l}Xᵀ) ⊗ (W_{>l}W_{>l}ᵀ), Θ_F = ΘΘ⁺, Σ_l Θ_lΘ_l⁺.
* :mod:`.training` — the training loop (methods "exact", "gd", "block_diag"), returning a
  :class:`~ntk_ngd.trajectory.Trajectory`.
* :mod:`.reference` — the dense P×P Fisher and its pseudo-inverse (P ≤ 20000).
* :mod:`.problems` — data with a prescribed Σ_x spectrum, well-conditioned layers;
  :mod:`.validation` — one-line ValueErrors for bad input.
"""
from __future__ import annotations

from .algebra import (PINV_RTOL, end_to_end_change, end_to_end_gradient, end_to_end_map, input_covariance,
                      layer_gradients, layer_products, least_squares_map, mse_loss, parameter_norm)
from .closed_forms import (block_diagonal_natural_gradient, end_to_end_operator, end_to_end_operator_root,
                           end_to_end_reachable, gradient_direction, natural_gradient, paper_natural_gradient)
from .dynamics import LOSS_FORMS, exact_block_diagonal_step, predicted_end_to_end_maps, predicted_loss
from .kernels import (block_diagonal_function_space_kernel, exact_function_space_kernel, isotropy,
                      layer_ntk_blocks)
from .problems import input_spectrum, make_regression, random_weights
from .reference import (DENSE_MAX_PARAMS, dense_block_diagonal_natural_gradient, dense_fisher, dense_fisher_pinv,
                        dense_function_space_kernels, dense_natural_gradient)
from .training import METHODS, end_to_end_maps, method_kernel, train
from .validation import check_data, check_input_covariance, check_weights

__all__ = [
    "DENSE_MAX_PARAMS", "LOSS_FORMS", "METHODS", "PINV_RTOL", "block_diagonal_function_space_kernel",
    "block_diagonal_natural_gradient", "check_data", "check_input_covariance", "check_weights",
    "dense_block_diagonal_natural_gradient", "dense_fisher", "dense_fisher_pinv", "dense_function_space_kernels",
    "dense_natural_gradient", "end_to_end_change", "end_to_end_gradient", "end_to_end_map", "end_to_end_maps",
    "end_to_end_operator", "end_to_end_operator_root", "end_to_end_reachable", "exact_block_diagonal_step",
    "exact_function_space_kernel", "gradient_direction", "input_covariance", "input_spectrum", "isotropy",
    "layer_gradients", "layer_ntk_blocks", "layer_products", "least_squares_map", "make_regression",
    "method_kernel", "mse_loss", "natural_gradient", "paper_natural_gradient", "parameter_norm",
    "predicted_end_to_end_maps", "predicted_loss", "random_weights", "train",
]
