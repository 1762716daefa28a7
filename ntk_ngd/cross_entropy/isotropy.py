"""Cross-entropy isotropy: theory for the whitened operator RΘ_GRᵀ and a table like the MSE one
(THEORY.md "Cross-entropy NGD in function space").

The softmax Fisher is F = J̃ᵀJ̃/N with J̃ = RJ (R = blockdiag(R_n), R_nᵀR_n = Λ_n), so a method is
isotropic for cross-entropy when Θ̃_G = RΘ_GRᵀ = α·I_{N(C−1)}. The conditions are those of the MSE
claims applied to the whitened layer kernels Θ̃_l = RΘ_lRᵀ:

* exact: α = 1 when Θ̃ = Σ_l Θ̃_l has full rank N(C−1);
* block_diag: α = L when every Θ̃_l has full rank N(C−1) (a narrow readout breaks it);
* kfac ("common" readout): α = N(L−1)+1 when the MSE K-FAC rank conditions hold *and* every Λ_n
  is the same matrix (true at f = 0, i.e. infinite width at initialisation); otherwise the readout
  contributes blockdiag(R_n Λ̄⁺ R_nᵀ), Λ̄ = mean_n Λ_n, and the operator is not isotropic;
* gd: Θ̃/N, isotropic only by accident; ef/ief have no fixed operator (their step depends on g).
"""
from __future__ import annotations

import numpy as np

from .. import datasets
from ..diagnostics import Condition, Prediction, _damping_condition, _full_rank, _verdict
from ..kernels import LayerKernels, layer_kernels
from ..networks import mlp
from .kernels import KERNEL_METHODS, METHODS, check_method, initial_logits, logit_kernels
from .softmax import fisher_blocks, whitening

#: ||Λ_n − Λ̄||_F / ||Λ̄||_F below this counts as "every Λ_n is the same matrix".
EQUAL_LAMBDA_TOL = 1e-12


def whitened_layer_ntks(lk: LayerKernels, logits) -> np.ndarray:
    """Θ̃_l = R Θ_l Rᵀ, shape (L, N(C−1), N(C−1)); output-diagonal kernels are expanded to Θ_l ⊗ I_C."""
    f = np.asarray(logits, float)
    n, c = f.shape
    R = np.asarray(whitening(f, np.eye(c)[np.zeros(n, int)])[0])  # R depends on f only
    ntk = np.asarray(lk.ntk)
    if lk.output_diagonal:
        ntk = np.einsum("lnm,cd->lncmd", ntk, np.eye(c)).reshape(ntk.shape[0], n * c, n * c)
    blocks = np.zeros((n * (c - 1), n * c))
    for i in range(n):
        blocks[i * (c - 1):(i + 1) * (c - 1), i * c:(i + 1) * c] = R[i]
    return np.einsum("ab,lbd,ed->lae", blocks, ntk, blocks)


def predict_logit(net, X, method: str, params=None, logits=None, damping: float = 0.0, lk=None) -> Prediction:
    """Theoretical α of RΘ_GRᵀ and its conditions (module docstring), from ranks and Λ_n only."""
    check_method(method)
    lk = layer_kernels(net, X, params=params) if lk is None else lk
    f = initial_logits(net, params, X) if logits is None else np.asarray(logits, float)
    n, c = f.shape
    size, damp = n * (c - 1), _damping_condition(damping)
    if method in ("ef", "ief"):
        return Prediction(method, None, False, (), "no fixed operator: the step depends on the logit gradient g")
    if method == "gd":
        return Prediction(method, None, False, (), "gradient descent: RΘRᵀ/N, isotropic only if that is")
    whitened = whitened_layer_ntks(lk, f)
    if method == "exact":
        return _verdict(method, 1.0, (_full_rank("ntk", whitened.sum(0), size, "the whitened NTK RΘRᵀ", None,
                                                 "N(C-1)"), damp))
    if method == "block_diag":
        cond = [_full_rank(f"ntk_{l + 1}", whitened[l], size, f"layer {l + 1}'s whitened block RΘ_lRᵀ", None,
                           "N(C-1)") for l in range(lk.depth)]
        return _verdict(method, float(lk.depth), (*cond, damp))
    lam = np.asarray(fisher_blocks(f))
    mean = lam.mean(axis=0)
    spread = float(np.linalg.norm(lam - mean) / (np.sqrt(n) * np.linalg.norm(mean)))
    same = Condition("equal_lambda", spread <= EQUAL_LAMBDA_TOL,
                     f"the softmax Hessians Λ_n differ across samples (spread {spread:.2g}): the readout adds "
                     "blockdiag(R_n Λ̄⁺ R_nᵀ)" if spread > EQUAL_LAMBDA_TOL else "every Λ_n is the same matrix")
    cond = []
    rows = lk.ntk.shape[1]
    for l in range(lk.depth):
        cond.append(_full_rank(f"fwd_{l + 1}", lk.fwd[l], n, f"layer {l + 1}'s input Gram"))
        if l < lk.depth - 1:
            cond.append(_full_rank(f"bwd_{l + 1}", lk.bwd[l], rows, f"layer {l + 1}'s backward Gram", None,
                                   "N" if rows == n else "N*C"))
    return _verdict(method, float(n * (lk.depth - 1) + 1), (*cond, same, damp))


def isotropy_rows(depths, widths, method_names=METHODS, n: int = 16, in_dim: int = 32, classes: int = 3,
                  activation: str = "relu", seed: int = 0, damping: float = 0.0, progress=None) -> list[dict]:
    """Rows in the format of :func:`ntk_ngd.isotropy_table.isotropy_rows`, for the cross-entropy operator.

    Data: ``datasets.synthetic`` with ``classes`` teacher outputs, labels = argmax. Logits: 0 at infinite
    width, f(X; θ₀) at finite width."""
    for m in method_names:
        check_method(m)
    X, Y = datasets.synthetic(n, in_dim, out_dim=classes, seed=seed)
    labels = np.argmax(Y, axis=1)
    rows = []
    for depth in depths:
        for width in widths:
            net = mlp(depth=depth, width=width or 1024, in_dim=in_dim, out_dim=classes, activation=activation)
            params = None if width is None else net.init(seed)
            lk = layer_kernels(net, X, params=params)
            for m in method_names:
                row = {"method": m, "depth": depth, "width": "inf" if width is None else int(width)}
                pred = predict_logit(net, X, m, params=params, damping=damping, lk=lk)
                if m in KERNEL_METHODS:
                    op = logit_kernels(net, X, labels, m, params=params, damping=damping)
                    row.update(alpha=op.alpha, deviation=op.deviation, isotropic=op.deviation <= 1e-8)
                else:
                    row.update(alpha=None, deviation=None, isotropic=False)
                row.update(theory_alpha=pred.alpha, theory_deviation=None, predicted_isotropic=pred.isotropic,
                           failed=pred.failed[0] if pred.failed else (pred.note if not pred.isotropic else ""))
                rows.append(row)
                if progress is not None:
                    progress.update(1)
    return rows
