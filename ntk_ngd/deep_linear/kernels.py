r"""Function-space kernels of a deep linear network in closed form (derivation step 9,
THEORY.md "Layer-wise kernels").

9. ∂f_c(x_n)/∂(W_l)_{ab} = (W_{>l})_{ca}(W_{<l}x_n)_b, so Θ_l = J_l J_lᵀ has entries
   (W_{<l}x_n · W_{<l}x_{n'}) (W_{>l}W_{>l}ᵀ)_{cc'}, i.e.
       Θ_l = (X W_{<l}ᵀW_{<l} Xᵀ) ⊗ (W_{>l}W_{>l}ᵀ)   (np.kron, index n·C + c).
   Exact NG in function space: Θ_F = J F⁺ Jᵀ/N = J(JᵀJ)⁺Jᵀ = J J⁺ = Θ Θ⁺ (Θ = Σ_l Θ_l), the
   projector onto range Θ: the identity iff rank Θ = N·C (impossible when N > D, because f is
   linear in x and rank Θ ≤ C·rank X). Block-diagonal: Σ_l J_l F_ll⁺ J_lᵀ/N = Σ_l Θ_l Θ_l⁺ = L·I
   iff every Θ_l has rank N·C (claim 2 with S = I, α = L). Gradient descent (G = I): Θ/N.
"""
from __future__ import annotations

import numpy as np

from .algebra import layer_products, pinv_psd
from .validation import check_inputs, check_weights


def layer_ntk_blocks(weights, X) -> list[np.ndarray]:
    """Θ_l = (X W_{<l}ᵀW_{<l} Xᵀ) ⊗ (W_{>l}W_{>l}ᵀ), N·C×N·C, index n·C + c."""
    layers = check_weights(weights)
    X = check_inputs(layers, X)
    above, below = layer_products(layers)
    return [np.kron((X @ b.T) @ (X @ b.T).T, a @ a.T) for a, b in zip(above, below)]


def _range_projector(kernel) -> np.ndarray:
    return kernel @ pinv_psd(kernel)


def exact_function_space_kernel(blocks) -> np.ndarray:
    """Θ_F(X, X) = Θ Θ⁺ with Θ = Σ_l Θ_l (exact NGD on the training points)."""
    return _range_projector(sum(blocks))


def block_diagonal_function_space_kernel(blocks) -> np.ndarray:
    """Σ_l Θ_l Θ_l⁺ (block-diagonal NGD on the training points, claim 2 with S = I)."""
    return sum(_range_projector(b) for b in blocks)


def isotropy(kernel) -> tuple[float, float]:
    """(α, deviation): α = tr Θ_G / (N·C), deviation = ||Θ_G − αI||_F / ||αI||_F (THEORY.md)."""
    size = kernel.shape[0]
    alpha = float(np.trace(kernel) / size)
    return alpha, float(np.linalg.norm(kernel - alpha * np.eye(size)) / (abs(alpha) * np.sqrt(size)))


__all__ = ["block_diagonal_function_space_kernel", "exact_function_space_kernel", "isotropy", "layer_ntk_blocks"]
