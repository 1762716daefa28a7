"""Declared complexity of the methods: floating-point operation counts of one kernel and one parameter update at a
given problem size, read off each method's Gram-form code (``Method.cost``). :mod:`ntk_ngd.budget` turns them into
seconds; the CLI skips a method whose estimate exceeds its time budget instead of waiting silently.

Sizes (:class:`Size`): N samples, k whitened rows per sample (MSE: C outputs; cross-entropy C − 1), R = N·k rows,
and per Dense layer l its input width d_l (bias column included) and output width m_l. The operation counts
(leading terms; LAPACK-style constants):

    symmetric eigendecomposition with vectors (every ``linalg.solve``/``eigh``) of n×n:  9 n³,
    SVD with vectors of an m×n matrix (m ≥ n):                                         4 m n² + 22 n³,
    product (m×k)(k×n):                                                                 2 m k n.

Every method's update first needs the layer features (a forward pass, R backward passes) and their per-layer Grams
K^H_l (N×N) and K^Δ_l (R×R): :func:`features`. A kernel is evaluated eagerly, where numerically-zero directions
are dropped, so its data bases have r_H = min(N, d_l) and r_Δ = min(R, m_l) columns; an update runs under
``jit``, where the kept count is unknown and the bases keep all N (resp. R) columns (:func:`._kron.gram_basis`).
The counts are estimates, not bounds: a factor of a few either way is expected (memory traffic, compile time).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple


class Cost(NamedTuple):
    """Operation counts: ``kernel`` Θ_G on the training points (features included), ``update`` one parameter
    update Δθ in Gram form (features included)."""

    kernel: float
    update: float


@dataclasses.dataclass(frozen=True)
class Size:
    """A problem size: ``n`` samples, ``k`` whitened rows per sample, per-layer input widths ``fan_in`` (bias
    column included) and output widths ``fan_out``."""

    n: int
    k: int
    fan_in: tuple[int, ...]
    fan_out: tuple[int, ...]

    @property
    def rows(self) -> int:
        return self.n * self.k

    @property
    def depth(self) -> int:
        return len(self.fan_in)

    @property
    def layers(self):
        """(d_l, m_l) per layer."""
        return tuple(zip(self.fan_in, self.fan_out))

    def ranks(self, jitted: bool):
        """(r_H, r_Δ) per layer: the data bases' sizes (module docstring)."""
        if jitted:
            return tuple((self.n, self.rows) for _ in self.fan_in)
        return tuple((min(self.n, d), min(self.rows, m)) for d, m in self.layers)

    @classmethod
    def of(cls, net, n: int, k: int, infinite: bool = False) -> "Size":
        """The size of ``net`` on ``n`` samples with ``k`` rows each; ``infinite``: the infinite-width kernels
        (N×N per layer, output-diagonal: every width counts as N and k as 1)."""
        if infinite:
            return cls(n, 1, (n,) * net.depth, (n,) * net.depth)
        return cls(n, k, tuple(i + int(net.bias) for i in net.fan_in), tuple(net.fan_out))


def eigh(n: float) -> float:
    return 9.0 * n**3


def svd(m: float, n: float) -> float:
    m, n = max(m, n), min(m, n)
    return 4.0 * m * n**2 + 22.0 * n**3


def matmul(m: float, k: float, n: float) -> float:
    return 2.0 * m * k * n


def features(size: Size) -> float:
    """Forward pass, R backward passes and the Grams K^H_l, K^Δ_l (and Θ_l = K^H ⊙ K^Δ) of every layer."""
    n, r = size.n, size.rows
    return sum(2.0 * r * d * m + matmul(n, d, n) + matmul(r, m, r) + 2.0 * r * r for d, m in size.layers)


def per_layer(size: Size, term) -> float:
    """Σ_l term(d_l, m_l)."""
    return sum(term(d, m) for d, m in size.layers)


def solves(size: Size, n_solves: float, order: float, rhs: float) -> float:
    """``n_solves`` eigendecomposition solves of order ``order`` with ``rhs`` right-hand sides."""
    return n_solves * (eigh(order) + 2.0 * matmul(order, order, rhs))


def diagonal_basis_kernel(r: float, rh: float, rd: float) -> float:
    """:func:`._kron.diagonal_basis_kernel` on R training rows with bases of r_H and r_Δ columns, and the fitted
    scales s (the (p, q)-pair products dominate: 2R²r_Δr_H)."""
    return matmul(r * r, rd, rh) + 2.0 * r * r * rh + matmul(rh, r, rd)


def diagonal_basis_update(n: float, r: float, d: float, m: float, rh: float, rd: float) -> float:
    """:func:`._kron.diagonal_basis_direction` (gradient coordinates, the scaled solve, back to d×m) and the
    fitted scales."""
    return 2 * matmul(rh, r, rd) + matmul(n, rh, rd) + matmul(n, rd, r) + matmul(d, n, r) + matmul(d, r, m)


def gram_solve_cost(n_solves_per_layer: int = 0, global_solves: int = 0):
    """The cost of a method made of eigendecomposition solves of order R = N·k: ``n_solves_per_layer`` per layer
    and ``global_solves`` on the summed NTK (exact NGD: one; EF, iEF, SF: two, with the sample weights)."""

    def cost(size: Size, options: dict) -> Cost:
        r = size.rows
        count = n_solves_per_layer * size.depth + global_solves
        return Cost(features(size) + solves(size, count, r, r), features(size) + solves(size, count, r, 1))

    return cost


__all__ = ["Cost", "Size", "diagonal_basis_kernel", "diagonal_basis_update", "eigh", "features", "gram_solve_cost",
           "matmul", "per_layer", "solves", "svd"]
