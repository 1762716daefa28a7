"""Isotropy of a function-space kernel, and what theory predicts for it on the actual data.

``isotropy(K)`` measures α = tr(K)/(N·k) and the relative deviation ||K − αI||_F / ||αI||_F
(THEORY.md "Setup"). ``predict(...)`` asks the method's own theory (``Method.predict``, THEORY.md
claims 1–7 and "Kronecker-basis approximations") for α and the conditions it rests on *on the data*
(numerical ranks of every K^H_l, K^Δ_l, Θ_l, the damping, the residual), naming the first one that
fails, or an explicit "theory silent" answer. Predictions are computed from ranks, counts and the
pattern S, never from the method's kernel.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import methods, problem as _problem
from .kernels import layer_kernels
from .methods.base import Condition, Prediction


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


def predict(net, X, method: str, params=None, damping: float = 0.0, residual=None, lk=None, rcond=None,
            loss: str = "mse", outputs=None, targets=None, **options) -> Prediction:
    """Theoretical α and its conditions for ``method`` on (net, X, params): the method's ``predict`` on the
    loss-whitened layer kernels (``lk`` reuses precomputed unwhitened ``layer_kernels``). Arguments as in
    :func:`ntk_ngd.function_space.method_kernels`."""
    spec = methods.get(method)
    prob = _problem.prepare(net, X, params, loss, targets, outputs, residual)
    if spec.finite_width_only and params is None:
        raise ValueError(spec.finite_width_only)
    ctx = _problem.context(spec, prob, damping, rcond, options)
    train = layer_kernels(net, prob.X, params=params) if lk is None else lk
    train, _ = _problem.whiten(prob, train, None)
    return spec.predict(train, ctx)


def kron_fit_errors(lk, n: int, ranks=(1, 2, 3)) -> list[dict]:
    """Relative Frobenius error ||F_l − G_l||_F/||F_l||_F of each layer's fit G_l, from Grams only.

    ||F_l||² = ||Θ_l||²/N² (F = JᵀJ/N and JJᵀ share their non-zero spectrum). K-FAC (A ⊗ B, A = H̃ᵀH̃/N,
    B = ΔᵀΔ/N): ||A⊗B||² = ||K^H||²||K^Δ||²/N⁴ and ⟨F, A⊗B⟩ = (1/N³) Σ_{(n,c)} (K^H)²_{nn}(K^Δ)²_{(nc),(nc)}.
    KPSVD rank k: ||F||² − Σ_{i≤k} σ_i² (Eckart–Young on R(F)). EKFAC: ||F||² − ||s||² (s = diag(UᵀFU),
    only UᵀFU's off-diagonal is left). diag: ||F||² − Σ_p d_p² (finite width, needs ``lk.inputs``;
    None otherwise). Output-diagonal (infinite-width) kernels give the errors of the C = 1 problem.
    """
    from .methods import _kron
    from .methods.diag import unit_features
    from .methods.ekfac import eigen_coordinates
    from .methods.kpsvd import kronecker_svd

    c = lk.n_outputs_per_sample
    out = []
    for l in range(lk.depth):
        fwd, bwd = np.asarray(lk.fwd[l], float), np.asarray(lk.bwd[l], float)
        F2 = float(np.sum(np.asarray(lk.ntk[l], float) ** 2)) / n**2
        H2 = np.diag(fwd @ fwd)
        cross = float(np.sum(np.repeat(H2, c) * np.diag(bwd @ bwd))) / n**3
        kfac2 = float(np.sum(fwd**2) * np.sum(bwd**2)) / n**4
        errors = {"kfac": F2 - 2 * cross + kfac2}
        sig = np.asarray(kronecker_svd(lk.fwd[l], lk.bwd[l], n, c, max(ranks))[0])
        for k in ranks:
            errors[f"kpsvd{k}"] = F2 - float(np.sum(sig[:k] ** 2))
        s = eigen_coordinates(lk.fwd[l], lk.bwd[l], lk.fwd[l], lk.bwd[l], n, c)[-1]
        errors["ekfac"] = F2 - float(np.sum(np.asarray(s) ** 2))
        if lk.inputs is not None:
            errors["diag"] = F2 - float(np.sum(np.asarray(_kron.fitted_scales(*unit_features(lk, l), n)) ** 2))
        out.append({m: float(np.sqrt(max(e, 0.0) / F2)) for m, e in errors.items()})
    return out


__all__ = ["Condition", "Isotropy", "Prediction", "isotropy", "kron_fit_errors", "predict"]
