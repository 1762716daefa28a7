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
    #: where the theory gives Θ_G's diagonal in closed form (kpsvd, ekfac, diag): that diagonal; where it
    #: also says Θ_G is diagonal (kpsvd): the deviation ||diag − mean||/(mean·√(NC)) it implies.
    diagonal: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    deviation: float | None = None

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
    """Theoretical α and its conditions for ``method`` on (net, X, params) (THEORY.md claims 1–7 and
    "Kronecker-basis approximations: KPSVD, EKFAC, diagonal Fisher")."""
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
    if method == "kpsvd":
        return _predict_kpsvd(lk, n, rows, damp, options.get("rank", 1), rcond)
    if method == "ekfac":
        return _predict_ekfac(lk, n, rows, damp, rcond)
    if method == "diag":
        return _predict_diag(net, X, params, lk, n, rows, damp)
    if method == "kfac_cor":
        if lk.depth == 1:  # the readout block is exactly A ⊗ I_C: K-FAC is exact, the correction 0
            return _verdict(method, 1.0, (_full_rank("fwd_1", lk.fwd[0], n, "the input Gram", rcond), damp))
        return Prediction(method, None, False, (), "kfac_cor: no closed form for hidden layers (K-FAC + a "
                          "rank-1 Kronecker correction of its remainder); not predicted isotropic")
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


# ---------------------------------------------------------------------------------------------
# Kronecker-basis methods (THEORY.md "Kronecker-basis approximations: KPSVD, EKFAC, diagonal Fisher")
# ---------------------------------------------------------------------------------------------
def kpsvd_weights(fwd, bwd, n: int, c: int, rank: int = 1) -> np.ndarray:
    """w_n = Σ_{i≤k} σ_i a_{i,n} b_{i,n} of layer blocks Σ σ_i A_i⊗B_i, A_i = Σ_n a_{i,n}h̃_nh̃_nᵀ,
    B_i = Σ_n b_{i,n}Σ_cδ_{n,c}δ_{n,c}ᵀ (||A_i||_F = ||B_i||_F = 1).

    From the singular-vector equations of R(F_l) = UVᵀ/N (G_U = UᵀU = K^H∘K^H, G_V = VᵀV):
    G_U a = Nσ b and G_V b = Nσ a, so a is an eigenvector of the non-symmetric G_V G_U with eigenvalue
    N²σ² (numpy ``eig``; the method itself uses an SVD of G_U^{1/2}G_V^{1/2}), aᵀG_Ua = 1, b = G_Ua/(Nσ).
    """
    fwd, bwd = np.asarray(fwd, float), np.asarray(bwd, float)
    G_U = fwd**2
    G_V = np.sum((bwd**2).reshape(n, c, n, c), axis=(1, 3))
    lam, vecs = np.linalg.eig(G_V @ G_U)
    order = np.argsort(-lam.real)
    w = np.zeros(n)
    for i in order[:rank]:
        if lam.real[i] <= n * np.finfo(float).eps * lam.real[order[0]]:
            break
        a = vecs[:, i].real
        a = a / np.sqrt(a @ G_U @ a)
        sigma = np.sqrt(lam.real[i]) / n
        w += sigma * a * (G_U @ a) / (n * sigma)
    return w


def _eigen_coordinates(K, rcond=None) -> np.ndarray:
    """Q√λ over the numerically non-zero eigenvalues of a PSD Gram (numpy)."""
    lam, Q = np.linalg.eigh(np.asarray(K, float))
    cut = (_linalg.default_rcond(len(lam)) if rcond is None else rcond) * np.max(np.abs(lam))
    keep = lam > cut
    return Q[:, keep] * np.sqrt(lam[keep])


def fitted_basis_diagonal(h, d, n: int) -> np.ndarray:
    """Diagonal of (1/N) Σ_ij z_ij z_ijᵀ / s_ij, z_ij = (h_{p,i} d_{p,j})_p, s_ij = ||z_ij||²/N: every row's
    share Σ_ij z_{p,ij}²/||z_ij||² of the unit-vector frame (EKFAC, diag at ρ = 0; s_ij = 0 terms vanish)."""
    h2, d2 = np.asarray(h, float) ** 2, np.asarray(d, float) ** 2
    s = h2.T @ d2
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    return np.sum((h2 @ inv) * d2, axis=1)


def _diagonal_verdict(method, alpha, diag, cond, isotropic_if_constant, what, diagonal_kernel=False) -> Prediction:
    """Verdict from a predicted diagonal; ``diagonal_kernel``: the theory says Θ_G is diagonal, so the
    diagonal's deviation is the kernel's (kpsvd), else it is only a lower bound and not reported."""
    mean = float(np.mean(diag))
    spread = float((diag.max() - diag.min()) / mean)
    deviation = float(np.linalg.norm(diag - mean) / (mean * np.sqrt(diag.size)))
    constant = spread <= 1e-8
    cond = (*cond, Condition("constant_diagonal", constant, f"{what}; predicted diagonal spread {spread:.2g}"))
    ok = all(c.holds for c in cond) and isotropic_if_constant
    note = "" if ok else (f"{what}: diagonal constant, but isotropy needs a tight frame (not predicted)"
                          if all(c.holds for c in cond) else "")
    return Prediction(method, alpha, ok, cond, note, diagonal=diag, deviation=deviation if diagonal_kernel else None)


def _predict_kpsvd(lk, n, rows, damp, rank, rcond) -> Prediction:
    """Hidden layer with rank K^H = N, rank K^Δ = NC: diag(1/(N w)); readout: I (full-rank K^H_L)."""
    methods.kpsvd.check_rank(rank)
    L, c = lk.depth, rows // n
    cond = [_full_rank(f"fwd_{l + 1}", lk.fwd[l], n, f"layer {l + 1}'s input Gram", rcond) for l in range(L)]
    cond += [_full_rank(f"bwd_{l + 1}", lk.bwd[l], rows, f"layer {l + 1}'s backward Gram", rcond,
                        "N" if rows == n else "N*C") for l in range(L - 1)]
    cond.append(damp)
    if not all(x.holds for x in cond):
        return Prediction("kpsvd", None, False, tuple(cond))
    hidden = [kpsvd_weights(lk.fwd[l], lk.bwd[l], n, c, rank) for l in range(L - 1)]
    diag = 1.0 + sum(np.repeat(1.0 / (n * w), c) for w in hidden) if hidden else np.ones(rows)
    what = "hidden layers contribute diag(1/(N Σσ a∘b))" if hidden else "readout only: exact block"
    return _diagonal_verdict("kpsvd", float(np.mean(diag)), diag, cond, True, what, diagonal_kernel=True)


def _predict_ekfac(lk, n, rows, damp, rcond) -> Prediction:
    """α = Σ_l rank K^H_l · rank K^Δ_l / (NC) (tr Θ = #{s_ij > 0}); diagonal from the unit frame."""
    L, c = lk.depth, rows // n
    coords = [(np.repeat(_eigen_coordinates(lk.fwd[l], rcond), c, axis=0), _eigen_coordinates(lk.bwd[l], rcond))
              for l in range(L)]
    alpha = float(sum(h.shape[1] * d.shape[1] for h, d in coords) / rows)
    cond = (_full_rank(f"fwd_{L}", lk.fwd[L - 1], n, "the readout's input Gram", rcond), damp)
    diag = sum(fitted_basis_diagonal(h, d, n) for h, d in coords)
    what = "hidden layers contribute a frame of unit vectors" if L > 1 else "readout only: exact block"
    return _diagonal_verdict("ekfac", alpha, diag, cond, L == 1, what)


def _predict_diag(net, X, params, lk, n, rows, damp) -> Prediction:
    """α = #{active parameters}/(NC) (tr Θ = #{d_p > 0}); diagonal from the unit frame of J's columns."""
    from .methods.diagonal import INFINITE_WIDTH, unit_features, with_inputs

    if lk.deltas is None or params is None:
        raise ValueError(INFINITE_WIDTH)
    lk = with_inputs(lk, net, params, X)
    feats = [tuple(np.asarray(f, float) for f in unit_features(lk, l, rows // n)) for l in range(lk.depth)]
    active = sum(int(np.sum(((h != 0).T.astype(float) @ (d != 0).astype(float)) > 0)) for h, d in feats)
    diag = sum(fitted_basis_diagonal(h, d, n) for h, d in feats)
    return _diagonal_verdict("diag", active / rows, diag, (damp,), False,
                             f"sum over {active} active parameters of unit projectors")


def kron_fit_errors(lk, n: int, ranks=(1, 2, 3)) -> list[dict]:
    """Relative Frobenius error ||F_l − G_l||_F/||F_l||_F of each layer's fit G_l, from Grams only.

    ||F_l||² = ||Θ_l||²/N² (F = JᵀJ/N and JJᵀ share their non-zero spectrum). K-FAC (A ⊗ B, A = H̃ᵀH̃/N,
    B = ΔᵀΔ/N): ||A⊗B||² = ||K^H||²||K^Δ||²/N⁴ and ⟨F, A⊗B⟩ = (1/N³) Σ_{(n,c)} (K^H)²_{nn}(K^Δ)²_{(nc),(nc)}.
    KPSVD rank k: ||F||² − Σ_{i≤k} σ_i² (Eckart–Young on R(F)). EKFAC: ||F||² − ||s||² (s = diag(UᵀFU),
    only UᵀFU's off-diagonal is left). diag: ||F||² − Σ_p d_p² (finite width, needs ``lk.inputs``;
    None otherwise). Output-diagonal (infinite-width) kernels give the errors of the C = 1 problem.
    """
    from .methods import _kron
    from .methods.diagonal import unit_features
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
        if getattr(lk, "inputs", None) is not None:
            errors["diag"] = F2 - float(np.sum(np.asarray(_kron.fitted_scales(*unit_features(lk, l, c), n)) ** 2))
        out.append({m: float(np.sqrt(max(e, 0.0) / F2)) for m, e in errors.items()})
    return out


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


__all__ = ["Isotropy", "Prediction", "Condition", "isotropy", "predict", "layer_ranks", "relative_error",
           "kpsvd_weights", "fitted_basis_diagonal", "kron_fit_errors"]
