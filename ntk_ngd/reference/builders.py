"""Every method's explicit approximation, from the whitened problem (:mod:`.problem`): ONE dict
:data:`BUILDERS` = {method name: builder}, a builder for every name in ``ntk_ngd.METHODS``.

A builder ``fn(p, damping, rcond, **options)`` returns

* an :class:`Approximation` (every method but iEF): the explicit P×P G and how to apply (G + ρI)⁻¹;
  the update per unit learning rate is (G + ρI)⁻¹∇L and the kernels are J̃(x')(G + ρI)⁻¹J̃ᵀ/N;
* an :class:`Update` (iEF, which defines an update, not a G): Δθ = −η Φᵀ(ΦΦᵀ + λI)⁻¹s.

Its keyword-only parameters are the method's options (names and defaults; :mod:`._checks` validates
them). With J̃ = RJ, u the whitened residual, F = J̃ᵀJ̃/N, F_l its layer blocks, P_l layer l's slice:

``gd`` G = I, ρ ignored · ``exact`` F · ``block_diag`` blockdiag_l F_l · ``block_tridiag`` F_ab for
|a − b| ≤ 1 · ``pattern`` G_ab = S_ab F_ab (``pattern=S`` or ``bandwidth=k``: S_ab = 1[|a − b| ≤ k]) ·
``kfac`` blockdiag_l (A_l + √ρI) ⊗ (B_l + √ρI) (factored damping; ``kfac_route`` is a route of the Gram
form and changes nothing here) · ``unit_wise`` one block per (layer l, unit j): column j of W̃_l
(``unit_chunk`` likewise only a Gram-form batch size) · ``ef`` Σ_n g̃_ng̃_nᵀ/N, g̃_n = J̃_nᵀu_n ·
``ief`` the update above, rows of Φ = g̃_nᵀ, s_n the iEF weight (:mod:`.problem`) · ``sf`` (1/k)Σ_s Σ_n
J̃_nᵀξ_nξ_nᵀJ̃_n/N with the whitened model samples ξ of draw ``step`` (``samples`` k, ``seed``) ·
``kpsvd`` (``rank`` k), ``ekfac``, ``diag``, ``kfac_cor``: blockdiag_l of the fit of F_l (:mod:`.fits`).

Damping: G + ρI for every method except kfac (factored), iEF (λ = ρ on ΦΦᵀ) and gd (none).
"""
from __future__ import annotations

import numpy as np

from . import fits, solves
from .problem import Whitened


class Approximation:
    """G (P×P; kfac's with its factored damping) and ``solve``: rhs ↦ (G + ρI)⁻¹ rhs (pinv at ρ = 0)."""

    def __init__(self, G: np.ndarray, solve):
        self.G, self.solve = G, solve

    def direction(self, p: Whitened) -> np.ndarray:
        """(G + ρI)⁻¹∇L: minus the update per unit learning rate."""
        return self.solve(_gradient(p))

    def operator(self, p: Whitened) -> np.ndarray:
        """U (P × N·k) with Δθ = −ηU vec(u): U = (G + ρI)⁻¹J̃ᵀ/N, so Θ_G(x', X) = J̃(x')U."""
        return self.solve(p.J.T) / p.n

    def inverse(self) -> np.ndarray:
        """The explicit M = (G + ρI)⁻¹ (blockwise pseudo-inverse at ρ = 0)."""
        return self.solve(np.eye(self.G.shape[0]))


class Update:
    """iEF: Δθ = −ηΦᵀ(ΦΦᵀ + λI)⁻¹s (Φ⁺s at λ = 0). With w_n = s_n/||u_n||² (0 where u_n = 0), s = diag(w)R̃ᵀu
    for R̃ᵀ the N × N·k matrix with u_nᵀ in sample n's columns, so the update is linear in u with
    U = Φᵀ(ΦΦᵀ + λI)⁻¹diag(w)R̃ᵀ and Θ_iEF(x', X) = J̃(x')U (the kernel ``ntk_ngd.methods.ief`` defines)."""

    G = None

    def __init__(self, Phi, s, u, damping: float, rcond=None):
        self.Phi, self.s, self.u, self.damping, self.rcond = Phi, s, u, damping, rcond

    def direction(self, p: Whitened) -> np.ndarray:
        return solves.gram_solve(self.Phi, self.s, self.damping, self.rcond)

    def operator(self, p: Whitened) -> np.ndarray:
        n, k = self.u.shape
        norms = np.sum(self.u**2, axis=1)
        w = np.where(norms > 0, self.s / np.where(norms > 0, norms, 1.0), 0.0)
        right = np.zeros((n, n * k))
        for m in range(n):
            right[m, m * k:(m + 1) * k] = w[m] * self.u[m]
        return solves.gram_solve(self.Phi, right, self.damping, self.rcond)


def _gradient(p: Whitened) -> np.ndarray:
    if p.grad is None:
        raise ValueError("an update needs targets (the residual); pass Y")
    return p.grad


def _residual(p: Whitened, method: str) -> np.ndarray:
    if p.u is None:
        need = "residual= (f(X) - Y)" if p.loss == "mse" else "targets= (labels)"
        raise ValueError(f"method {method!r} needs {need}")
    return p.u


def _per_sample_gradients(p: Whitened, vectors) -> np.ndarray:
    """Rows J̃_nᵀv_n (N × P) for whitened vectors v (N, k)."""
    return np.einsum("nkp,nk->np", p.per_sample(), vectors)


def _tikhonov(G, blocks, damping, rcond) -> Approximation:
    return Approximation(G, solves.Blockwise(G, blocks, damping, rcond))


def _everything(p):
    return [np.arange(p.J.shape[1])]


def _layer_blocks(p):
    return [np.arange(p.J.shape[1])[sl] for sl in p.slices]


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------
def banded(depth: int, bandwidth: int) -> np.ndarray:
    """S_ab = 1 for |a − b| ≤ bandwidth."""
    idx = np.arange(depth)
    return (np.abs(idx[:, None] - idx[None, :]) <= bandwidth).astype(float)


def layer_pattern(p: Whitened, S, damping, rcond) -> Approximation:
    """G_ab = S_ab F_ab, inverted per connected component of the layers coupled by S."""
    slices, P = p.slices, p.J.shape[1]
    F = p.J.T @ p.J / p.n
    weight = np.zeros((P, P))
    for a, sa in enumerate(slices):
        for b, sb in enumerate(slices):
            weight[sa, sb] = S[a, b]
    blocks = [np.concatenate([np.arange(P)[slices[a]] for a in comp]) for comp in solves.components(S)]
    return _tikhonov(F * weight, blocks, damping, rcond)


def gd(p, damping, rcond):
    return Approximation(np.eye(p.J.shape[1]), solves.identity)


def exact(p, damping, rcond):
    return layer_pattern(p, np.ones((p.net.depth,) * 2), damping, rcond)


def block_diag(p, damping, rcond):
    return layer_pattern(p, np.eye(p.net.depth), damping, rcond)


def block_tridiag(p, damping, rcond):
    return layer_pattern(p, banded(p.net.depth, 1), damping, rcond)


def pattern(p, damping, rcond, *, pattern=None, bandwidth=None):
    S = np.asarray(pattern, float) if pattern is not None else banded(p.net.depth, bandwidth)
    return layer_pattern(p, S, damping, rcond)


def kfac(p, damping, rcond, *, kfac_readout="common", kfac_route="auto"):
    factors = fits.factors(p.inputs, p.deltas, kfac_readout)
    P, root = p.J.shape[1], np.sqrt(damping)
    G = np.zeros((P, P))
    for sl, (A, B) in zip(p.slices, factors):
        G[sl, sl] = np.kron(A + root * np.eye(A.shape[0]), B + root * np.eye(B.shape[0]))
    return Approximation(G, solves.KroneckerBlocks(factors, p.slices, damping, rcond))


def unit_wise(p, damping, rcond, *, unit_chunk=64):
    P = p.J.shape[1]
    blocks = [sl.start + np.arange(fi + int(p.net.bias)) * fo + j
              for sl, (fi, fo) in zip(p.slices, p.net.layer_shapes) for j in range(fo)]
    G = np.zeros((P, P))
    for idx in blocks:
        G[np.ix_(idx, idx)] = p.J[:, idx].T @ p.J[:, idx] / p.n
    return _tikhonov(G, blocks, damping, rcond)


def ef(p, damping, rcond):
    Phi = _per_sample_gradients(p, _residual(p, "ef"))
    return _tikhonov(Phi.T @ Phi / p.n, _everything(p), damping, rcond)


def ief(p, damping, rcond):
    u = _residual(p, "ief")
    return Update(_per_sample_gradients(p, u), p.s, u, damping, rcond)


def sf(p, damping, rcond, *, samples=1, seed=0, step=0):
    xi = p.model_scores(samples, seed, step)  # (N, k, samples)
    Phi = np.concatenate([_per_sample_gradients(p, xi[:, :, s]) for s in range(samples)])
    return _tikhonov(Phi.T @ Phi / (p.n * samples), _everything(p), damping, rcond)


def _fitted(method, p, damping, rcond, rank=1):
    """blockdiag_l of :func:`.fits.kron_fit` of F_l (K-FAC factors for ekfac/kfac_cor: common readout)."""
    P = p.J.shape[1]
    factors = fits.factors(p.inputs, p.deltas) if method in ("ekfac", "kfac_cor") else [None] * p.net.depth
    G = np.zeros((P, P))
    for sl, F, (fi, fo), AB in zip(p.slices, fits.layer_blocks(p.J, p.slices, p.n), p.net.layer_shapes, factors):
        G[sl, sl] = fits.kron_fit(method, F, fi + int(p.net.bias), fo, rank=rank, factors=AB)
    # diag: one 1×1 block per parameter, so the pseudo-inverse keeps every d_p > 0 (the ρ → 0⁺ limit)
    blocks = [np.array([q]) for q in range(P)] if method == "diag" else _layer_blocks(p)
    return _tikhonov(G, blocks, damping, rcond)


def kpsvd(p, damping, rcond, *, rank=1):
    return _fitted("kpsvd", p, damping, rcond, rank)


def ekfac(p, damping, rcond):
    return _fitted("ekfac", p, damping, rcond)


def diag(p, damping, rcond):
    return _fitted("diag", p, damping, rcond)


def kfac_cor(p, damping, rcond):
    return _fitted("kfac_cor", p, damping, rcond)


#: method name -> builder(p, damping, rcond, **options) (module docstring)
BUILDERS = {
    "gd": gd, "exact": exact, "block_diag": block_diag, "block_tridiag": block_tridiag, "pattern": pattern,
    "kfac": kfac, "unit_wise": unit_wise, "ef": ef, "ief": ief, "sf": sf, "kpsvd": kpsvd, "ekfac": ekfac,
    "diag": diag, "kfac_cor": kfac_cor,
}

__all__ = ["Approximation", "BUILDERS", "Update", "banded", "layer_pattern"]
