"""EKFAC: K-FAC's Kronecker eigenbasis with the diagonal refitted to the true Fisher (George et al.
2018; THEORY.md "Kronecker-basis approximations: KPSVD, EKFAC, diagonal Fisher"); rule "tikhonov"
(ρ added to the refitted scales s_ij).

With A_l = H̃ᵀH̃/N = U_A Λ_A U_Aᵀ and B_l = ΔᵀΔ/N = U_B Λ_B U_Bᵀ (K-FAC's factors; any rescaling of B
leaves U_B unchanged), EKFAC is G_l = (U_A ⊗ U_B) diag(s) (U_A ⊗ U_B)ᵀ + ρI with

    s_ij = (1/N) Σ_{n,c} ((U_Aᵀh̃_n)_i (U_Bᵀδ_{n,c})_j)² = [(U_A ⊗ U_B)ᵀ F_l (U_A ⊗ U_B)]_{(ij),(ij)}.

Gram form: H̃ = Q_H Λ_H^{1/2} V_Hᵀ (K^H = Q_H Λ_H Q_Hᵀ), so A's eigenvectors with non-zero eigenvalue
are V_H and the eigen-coordinates of the samples are ĥ = H̃V_H = Q_H Λ_H^{1/2}; likewise
δ̂ = Q_Δ Λ_Δ^{1/2} from K^Δ. Directions of A's or B's null space carry no training data (s = 0 and
zero Jacobian coordinates), so they drop out for every ρ (:mod:`._kron`):

    Θ_l(x', X) = (1/N) Σ_ij ĥ_i(x')ĥ_i(X) δ̂_j(x')δ̂_j(X) / (s_ij + ρ),   ĥ(x') = K^H(x', X) Q_H Λ_H^{−1/2}.

EKFAC is defined up to rotations inside degenerate eigenspaces of A or B; the readout's B = I_C is
harmless (F_L = A ⊗ I_C is diagonal in every basis U_A ⊗ R, so EKFAC is exact there), elsewhere the
spectra must be simple (they are for generic data). At infinite width the kernels are
output-diagonal and the N×N computation stands for Θ ⊗ I_C (the basis choice q_k ⊗ e_c).

Isotropy (ρ = 0): Θ_l = Σ_ij ẑ_ij ẑ_ijᵀ, ẑ_ij the unit-normalised training column
(ĥ_{n,i}δ̂_{(n,c),j})_{(n,c)} — a frame operator of unit vectors, so tr Θ_l = #{s_ij > 0} and
α = Σ_l rank(K^H_l)·rank(K^Δ_l)/(N·C) = N(L−1) + 1 with full-rank Grams (K-FAC's α), but Θ is
isotropic only for a tight frame: generically not for hidden layers. The readout gives I.

Between any rows (continual learning, ρ > 0): G_l lives on the data span, diagonal there, 0 on the complement,
so its two-sided kernels are the span coordinates' plus the null space's 1/ρ (:class:`._kron.SpanLayer`).
"""

from __future__ import annotations

import numpy as np

from ..factored import ekfac as factored_ekfac
from . import _conditions, _cost, _kron
from .base import Method, MethodKernel, register, test_kernel_or_none
from ._fitted import diagonal_verdict, eigen_coordinates_np, fitted_basis_diagonal


def eigen_coordinates(fwd, bwd, fwd_cross, bwd_cross, n: int, c: int):
    """(ĥ, δ̂, ĥ(x'), δ̂(x'), s): rows (n, c) in K-FAC's eigenbasis and the fitted scales s."""
    Fh, Fh_cross = _kron.gram_coordinates(fwd, fwd_cross)
    Fd, Fd_cross = _kron.gram_coordinates(bwd, bwd_cross)
    h, h_cross = _kron.expand_rows(Fh, c), _kron.expand_rows(Fh_cross, c)
    return h, Fd, h_cross, Fd_cross, _kron.fitted_scales(h, Fd, n)


def kernel(train, test, ctx):
    """Per layer one eigenbasis of K^H_l and of K^Δ_l, shared by the train kernel (the training rows' own
    coordinates ĥ = Q_HΛ_H^{1/2}: a symmetric form) and the test kernel (ĥ(x') = K^H(x', X)Q_HΛ_H^{−1/2})."""
    c = train.n_outputs_per_sample
    layers = []
    for l in range(train.depth):
        Fh, Vh = _kron.gram_basis(train.fwd[l])
        Fd, Vd = _kron.gram_basis(train.bwd[l])
        h = _kron.expand_rows(Fh, c)
        layers.append((h, Fd, Vh, Vd, _kron.fitted_scales(h, Fd, ctx.n)))

    def term(h_cross, d_cross, h, d, s):
        return _kron.diagonal_basis_kernel(h_cross, d_cross, h, d, s, ctx.damping.value, ctx.n, ctx.rcond)

    def cross_total(cross):
        return sum(term(_kron.expand_rows(cross.fwd[l] @ Vh, c), cross.bwd[l] @ Vd, h, d, s)
                   for l, (h, d, Vh, Vd, s) in enumerate(layers))

    return MethodKernel(sum(term(h, d, h, d, s) for h, d, _, _, s in layers), test_kernel_or_none(test, cross_total))


def direction(train, ctx):
    """Per layer E_H[C ⊘ (s + ρ)]E_Δᵀ in K-FAC's eigenbasis restricted to the data (:mod:`._kron`)."""
    out = []
    for H, delta in zip(train.inputs, train.deltas):
        k = delta.shape[1]
        flat = delta.reshape(-1, delta.shape[-1])
        Fh, Vh = _kron.gram_basis(H @ H.T)
        Fd, Vd = _kron.gram_basis(flat @ flat.T)
        h = _kron.expand_rows(Fh, k)
        s = _kron.fitted_scales(h, Fd, ctx.n)
        out.append(_kron.diagonal_basis_direction(H, delta, Vh, Vd, h, Fd, s, ctx))
    return out


def span_layers(lk, n_b, ctx):
    """Per layer: K-FAC's eigenbases of task B's Grams (the first n_b samples) and the fitted scales."""
    c = lk.n_outputs_per_sample
    out = []
    for l in range(lk.depth):
        Fh, Vh = _kron.gram_basis(lk.fwd[l][:n_b, :n_b])
        Fd, Vd = _kron.gram_basis(lk.bwd[l][: n_b * c, : n_b * c])
        out.append(_kron.SpanLayer(lk, l, n_b, Vh, Vd, scales=_kron.fitted_scales(_kron.expand_rows(Fh, c), Fd, ctx.n)))
    return out


def cost(size, options) -> _cost.Cost:
    """Per layer the eigendecompositions of K^H_l (N) and K^Δ_l (R), then the diagonal-basis kernel (2R²r_Δr_H)
    or update on bases of r_H × r_Δ columns (:mod:`._cost`: an update keeps N × R under jit)."""
    n, r = size.n, size.rows
    factors = size.depth * (_cost.eigh(n) + _cost.eigh(r))
    kernel = sum(_cost.diagonal_basis_kernel(r, rh, rd) for rh, rd in size.ranks(jitted=False))
    update = sum(_cost.diagonal_basis_update(n, r, d, m, rh, rd)
                 for (d, m), (rh, rd) in zip(size.layers, size.ranks(jitted=True)))
    return _cost.Cost(_cost.features(size) + factors + kernel, _cost.features(size) + factors + update)


def predict(lk, ctx):
    """α = Σ_l rank K^H_l · rank K^Δ_l / (N·k) (tr Θ = #{s_ij > 0}); diagonal from the unit frame.
    Isotropic only with one layer (the readout block is exact); hidden layers give a frame of unit
    vectors that is not tight (theory: not isotropic)."""
    L, rows = lk.depth, lk.ntk.shape[1]
    n = lk.fwd.shape[1]
    c = rows // n
    coords = [(np.repeat(eigen_coordinates_np(lk.fwd[l], ctx.rcond), c, axis=0), eigen_coordinates_np(lk.bwd[l], ctx.rcond))
              for l in range(L)]
    alpha = float(sum(h.shape[1] * d.shape[1] for h, d in coords) / rows)
    cond = (*_conditions.input_grams_full_rank(lk, ctx.rcond, [L - 1]), _conditions.undamped(ctx.damping))
    diag = sum(fitted_basis_diagonal(h, d, n) for h, d in coords)
    what = "hidden layers contribute a frame of unit vectors" if L > 1 else "readout only: exact block"
    return diagonal_verdict("ekfac", alpha, diag, cond, L == 1, what)


EKFAC = register(Method("ekfac", "EKFAC: K-FAC eigenbasis, diagonal refitted to the Fisher, + ρI", kernel, direction,
                        predict, damping_rule="tikhonov", metric=_kron.span_metric(span_layers), cost=cost,
                        factored=factored_ekfac.FORM))
