"""Early, one-line checks of the deep-linear inputs (raised before any algebra)."""
from __future__ import annotations

import numpy as np

from .._validate import finite_matrix, nonnegative, positive_int
from .algebra import PINV_RTOL, input_covariance


def check_weights(weights) -> list[np.ndarray]:
    """Float64 copies of the layers; shapes must chain (W_{i+1} has as many columns as W_i rows)."""
    if isinstance(weights, np.ndarray) or not hasattr(weights, "__len__") or len(weights) == 0:
        raise ValueError("weights must be a non-empty list of 2-D layer matrices [W_1, ..., W_L]")
    layers = [np.asarray(finite_matrix(f"weights[{i}]", w), dtype=np.float64)
              for i, w in enumerate(weights)]
    for i in range(1, len(layers)):
        if layers[i].shape[1] != layers[i - 1].shape[0]:
            raise ValueError(
                f"layer shapes do not chain: weights[{i}] has {layers[i].shape[1]} columns but "
                f"weights[{i - 1}] has {layers[i - 1].shape[0]} rows")
    return layers


def check_inputs(layers, X) -> np.ndarray:
    """X as float64, N×D with D the first layer's fan-in."""
    return np.asarray(finite_matrix("X", X, cols=layers[0].shape[1]), dtype=np.float64)


def check_data(weights, X, Y) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Layers, X (N×D) and Y (N×C) matching the network; Σ_x = XᵀX/N must be invertible."""
    layers = check_weights(weights)
    X = check_inputs(layers, X)
    Y = np.asarray(finite_matrix("Y", Y, cols=layers[-1].shape[0], rows=X.shape[0]),
                   dtype=np.float64)
    check_input_covariance(input_covariance(X), X.shape[1], source="XᵀX/N")
    return layers, X, Y


def check_input_covariance(cov, dim: int, source: str = "input_cov") -> np.ndarray:
    """Σ_x: finite, symmetric, positive definite (the paper's assumption: W* is unique)."""
    cov = np.asarray(finite_matrix(source, cov, cols=dim, rows=dim), dtype=np.float64)
    scale = max(np.abs(cov).max(), np.finfo(float).tiny)
    if np.abs(cov - cov.T).max() > 1e-10 * scale:
        raise ValueError(f"{source} must be symmetric; pass (C + C.T)/2")
    eig = np.linalg.eigvalsh(cov)
    if eig[0] < -1e-12 * scale:
        raise ValueError(f"{source} is not positive semi-definite (eigenvalue {eig[0]:.3g})")
    if eig[0] <= PINV_RTOL * eig[-1]:
        raise ValueError(f"{source} is singular (eigenvalues {eig[0]:.3g}..{eig[-1]:.3g}); "
                         "use at least as many samples in general position as input dims")
    return cov


def check_step(lr, steps) -> tuple[float, int]:
    """lr > 0 (finite) and steps ≥ 0."""
    lr = nonnegative("lr", lr)
    if lr == 0:
        raise ValueError("lr must be > 0")
    return lr, positive_int("steps", steps, minimum=0)


__all__ = ["check_data", "check_input_covariance", "check_inputs", "check_step", "check_weights"]
