"""Conditions the predictions rest on, evaluated on the data (THEORY.md claims 1–7): numerical
ranks with the cut-off of the solves, the damping, the readout's backward structure."""
from __future__ import annotations

import numpy as np

from .. import linalg
from .base import Condition


def full_rank(name: str, K, size: int, what: str, rcond=None, size_name: str = "N") -> Condition:
    """rank K = size, counted with :func:`ntk_ngd.linalg.rank` (the solves' cut-off)."""
    r = linalg.rank(K, rcond)
    detail = f"{what} has rank {r} < {size_name} = {size}" if r < size else f"{what} has full rank {size}"
    return Condition(name, r >= size, detail)


def undamped(damping) -> Condition:
    """The isotropy claims are statements about ρ → 0⁺."""
    rho = float(damping.value)
    return Condition("damping", rho == 0, f"damping {rho:g} > 0 (claims hold as damping -> 0)")


def rows_name(lk) -> str:
    """"N" for output-diagonal or single-output kernels, "N*C" or "N*(C-1)" (whitened) otherwise."""
    return lk.rows_label


def layer_blocks_full_rank(lk, rcond=None) -> list[Condition]:
    rows = lk.ntk.shape[1]
    return [full_rank(f"ntk_{l + 1}", lk.ntk[l], rows, f"layer {l + 1}'s NTK block", rcond, rows_name(lk))
            for l in range(lk.depth)]


def input_grams_full_rank(lk, rcond=None, layers=None) -> list[Condition]:
    n = lk.fwd.shape[1]
    layers = range(lk.depth) if layers is None else layers
    return [full_rank(f"fwd_{l + 1}", lk.fwd[l], n, "first-layer input Gram" if l == 0 else f"layer {l + 1}'s input Gram",
                      rcond) for l in layers]


def backward_grams_full_rank(lk, rcond=None, layers=None) -> list[Condition]:
    rows = lk.ntk.shape[1]
    layers = range(lk.depth - 1) if layers is None else layers
    return [full_rank(f"bwd_{l + 1}", lk.bwd[l], rows, f"layer {l + 1}'s backward Gram", rcond, rows_name(lk))
            for l in layers]


#: relative spread of the readout's per-sample backward blocks that still counts as "all equal"
#: (rounding: the blocks are products of O(1) numbers, so 1e-12 ≫ the float64 error of ~1e-15)
EQUAL_BLOCKS_TOL = 1e-12


def equal_readout_blocks(lk) -> Condition:
    """The readout's backward Gram is 1_{N×N} ⊗ B̄ (every sample's block equal). Always true for MSE
    (B̄ = I_C); for cross-entropy whitened kernels it means every Λ_n is the same matrix."""
    n = lk.fwd.shape[1]
    c = lk.n_outputs_per_sample
    blocks = np.asarray(lk.bwd[-1]).reshape(n, c, n, c).transpose(0, 2, 1, 3)
    ref = blocks[0, 0]
    spread = float(np.max(np.abs(blocks - ref)) / max(np.max(np.abs(ref)), np.finfo(float).tiny))
    return Condition("equal_readout_blocks", spread <= EQUAL_BLOCKS_TOL,
                     f"readout backward blocks differ across samples (relative spread {spread:.1e}; cross-entropy: "
                     "unequal Lambda_n)" if spread > EQUAL_BLOCKS_TOL else "readout backward blocks all equal")
