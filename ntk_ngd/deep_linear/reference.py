r"""Dense reference for the closed forms: the explicit P×P Fisher F = JᵀJ/N and its pseudo-inverse.

J is found by complex-step differentiation (:func:`_dense_jacobian`), which only *evaluates* the
network, so the reference shares no algebra with the closed forms it checks. Parameters θ are the
row-major ``W_i.ravel()`` concatenated for i = 1..L; everything refuses P > :data:`DENSE_MAX_PARAMS`.
"""
from __future__ import annotations

import numpy as np

from .algebra import PINV_RTOL, end_to_end_map, pinv_psd
from .validation import check_data, check_inputs, check_weights

DENSE_MAX_PARAMS = 20000


def _forward(layers, inputs):
    """f = inputs W_1ᵀ ⋯ W_Lᵀ, layer by layer (works on stacked batches and complex numbers)."""
    for w in layers:
        inputs = inputs @ np.swapaxes(w, -1, -2)
    return inputs


def _dense_jacobian(layers, X) -> np.ndarray:
    """J = ∂ vec_r f(X) / ∂θ (N·C × P) by complex-step differentiation, column by column.

    Im f(θ + i·h·e_p)/h = ∂f/∂θ_p + O(h²) with no subtractive cancellation; f is a polynomial in
    θ, so h = 1e-30 makes the error vanish below rounding.
    """
    step = 1e-30
    columns = []
    for k, w in enumerate(layers):
        basis = np.eye(w.size).reshape(w.size, *w.shape)
        hidden = _forward(layers[:k], X.astype(complex))
        bumped = _forward([w + 1j * step * basis], hidden)          # (P_k, N, M_k)
        out = _forward(layers[k + 1:], bumped)                       # (P_k, N, C)
        columns.append(out.imag.reshape(w.size, -1) / step)
    return np.concatenate(columns).T


def _layer_bounds(layers) -> list[slice]:
    """θ-slices of the layers."""
    bounds = np.cumsum([0] + [w.size for w in layers])
    return [slice(bounds[k], bounds[k + 1]) for k in range(len(layers))]


def _check_dense_size(layers) -> None:
    n_params = sum(w.size for w in layers)
    if n_params > DENSE_MAX_PARAMS:
        raise ValueError(f"dense reference needs a P×P Fisher; P = {n_params} > "
                         f"{DENSE_MAX_PARAMS}: use natural_gradient() instead")


def _jacobian(weights, X):
    """(layers, X, J) after the checks shared by every reference that needs no targets."""
    layers = check_weights(weights)
    X = check_inputs(layers, X)
    _check_dense_size(layers)
    return layers, X, _dense_jacobian(layers, X)


def dense_fisher(weights, X) -> np.ndarray:
    """F = JᵀJ/N (P×P) from the complex-step Jacobian."""
    _, X, jac = _jacobian(weights, X)
    return jac.T @ jac / X.shape[0]


def _dense_setup(weights, X, Y):
    """(layers, J, F, ∇Loss = Jᵀr/N)."""
    layers, X, Y = check_data(weights, X, Y)
    _check_dense_size(layers)
    jac = _dense_jacobian(layers, X)
    residual = (X @ end_to_end_map(layers).T - Y).ravel()
    return layers, jac, jac.T @ jac / X.shape[0], jac.T @ residual / X.shape[0]


def dense_fisher_pinv(jac, n: int) -> np.ndarray:
    """F⁺ for F = JᵀJ/n, from the SVD J = U diag(s) Vᵀ: F⁺ = V diag(n/s²) Vᵀ over s² > rtol·s_max².

    Same matrix as pinv(JᵀJ/n) but it never squares J's condition number while finding the
    eigenvectors, which keeps the reference accurate for ill-conditioned inputs (cond 1e6).
    """
    _, sing, vt = np.linalg.svd(jac, full_matrices=False)
    keep = sing ** 2 > PINV_RTOL * sing[0] ** 2 if sing.size else sing > 0
    return (vt[keep].T * (n / sing[keep] ** 2)) @ vt[keep]


def dense_natural_gradient(weights, X, Y) -> list[np.ndarray]:
    """Reference direction F⁺∇Loss (the step is −η times it), explicit Fisher F = JᵀJ/N (P×P).

    ∇Loss = Jᵀr/N; F⁺ from :func:`dense_fisher_pinv`; the result is split back into layers.
    """
    layers, jac, _, grad = _dense_setup(weights, X, Y)
    direction = dense_fisher_pinv(jac, np.shape(X)[0]) @ grad
    return [direction[b].reshape(w.shape) for b, w in zip(_layer_bounds(layers), layers)]


def dense_block_diagonal_natural_gradient(weights, X, Y) -> list[np.ndarray]:
    """Reference: F_ii⁺∇_i with the diagonal blocks F_ii cut out of the dense Fisher."""
    layers, _, fisher, grad = _dense_setup(weights, X, Y)
    return [(pinv_psd(fisher[b, b]) @ grad[b]).reshape(w.shape) for b, w in zip(_layer_bounds(layers), layers)]


def dense_function_space_kernels(weights, X) -> dict[str, object]:
    """Reference kernels from the dense Jacobian (THEORY.md "Setup").

    ``layer_blocks`` J_lJ_lᵀ, ``exact`` Θ_F = J F⁺ Jᵀ/N, ``block_diagonal`` Σ_l J_l F_ll⁺ J_lᵀ/N,
    ``jacobian_rank`` rank J.
    """
    layers, X, jac = _jacobian(weights, X)
    n = X.shape[0]
    parts = [jac[:, b] for b in _layer_bounds(layers)]
    return {
        "layer_blocks": [p @ p.T for p in parts],
        "exact": jac @ dense_fisher_pinv(jac, n) @ jac.T / n,
        "block_diagonal": sum(p @ dense_fisher_pinv(p, n) @ p.T / n for p in parts),
        "jacobian_rank": int(np.linalg.matrix_rank(jac)),
    }


__all__ = ["DENSE_MAX_PARAMS", "dense_block_diagonal_natural_gradient", "dense_fisher", "dense_fisher_pinv",
           "dense_function_space_kernels", "dense_natural_gradient"]
