r"""The end-to-end map of a deep linear network, its loss and gradients (derivation steps 1–3).

Notation as in :mod:`ntk_ngd.deep_linear`: W = W_L⋯W_1 = W_{>i} W_i W_{<i}, Σ_x = XᵀX/N,
S = Σ_x^{1/2}, W* = Σ_yx Σ_x⁻¹, E = W − W*.

1. Loss as a function of W. Expanding the square,
   Loss = ½ tr(W Σ_x Wᵀ) − tr(Σ_yx Wᵀ) + ½ tr(YᵀY)/N = ½ tr(E Σ_x Eᵀ) + Loss*,
   with Loss* = Loss(W*). Its gradient w.r.t. W is G = RᵀX/N = WΣ_x − Σ_yx = E Σ_x.
2. First-order change of W. Perturbing every layer, W_i → W_i + Δ_i, changes W by
   A(Δ) = Σ_i W_{>i} Δ_i W_{<i}  (+ terms of order ≥ 2 in Δ),
   so the Jacobian of f(X) is J Δ = X A(Δ)ᵀ, and by the chain rule the per-layer gradient is
   ∇_i = ∂Loss/∂W_i = W_{>i}ᵀ G W_{<i}ᵀ, i.e. ∇Loss = Aᵀ(G) (adjoint in the Frobenius product).
3. Fisher. F = JᵀJ/N, so ΔᵀFΔ = ||X A(Δ)ᵀ||²/N = tr(A(Δ) Σ_x A(Δ)ᵀ) = ||A(Δ) S||²_F.
   Hence F = BᵀB with B(Δ) := A(Δ) S. The gradient is in B's co-range as well:
   ⟨∇Loss, Δ⟩ = ⟨G, A(Δ)⟩ = ⟨G S⁻¹, A(Δ) S⟩, i.e. ∇Loss = Bᵀ(y) with y := G S⁻¹ = E S.
   F is singular whenever P > rank B ≤ C·D (rescalings W_{i+1} → W_{i+1}Q⁻¹, W_i → Q W_i leave W
   unchanged): three 3×3 layers have P = 27 but rank F ≤ 9.

Also the pseudo-inverses every other module uses, with one cut-off :data:`PINV_RTOL`.
"""
from __future__ import annotations

import numpy as np

PINV_RTOL = 1e-11
"""Relative cutoff on the singular values (eigenvalues for PSD matrices) of every matrix this
package pseudo-inverts: exact zeros from the rescaling symmetries come out at ~1e-16 relative."""


def end_to_end_map(weights) -> np.ndarray:
    """W = W_L ⋯ W_1 (C×D)."""
    layers = list(weights)
    out = layers[0]
    for w in layers[1:]:
        out = w @ out
    return out


def layer_products(weights) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """([W_{>i}], [W_{<i}]) for i = 1..L, so that W = W_{>i} W_i W_{<i} for every i."""
    layers = list(weights)
    below = [np.eye(layers[0].shape[1])]
    for w in layers[:-1]:
        below.append(w @ below[-1])
    above = [np.eye(layers[-1].shape[0])]
    for w in reversed(layers[1:]):
        above.append(above[-1] @ w)
    return above[::-1], below


def input_covariance(X) -> np.ndarray:
    """Σ_x = XᵀX / N."""
    X = np.asarray(X, dtype=np.float64)
    return X.T @ X / X.shape[0]


def least_squares_map(X, Y) -> np.ndarray:
    """W* = Σ_yx Σ_x⁻¹ (C×D), the minimiser of the loss over all end-to-end maps."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    return np.linalg.solve(input_covariance(X), X.T @ Y / X.shape[0]).T


def mse_loss(end_to_end, X, Y) -> float:
    """Loss = (1/2N) ||X Wᵀ − Y||²_F for an end-to-end map W."""
    residual = np.asarray(X) @ np.asarray(end_to_end).T - np.asarray(Y)
    return float(0.5 * np.sum(residual ** 2) / residual.shape[0])


def end_to_end_gradient(end_to_end, X, Y) -> np.ndarray:
    """G = ∂Loss/∂W = RᵀX/N = (W − W*) Σ_x (step 1)."""
    X = np.asarray(X, dtype=np.float64)
    residual = X @ np.asarray(end_to_end).T - np.asarray(Y)
    return residual.T @ X / X.shape[0]


def layer_gradients(weights, grad) -> list[np.ndarray]:
    """∇_i = W_{>i}ᵀ G W_{<i}ᵀ (step 2)."""
    above, below = layer_products(weights)
    return [a.T @ grad @ b.T for a, b in zip(above, below)]


def end_to_end_change(weights, directions) -> np.ndarray:
    """A(Δ) = Σ_i W_{>i} Δ_i W_{<i}: first-order change of W per unit step along Δ (step 2)."""
    above, below = layer_products(weights)
    return sum(a @ d @ b for a, d, b in zip(above, directions, below))


def parameter_norm(directions) -> float:
    """Euclidean norm of a per-layer update, all layers together."""
    return float(np.sqrt(sum(np.sum(d ** 2) for d in directions)))


def sym_sqrt(cov) -> tuple[np.ndarray, np.ndarray]:
    """(S, S⁻¹) with S = Σ^{1/2} symmetric."""
    eig, vec = np.linalg.eigh(cov)
    return (vec * np.sqrt(eig)) @ vec.T, (vec / np.sqrt(eig)) @ vec.T


def pinv(matrix) -> np.ndarray:
    """Moore–Penrose inverse, singular values below PINV_RTOL·s_max cut."""
    return np.linalg.pinv(matrix, rtol=PINV_RTOL)


def pinv_psd(matrix) -> np.ndarray:
    """M⁺ of a symmetric PSD matrix from its eigenvalues, those ≤ PINV_RTOL·λ_max cut."""
    eig, vec = np.linalg.eigh(0.5 * (matrix + matrix.T))
    keep = eig > PINV_RTOL * max(eig[-1], 0.0)
    return (vec[:, keep] / eig[keep]) @ vec[:, keep].T


__all__ = ["PINV_RTOL", "end_to_end_change", "end_to_end_gradient", "end_to_end_map", "input_covariance",
           "layer_gradients", "layer_products", "least_squares_map", "mse_loss", "parameter_norm", "pinv",
           "pinv_psd", "sym_sqrt"]
