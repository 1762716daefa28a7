"""Cross-entropy NGD in function space: the Gram form of every method (THEORY.md "Cross-entropy NGD
in function space").

With the whitening of :mod:`.softmax` (R = blockdiag(R_n), R_nᵀR_n = Λ_n, R_n1 = 0, ũ_n =
S_n^{−1/2}Vᵀg_n, g = Rᵀũ), the softmax Fisher and gradient are F = J̃ᵀJ̃/N and ∇L = J̃ᵀũ/N with
J̃ = RJ. Every approximation G of the six supported methods is the MSE-form approximation built
from J̃ (K-FAC: B_l = (1/N)Σ_n Δ_nᵀΛ_nΔ_n = (1/N)Σ_n Δ̃_nᵀΔ̃_n with whitened backward signals
Δ̃_n = R_nΔ_n; EF: per-sample gradients J_nᵀg_n = J̃_nᵀũ_n), so the MSE Gram forms of
:mod:`ntk_ngd.methods` apply to the whitened layer kernels

    K^H_l (unchanged),  K̃^Δ_l = R K^Δ_l Rᵀ,  Θ̃_l = (K^H_l ⊗ 1) ⊙ K̃^Δ_l = R Θ_l Rᵀ   (N(C−1) square).

Rows of a cross kernel (inputs x') are taken in the basis V of 1^⊥: Θ_l(x', X) → (I ⊗ Vᵀ)Θ_l(x', X)Rᵀ.
A logit step is only defined up to a multiple of 1_C per sample (it does not change p), and VᵀΔf
fixes it; the step returned is the representative orthogonal to 1: Δf(x') = V (VᵀΔf(x')).

    metric operator (training points):  Θ̃_G = R Θ_G Rᵀ = J̃(G + ρ)⁻¹J̃ᵀ/N   (= Λ^{1/2}Θ_GΛ^{1/2} in basis V),
    step:                               VᵀΔf(x') = −η [(I ⊗ Vᵀ) Θ_G(x', X) Rᵀ] ũ.

Θ̃_G = α I_{N(C−1)} is the cross-entropy isotropy statement (equivalently Π Θ_G Λ = α Π, Π the
per-sample projector orthogonal to 1; Θ_GΛ itself is an *oblique* projector, not Π). Then every
training step is α times the exact-NGD step, whose closed form is Δf_n ≡ −η Λ_n⁺g_n ≡ η y_n ⊘ p_n
(mod 1_C; for one-hot labels: the true-class logit rises by η/p_{n,y}, the others stay).

ρ = 0 is the ρ → 0⁺ limit: a pseudo-inverse of the whitened Grams (the methods' own
``_linalg`` solves). It stays finite although Λ (hence F) is singular, because ũ lives in
range(R) and the Grams are taken after whitening; the unwhitened Θ_G itself diverges like 1/ρ along
the per-sample 1 directions. EF and iEF have no fixed kernel: EF's whitened Fisher has rank N
< N(C−1) for C > 2 (kernel infinite at ρ = 0, step finite), and

    EF:  VᵀΔf(x') = −η Θ̃(x', X) Ũ (ŨᵀΘ̃Ũ + NρI)⁺ 1,     iEF: … (ŨᵀΘ̃Ũ + λI)⁺ s,  s_n = ||g_n||²,

Ũ (N(C−1) × N) holding ũ_n in sample n's rows; on training points (ρ = 0, ŨᵀΘ̃Ũ invertible)
g_nᵀΔf_n = −η (EF) and −η||g_n||² (iEF) per sample, vs −η g_nᵀΛ_n⁺g_n = −η(1 − p_{n,y})/p_{n,y} for
exact NGD.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate, methods
from ..diagnostics import isotropy
from ..kernels import LayerKernels, layer_kernels
from ..methods import _linalg
from ..methods.empirical import residual_factor
from ..methods.kfac import CONVENTIONS
from ..networks import Network
from .softmax import check_labels, null_basis, whitening

#: Methods with cross-entropy support, in the order figures and the CLI list them.
METHODS = ("gd", "exact", "block_diag", "kfac", "ef", "ief")
#: Methods whose function-space operator Θ̃_G is a fixed (residual-free) kernel.
KERNEL_METHODS = ("gd", "exact", "block_diag", "kfac")
OPTIONS = {"kfac": ("kfac_readout",)}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"cross_entropy supports methods {', '.join(METHODS)}; got {method!r}")
    return method


def normalise_options(method: str, options: dict) -> tuple:
    """Validated method options as a hashable tuple (for jit)."""
    allowed = OPTIONS.get(method, ())
    unknown = sorted(set(options) - set(allowed) - {"rcond"})
    if unknown:
        raise ValueError(f"method {method!r} takes no option(s) {unknown} with cross_entropy; "
                         f"its options: {list(allowed) + ['rcond']}")
    out = {}
    if options.get("rcond") is not None:
        out["rcond"] = _validate.nonnegative("rcond", options["rcond"])
    if method == "kfac":
        out["kfac_readout"] = _validate.choice("kfac_readout", options.get("kfac_readout", "common"), CONVENTIONS)
    return tuple(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# whitened layer kernels
# ---------------------------------------------------------------------------------------------
def _whiten(fwd, bwd, out_dim, output_diagonal, left, right):
    """(fwd, bwd, ntk) with bwd → (I ⊗ left_n) K^Δ (I ⊗ right_m)ᵀ; left (N1, k, C), right (N2, k, C)."""
    L, n1, n2 = fwd.shape
    k = right.shape[1]
    if output_diagonal:  # K^Δ ⊗ I_C
        b = jnp.einsum("nkc,lnm,mjc->lnkmj", left, bwd, right)
    else:
        b = jnp.einsum("nkc,lncmd,mjd->lnkmj", left, bwd.reshape(L, n1, out_dim, n2, out_dim), right)
    b = b.reshape(L, n1 * k, n2 * k)
    expanded = jnp.repeat(jnp.repeat(fwd, k, axis=1), k, axis=2)
    return fwd, b, expanded * b


def whiten_kernels(train: LayerKernels, left: LayerKernels, R) -> tuple[LayerKernels, LayerKernels]:
    """Whitened (train X×X, left X'×X) layer kernels: right side R_n, left side Rᵀ (train) / Vᵀ (left)."""
    c = train.out_dim
    V = null_basis(c, R.dtype)
    Vt = jnp.broadcast_to(V.T, (left.fwd.shape[1], c - 1, c))
    tw = LayerKernels(*_whiten(train.fwd, train.bwd, c, train.output_diagonal, R, R), out_dim=c - 1,
                      output_diagonal=False)
    lw = LayerKernels(*_whiten(left.fwd, left.bwd, c, left.output_diagonal, Vt, R), out_dim=c - 1,
                      output_diagonal=False)
    return tw, lw


def _empirical_weights(theta_w, u, g, n, damping, improved, rcond):
    """Ũ(ŨᵀΘ̃Ũ + shift)⁺ rhs: EF rhs = 1, shift Nρ; iEF rhs = ||g_n||², shift λ = ρ."""
    k = u.shape[1]
    U = residual_factor(u.reshape(-1), n, k)
    gram = U.T @ theta_w @ U
    rhs = jnp.sum(g**2, axis=1) if improved else jnp.ones(n, u.dtype)
    evals, evecs = _linalg.eigh_psd(gram)
    inv = _linalg.inverse_eigenvalues(evals, damping if improved else n * damping, rcond)
    return U @ (evecs @ (inv * (evecs.T @ rhs)))


def _core(method, opts, n, damping, c, output_diagonal, fwd, bwd, fwd_left, bwd_left, f, Y):
    """(step (N_left, C) = −Δf/η orthogonal to 1, metric Θ̃_G or None) at logits f (N, C)."""
    o = dict(opts)
    rcond = o.pop("rcond", None)
    train = LayerKernels(fwd, bwd, fwd, c, output_diagonal)  # ntk unused by _whiten
    left = LayerKernels(fwd_left, bwd_left, fwd_left, c, output_diagonal)
    R, u, g = whitening(f, Y)
    tw, lw = whiten_kernels(train, left, R)
    if method in ("ef", "ief"):
        w = _empirical_weights(tw.total_ntk, u, g, n, damping, method == "ief", rcond)
        step_v, metric = lw.total_ntk @ w, None
    else:
        mk = methods.get(method).kernel(tw, lw, n=n, damping=damping, residual=None, rcond=rcond, **o)
        step_v, metric = mk.test @ u.reshape(-1), mk.train
    V = null_basis(c, f.dtype)
    return step_v.reshape(-1, c - 1) @ V.T, metric


_core_jit = jax.jit(_core, static_argnums=(0, 1, 2, 3, 4, 5))


def core_arrays(train: LayerKernels, left: LayerKernels):
    return train.fwd, train.bwd, left.fwd, left.bwd


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LogitKernel:
    """One method's cross-entropy operator at logits f.

    ``metric``: Θ̃_G = RΘ_GRᵀ (N(C−1) square; None for ef/ief); ``step``/``step_test``: the logit
    step per unit learning rate, Δf = −lr·step (rows ⊥ 1_C); ``alpha``/``deviation``: isotropy of
    the metric (α = tr/(N(C−1)), ||Θ̃_G − αI||_F/||αI||_F); ``logits``/``labels`` where evaluated.
    """

    method: str
    metric: np.ndarray | None
    step: np.ndarray
    step_test: np.ndarray | None
    alpha: float | None
    deviation: float | None
    logits: np.ndarray
    labels: np.ndarray


def check_problem(net: Network, X, labels, X_test=None):
    if not isinstance(net, Network):
        raise ValueError(f"net must be an ntk_ngd.networks.Network (from mlp(...)), got {type(net).__name__}")
    if net.out_dim < 2:
        raise ValueError(f"cross_entropy needs a network with >= 2 outputs (one logit per class), got out_dim="
                         f"{net.out_dim}")
    X = net.check_inputs(X, "X")
    Y = check_labels(labels, X.shape[0], net.out_dim)
    X_test = None if X_test is None else net.check_inputs(X_test, "X_test")
    return np.asarray(X, float), Y, X_test


def initial_logits(net: Network, params, X) -> np.ndarray:
    """f_0: zeros at infinite width (the prior mean), f(X; params) at finite width."""
    if params is None:
        return np.zeros((np.shape(X)[0], net.out_dim))
    return np.asarray(net.apply(params, X), dtype=float)


def stacked_kernels(net: Network, X, X_test, params):
    """(train X×X, left [X; X_test]×X) layer kernels; fixed along a linearised trajectory.

    The left kernel's training rows are the train kernel itself (not a cross-kernel evaluation, which
    at infinite width differs on x = x' by ~1e-8 for ReLU; THEORY.md "Numerics")."""
    train = layer_kernels(net, X, params=params)
    if X_test is None:
        return train, train
    test = layer_kernels(net, X_test, X, params=params)
    left = LayerKernels(*(jnp.concatenate([a, b], axis=1) for a, b in
                          ((train.fwd, test.fwd), (train.bwd, test.bwd), (train.ntk, test.ntk))),
                        out_dim=train.out_dim, output_diagonal=train.output_diagonal)
    return train, left


def logit_kernels(net: Network, X, labels, method: str, params=None, damping: float = 0.0, X_test=None,
                  logits=None, **options) -> LogitKernel:
    """The cross-entropy function-space operator of ``method`` (module docstring) at ``logits``.

    ``params=None``: infinite-width kernels (neural-tangents), default logits 0; otherwise the
    finite-width Gram form at ``params``, default logits f(X; params). ``labels``: class indices
    (N,) or one-hot (N, C). ``damping`` ρ ≥ 0 (0: the ρ → 0⁺ limit). ``options``: kfac_readout
    ("common"/"paper") for kfac, rcond for all.
    """
    check_method(method)
    opts = normalise_options(method, options)
    damping = _validate.nonnegative("damping", damping)
    X, Y, X_test = check_problem(net, X, labels, X_test)
    n = X.shape[0]
    f = initial_logits(net, params, X) if logits is None else _validate.finite_matrix("logits", logits,
                                                                                      cols=net.out_dim, rows=n)
    train, left = stacked_kernels(net, X, X_test, params)
    step, metric = _core_jit(method, opts, n, damping, net.out_dim, train.output_diagonal, *core_arrays(train, left),
                             jnp.asarray(f, float), jnp.asarray(Y))
    step = np.asarray(step)
    alpha = deviation = None
    if metric is not None:
        metric = np.asarray(metric)
        iso = isotropy(metric)
        alpha, deviation = iso.alpha, iso.deviation
    return LogitKernel(method, metric, step[:n], None if X_test is None else step[n:], alpha, deviation,
                       np.asarray(f, float), Y)


__all__ = ["KERNEL_METHODS", "LogitKernel", "METHODS", "check_method", "logit_kernels", "whiten_kernels"]
