r"""Natural gradients of a deep linear network in closed form (derivation steps 4–7).

Notation as in :mod:`ntk_ngd.deep_linear` and :mod:`~ntk_ngd.deep_linear.algebra`: F = BᵀB with
B(Δ) = A(Δ) S, ∇Loss = Bᵀy with y = G S⁻¹ = E S.

4. All natural gradients. FΔ = ∇Loss reads BᵀBΔ = Bᵀy: the normal equations of the least-
   squares problem min_Δ ||B(Δ) − y||. Its solutions are Δ_MP + null(B), so "the" natural
   gradient depends on the generalised inverse; all solutions change W identically to first
   order (they differ by null(B) = null(A)).
5. Moore–Penrose (minimum-norm) natural gradient, :func:`natural_gradient`.
   Δ_MP = F⁺∇Loss = (BᵀB)⁺Bᵀy = B⁺y = Bᵀ(BBᵀ)⁺y. With row-major vec, vec(P M Q) = (P ⊗ Qᵀ)vec M,
   so BBᵀ is the (C·D)×(C·D) matrix
       𝒦 = Σ_i (W_{>i}W_{>i}ᵀ) ⊗ (S W_{<i}ᵀW_{<i} S),
   and, per layer,
       Δ_MP,i = W_{>i}ᵀ M S W_{<i}ᵀ,   vec M = 𝒦⁺ vec(E S) = 𝒦⁺ vec(G S⁻¹).
   Whitened inputs (Σ_x = I, S = I): Δ_MP,i = W_{>i}ᵀ M W_{<i}ᵀ with M = (Σ_i P_i ⊗ Q_i)⁺ E,
   P_i = W_{>i}W_{>i}ᵀ, Q_i = W_{<i}ᵀW_{<i} (a generalised Sylvester equation Σ_i P_i M Q_i = E).
   No P×P matrix is ever formed: one symmetric (C·D)-sized pseudo-inverse.
   End-to-end: A(Δ_MP) S = BB⁺y is the orthogonal projection of y onto range(B); so
   A(Δ_MP) = Proj^Σ(E), the projection of E onto range(A) in the metric ⟨U, V⟩ = tr(UΣ_xVᵀ).
   range(A) = Σ_i V_i with V_i = {U : col U ⊆ col W_{>i}, row U ⊆ row W_{<i}}; V_1 is everything
   when rank W_{>1} = C and V_L is everything when rank W_{<L} = D. So A is onto (and
   A(Δ_MP) = E exactly) when every hidden width is ≥ C or every hidden width is ≥ D (generic
   weights); :func:`end_to_end_reachable` computes rank 𝒦 = C·D. Below that — a *bottleneck*,
   some width k < min(C, D) — range(A) is the tangent space of the rank-≤k matrices at W, only
   the Σ_x-projection of E onto it is removed, and W cannot reach a W* of rank > k.
6. Block-diagonal natural gradient and the per-layer form of the paper,
   :func:`block_diagonal_natural_gradient`. B restricted to layer i is B_i = W_{>i} ⊗ (W_{<i}S)ᵀ,
   so the diagonal Fisher block is exactly Kronecker-factored,
       F_ii = (W_{>i}ᵀW_{>i}) ⊗ (W_{<i} Σ_x W_{<i}ᵀ),
   and (P ⊗ Q)⁺ = P⁺ ⊗ Q⁺, (PᵀP)⁺Pᵀ = P⁺ give
       F_ii⁺∇_i = W_{>i}⁺ G W_{<i}ᵀ (W_{<i}Σ_xW_{<i}ᵀ)⁺ = W_{>i}⁺ (E S) (W_{<i} S)⁺.
   The per-layer form of THEORY.md claim 9 is this divided by L (the *generalised per-layer
   inverse*, :func:`paper_natural_gradient`):
       Δ_i = (1/L) W_{>i}⁺ (G S⁻¹) (W_{<i} S)⁺;  whitened: Δ_i = (1/L) W_{>i}⁺ G W_{<i}⁺.
   When W_{<i} has full column rank this equals (1/L) W_{>i}⁺ G Σ_x⁻¹ W_{<i}⁺ (Euclidean pinv);
   when W_{<i} is wide (M_{i−1} < D) the covariance-weighted (W_{<i}S)⁺ is the right one (it is
   what F_ii⁺ gives), and the Euclidean W_{<i}⁺ is not.
   End-to-end: A(Δ) S = (1/L) Σ_i Π_{>i} (E S) Π_{<i}, with the orthogonal projectors
   Π_{>i} = W_{>i}W_{>i}⁺ and Π_{<i} = (W_{<i}S)⁺(W_{<i}S): an *average* of L projections. It is E
   (so Δ is a natural gradient) iff every term is, generically iff every hidden width is
   ≥ max(C, D). If some width lies in [min(C, D), max(C, D)) the exact NG still reaches E (step
   5) but the average of projections does not: block-diagonal/L under-steps. Below min(C, D)
   both fail, and they fail differently (projection onto the sum vs average of projections).
7. Which generalised inverse. Let A♯(y) = (1/L){W_{>i}⁺ y (W_{<i}S)⁺}_i; with every width ≥
   max(C, D), B A♯ = identity. Then F⁻ := A♯A♯ᵀ satisfies F F⁻ F = Bᵀ(BA♯)(BA♯)ᵀB = F and
   F⁻ F F⁻ = F⁻ (a symmetric reflexive {1,2}-inverse) and F⁻∇Loss = A♯(BA♯)ᵀy = A♯y = Δ. It is
   the Moore–Penrose inverse only if F⁻F = A♯B (the oblique projector onto range A♯ along
   null B) is symmetric, i.e. range A♯ = range Bᵀ = {(W_{>i}ᵀ M S W_{<i}ᵀ)_i}. That holds for
   L = 1, and for whitened inputs with balanced scaled-orthogonal layers (W_i = s·O_i, one s);
   in general it does not: same change of W, different split across layers, and, Δ_MP being
   the minimum-norm solution of the same equation, ||Δ_MP|| < ||Δ_paper||.

Every direction takes (weights, G = ∂Loss/∂W (C×D), Σ_x (D×D, positive definite)) and returns the
per-layer Δ_i; the step is W_i ← W_i − ηΔ_i.
"""
from __future__ import annotations

import numpy as np

from .._validate import finite_matrix
from .algebra import PINV_RTOL, layer_gradients, layer_products, pinv, sym_sqrt
from .validation import check_input_covariance, check_weights


def _gram_root(matrix) -> np.ndarray:
    """U·diag(s) from the thin SVD of ``matrix``: a factor R with R Rᵀ = matrix·matrixᵀ."""
    u, sing, _ = np.linalg.svd(matrix, full_matrices=False)
    return u * sing


def end_to_end_operator_root(weights, input_cov) -> np.ndarray:
    """R with R Rᵀ = 𝒦 = BBᵀ = Σ_i (W_{>i}W_{>i}ᵀ) ⊗ (S W_{<i}ᵀW_{<i} S) (step 5).

    R = [root(W_{>i}) ⊗ root(S W_{<i}ᵀ)]_i, at most (C·D) × (L·C·D). It equals B up to an
    orthogonal change of parameter basis, so its SVD gives 𝒦⁺ without squaring B's condition
    number (cond 𝒦 can reach 1e10 with cond Σ_x = 1e6).
    """
    sqrt_cov, _ = sym_sqrt(input_cov)
    above, below = layer_products(weights)
    return np.hstack([np.kron(_gram_root(a), _gram_root(sqrt_cov @ b.T))
                      for a, b in zip(above, below)])


def end_to_end_operator(weights, input_cov) -> np.ndarray:
    """𝒦 = BBᵀ, (C·D)×(C·D): the Fisher seen from the end-to-end map (step 5)."""
    root = end_to_end_operator_root(weights, input_cov)
    return root @ root.T


def _operator_pinv(root) -> np.ndarray:
    """(R Rᵀ)⁺ = U diag(1/s²) Uᵀ from the SVD of R, keeping s² > rtol·s_max²."""
    u, sing, _ = np.linalg.svd(root, full_matrices=False)
    keep = sing ** 2 > PINV_RTOL * sing[0] ** 2
    return (u[:, keep] / sing[keep] ** 2) @ u[:, keep].T


def _operator_rank(root) -> int:
    sing = np.linalg.svd(root, compute_uv=False)
    return int(np.sum(sing ** 2 > PINV_RTOL * sing[0] ** 2))


def _prepare(weights, grad, input_cov):
    layers = check_weights(weights)
    cout, din = layers[-1].shape[0], layers[0].shape[1]
    grad = np.asarray(finite_matrix("grad", grad, cols=din, rows=cout), dtype=np.float64)
    return layers, grad, check_input_covariance(input_cov, din)


def natural_gradient(weights, grad, input_cov) -> list[np.ndarray]:
    """Moore–Penrose natural gradient F⁺∇Loss per layer, in closed form (step 5).

    Δ_i = W_{>i}ᵀ M S W_{<i}ᵀ with vec M = 𝒦⁺ vec(G S⁻¹); the step is W_i ← W_i − ηΔ_i.
    ``grad`` is G = ∂Loss/∂W (C×D), ``input_cov`` is Σ_x (D×D, positive definite). Minimum-norm
    among all natural gradients, for any widths (bottlenecks included: then the change of W is
    the Σ_x-projection of E = GΣ_x⁻¹ onto the reachable tangent space).
    """
    layers, grad, cov = _prepare(weights, grad, input_cov)
    sqrt_cov, inv_sqrt_cov = sym_sqrt(cov)
    target = grad @ inv_sqrt_cov
    operator_pinv = _operator_pinv(end_to_end_operator_root(layers, cov))
    mixing = (operator_pinv @ target.ravel()).reshape(target.shape)
    above, below = layer_products(layers)
    return [a.T @ mixing @ sqrt_cov @ b.T for a, b in zip(above, below)]


def block_diagonal_natural_gradient(weights, grad, input_cov, scale: float = 1.0
                                    ) -> list[np.ndarray]:
    """scale · F_ii⁺∇_i = scale · W_{>i}⁺ (G S⁻¹)(W_{<i} S)⁺ per layer (step 6).

    ``scale = 1/L`` gives the per-layer form of THEORY.md claim 9 (see
    :func:`paper_natural_gradient`); ``scale = 1`` is the plain block-diagonal approximation.
    """
    layers, grad, cov = _prepare(weights, grad, input_cov)
    sqrt_cov, inv_sqrt_cov = sym_sqrt(cov)
    target = grad @ inv_sqrt_cov
    above, below = layer_products(layers)
    return [scale * pinv(a) @ target @ pinv(b @ sqrt_cov) for a, b in zip(above, below)]


def paper_natural_gradient(weights, grad, input_cov) -> list[np.ndarray]:
    """Δ_i = (1/L) W_{>i}⁺ (G S⁻¹)(W_{<i}S)⁺: block-diagonal / L, the generalised inverse
    F⁻ = A♯A♯ᵀ of step 7 (not Moore–Penrose in general)."""
    return block_diagonal_natural_gradient(weights, grad, input_cov, scale=1.0 / len(weights))


def gradient_direction(weights, grad, input_cov=None) -> list[np.ndarray]:
    """Plain gradient ∇_i = W_{>i}ᵀ G W_{<i}ᵀ (``input_cov`` unused; same signature)."""
    return layer_gradients(check_weights(weights), grad)


def end_to_end_reachable(weights, input_cov) -> bool:
    """True iff A is onto the C×D maps (rank 𝒦 = C·D), i.e. exact NG moves W by exactly −ηE."""
    layers = check_weights(weights)
    cov = check_input_covariance(input_cov, layers[0].shape[1])
    return _operator_rank(end_to_end_operator_root(layers, cov)) == layers[-1].shape[0] * cov.shape[0]


__all__ = ["block_diagonal_natural_gradient", "end_to_end_operator", "end_to_end_operator_root",
           "end_to_end_reachable", "gradient_direction", "natural_gradient", "paper_natural_gradient"]
