"""Isotropy of a function-space kernel, and what theory predicts for it on the actual data.

``isotropy(K)`` measures α = tr(K)/(NC) and the relative deviation ||K − αI||_F / ||αI||_F
(THEORY.md "Setup"). ``predict(...)`` states, per method, the theoretical α of THEORY.md
claims 1–7 and checks the conditions it rests on *on the data* (numerical ranks of every
K^H_l, K^Δ_l, Θ_l, the damping, the residual), naming the first one that fails. The prediction
is computed from ranks, counts and the pattern S, never from the method's kernel.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import methods
from .function_space import layer_kernels
from .methods import _linalg
from .methods.kfac import CONVENTIONS
from .methods.layerwise import check_pattern, tridiagonal_pattern


@dataclasses.dataclass(frozen=True)
class Isotropy:
    alpha: float  # tr(K)/(NC)
    deviation: float  # ||K − αI||_F / ||αI||_F
    off_diagonal: float  # ||K − diag(K)||_F / ||αI||_F
    diagonal_spread: float  # (max diag − min diag) / α

    def is_isotropic(self, tol: float = 1e-8) -> bool:
        return bool(np.isfinite(self.deviation) and self.deviation <= tol)


def isotropy(K) -> Isotropy:
    """α and relative deviation of a square kernel K from α·I."""
    K = np.asarray(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"isotropy needs a square kernel, got shape {K.shape}")
    n = K.shape[0]
    diag = np.diag(K)
    alpha = float(np.mean(diag))
    scale = abs(alpha) * np.sqrt(n)
    if scale == 0:
        return Isotropy(alpha, float("inf"), float("inf"), float("inf"))
    return Isotropy(
        alpha=alpha,
        deviation=float(np.linalg.norm(K - alpha * np.eye(n)) / scale),
        off_diagonal=float(np.linalg.norm(K - np.diag(diag)) / scale),
        diagonal_spread=float((diag.max() - diag.min()) / abs(alpha)),
    )


@dataclasses.dataclass(frozen=True)
class Condition:
    name: str
    holds: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Theory for one method on one data set: α (if any), whether isotropy is predicted, why."""

    method: str
    alpha: float | None
    isotropic: bool
    conditions: tuple[Condition, ...]
    note: str = ""

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(f"{self.method}: {c.detail}" for c in self.conditions if not c.holds)

    def summary(self) -> str:
        if self.failed:
            return self.failed[0] + "; not isotropic"
        return f"{self.method}: isotropic, alpha = {self.alpha:g}" if self.isotropic else f"{self.method}: {self.note}"


def _full_rank(name: str, K, size: int, what: str, rcond=None, size_name: str = "N") -> Condition:
    r = _linalg.rank(K, rcond)
    detail = f"{what} has rank {r} < {size_name} = {size}" if r < size else f"{what} has full rank {size}"
    return Condition(name, r >= size, detail)


def _damping_condition(damping: float) -> Condition:
    return Condition("damping", damping == 0, f"damping {damping:g} > 0 (claims hold as damping -> 0)")


def predict(net, X, method: str, params=None, damping: float = 0.0, residual=None, lk=None, rcond=None,
            **options) -> Prediction:
    """Theoretical α and its conditions for ``method`` on (net, X, params) (THEORY.md claims 1–7)."""
    methods.get(method)
    lk = layer_kernels(net, X, params=params) if lk is None else lk
    n = lk.fwd.shape[1]
    rows = lk.ntk.shape[1]  # N·c (c = 1 for output-diagonal kernels)
    L = lk.depth
    damp = _damping_condition(damping)
    rows_name = "N" if rows == n else "N*C"
    layer_full = [_full_rank(f"ntk_{l + 1}", lk.ntk[l], rows, f"layer {l + 1}'s NTK block", rcond, rows_name)
                  for l in range(L)]

    if method == "gd":
        return Prediction(method, None, False, (), note="gradient descent: Θ/N, isotropic only if the NTK is")
    if method == "exact":
        cond = (_full_rank("ntk", lk.total_ntk, rows, "the NTK", rcond, rows_name), damp)
        return _verdict(method, 1.0, cond)
    if method in ("block_diag", "block_tridiag", "pattern"):
        S = _pattern_for(method, L, options)
        ones = np.ones(L)
        in_range = np.linalg.norm(S @ np.linalg.lstsq(S, ones, rcond=None)[0] - ones) < 1e-10
        alpha = float(ones @ np.linalg.pinv(S) @ ones)
        cond = (*layer_full, Condition("ones_in_range", in_range, "1 is not in the range of the pattern S"), damp)
        return _verdict(method, alpha, cond)
    if method == "kfac":
        return _predict_kfac(lk, n, rows, damp, options.get("kfac_readout", "common"), rcond)
    if method == "unit_wise":
        return _predict_unit_wise(net, lk, n, damp, rcond)
    if method in ("ef", "ief", "sf"):
        return _predict_residual_method(method, lk, n, residual, damp, rcond)
    raise ValueError(f"no theory recorded for method {method!r}")


def _pattern_for(method, L, options):
    if method == "block_diag":
        return np.eye(L)
    if method == "block_tridiag":
        return tridiagonal_pattern(L)
    if options.get("pattern") is not None:
        return check_pattern(options["pattern"], L)
    return methods.banded_pattern(L, int(options.get("bandwidth", 0)))


def _verdict(method, alpha, conditions, note="") -> Prediction:
    ok = all(c.holds for c in conditions)
    return Prediction(method, alpha, ok, tuple(conditions), note)


def _predict_kfac(lk, n, rows, damp, convention, rcond) -> Prediction:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown kfac_readout {convention!r}; choose one of: {', '.join(CONVENTIONS)}")
    L = lk.depth
    cond = []
    for l in range(L):
        what = "first-layer input Gram" if l == 0 else f"layer {l + 1}'s input Gram"
        cond.append(_full_rank(f"fwd_{l + 1}", lk.fwd[l], n, what, rcond))
        if l < L - 1:
            cond.append(_full_rank(f"bwd_{l + 1}", lk.bwd[l], rows, f"layer {l + 1}'s backward Gram", rcond,
                                   "N" if rows == n else "N*C"))
    alpha = float(n * L) if convention == "paper" else float(n * (L - 1) + 1)
    return _verdict("kfac", alpha, (*cond, damp))


def _predict_unit_wise(net, lk, n, damp, rcond) -> Prediction:
    cond = [_full_rank(f"fwd_{l + 1}", lk.fwd[l], n, f"layer {l + 1}'s input Gram", rcond) for l in range(lk.depth)]
    if lk.deltas is None:  # infinite width: leading order in M
        p = methods.unitwise.ACTIVE_FRACTION.get(net.activation, 1.0)
        return _verdict("unit_wise", p * float(np.sum(net.hidden)) + 1.0, (*cond, damp))
    cond.append(Condition("single_output", lk.out_dim == 1, "C > 1: unit blocks are not diagonal projectors"))
    active = sum(np.sum(np.asarray(d[:, 0, :]) != 0, axis=1) for d in lk.deltas[:-1]) if lk.depth > 1 else np.zeros(n)
    active = np.asarray(active, dtype=float)
    equal = bool(np.all(active == active[0]))
    cond.append(Condition("equal_active_counts", equal,
                          f"active hidden units per sample range {active.min():g}..{active.max():g} (~M^-1/2 spread)"))
    return _verdict("unit_wise", float(np.mean(active) + 1.0), (*cond, damp))


def _predict_residual_method(method, lk, n, residual, damp, rcond) -> Prediction:
    theta = methods.empirical.full_output_ntk(lk)
    cond = [_full_rank("ntk", theta, theta.shape[0], "the NTK", rcond, "N*C"), damp]
    if method == "sf":
        return Prediction(method, None, False, tuple(cond), note="sampled Fisher: Θ_SF = Q⁻¹, random, not isotropic")
    if residual is None:
        raise ValueError(f"method {method!r} needs residual=")
    r = np.asarray(residual).reshape(n, -1)
    nonzero = bool(np.all(np.any(r != 0, axis=1)))
    cond.append(Condition("nonzero_residual", nonzero, "a sample has residual exactly 0"))
    single = r.shape[1] == 1
    if method == "ef":
        alpha = float(np.mean(1.0 / r**2)) if nonzero and single else None
        equal = single and bool(np.allclose(np.abs(r), np.abs(r[0, 0]), rtol=1e-12, atol=0))
        cond.append(Condition("equal_abs_residuals", equal, "EF kernel is diag(1/r²): isotropic only if all |r| agree"))
        return _verdict(method, alpha, cond)
    cond.append(Condition("single_output", single, "C > 1: iEF is an oblique projector, not the identity"))
    return _verdict(method, 1.0, cond)


def layer_ranks(lk, rcond=None) -> dict:
    """Numerical ranks of every K^H_l, K^Δ_l and Θ_l (for reports)."""
    return {
        "fwd": [_linalg.rank(k, rcond) for k in lk.fwd],
        "bwd": [_linalg.rank(k, rcond) for k in lk.bwd],
        "ntk": [_linalg.rank(k, rcond) for k in lk.ntk],
        "size": int(lk.ntk.shape[1]),
    }


def relative_error(a, b) -> float:
    """max|a − b| / max|b| (0 when both vanish)."""
    a, b = np.asarray(a), np.asarray(b)
    denom = float(np.max(np.abs(b))) if b.size else 0.0
    num = float(np.max(np.abs(a - b))) if a.size else 0.0
    return num / denom if denom > 0 else num


__all__ = ["Isotropy", "Prediction", "Condition", "isotropy", "predict", "layer_ranks", "relative_error"]
