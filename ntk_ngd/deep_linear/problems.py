"""Problem generators: least-squares data with a prescribed input covariance, well-conditioned layers."""
from __future__ import annotations

import numpy as np

from .._validate import nonnegative, positive_int


def input_spectrum(in_dim: int, cond: float) -> np.ndarray:
    """Eigenvalues of Σ_x, geometrically spaced from 1 down to 1/cond."""
    return np.geomspace(1.0, 1.0 / cond, in_dim)


def make_regression(in_dim: int, out_dim: int, n: int, cond: float = 1.0, seed: int = 0,
                    noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """X (n×in_dim) with XᵀX/n exactly equal to a rotated diag(:func:`input_spectrum`), and
    Y = X W_teacherᵀ + noise·ε (n×out_dim)."""
    in_dim, out_dim = positive_int("in_dim", in_dim), positive_int("out_dim", out_dim)
    n = positive_int("n", n)
    if n < in_dim:
        raise ValueError(f"n = {n} < in_dim = {in_dim} makes Σ_x singular; use n >= in_dim")
    cond, noise = nonnegative("cond", cond), nonnegative("noise", noise)
    if cond < 1:
        raise ValueError(f"cond is the eigenvalue spread λ_max/λ_min of Σ_x and must be >= 1, got {cond}")
    rng = np.random.default_rng(seed)
    q_samples, _ = np.linalg.qr(rng.standard_normal((n, in_dim)))   # n×D, orthonormal columns
    rotation, _ = np.linalg.qr(rng.standard_normal((in_dim, in_dim)))
    X = np.sqrt(n) * q_samples @ (np.sqrt(input_spectrum(in_dim, cond))[:, None] * rotation.T)
    teacher = rng.standard_normal((out_dim, in_dim))
    return X, X @ teacher.T + noise * rng.standard_normal((n, out_dim))


def random_weights(in_dim: int, widths, out_dim: int, seed: int = 0, jitter: float = 0.3
                   ) -> list[np.ndarray]:
    """Well-conditioned layers: (semi-)orthogonal matrices plus jitter·Gaussian/sqrt(fan_in)."""
    dims = [positive_int("in_dim", in_dim)] + [positive_int("width", w) for w in widths] \
        + [positive_int("out_dim", out_dim)]
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        q, _ = np.linalg.qr(rng.standard_normal((max(fan_in, fan_out), min(fan_in, fan_out))))
        base = q if fan_out >= fan_in else q.T
        layers.append(base + jitter * rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in))
    return layers


__all__ = ["input_spectrum", "make_regression", "random_weights"]
