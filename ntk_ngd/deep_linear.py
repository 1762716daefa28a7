r"""Exact natural gradient in deep linear networks, in closed form (THEORY.md claim 9).

Bernacchia, Lengyel & Hennequin (2018), "Exact natural gradient in deep linear networks and
its application to the nonlinear case". Everything here is plain float64 numpy; the dense
reference (:func:`dense_natural_gradient`) differentiates the network by complex steps, so
that it shares no algebra with the closed forms it checks.

Conventions (THEORY.md "Setup", no bias, no NTK scaling)
--------------------------------------------------------
X is N×D (rows are samples), Y is N×C. ``weights = [W_1 (M_1×D), …, W_L (C×M_{L−1})]``,
M_0 = D, M_L = C. End-to-end map W = W_L⋯W_1 (C×D), f(X) = X W_1ᵀ⋯W_Lᵀ = X Wᵀ.
Loss = (1/2N) Σ_n ||f(x_n) − y_n||², residual R = XWᵀ − Y (N×C), flattened row-major (index
n·C + c) wherever a vector in function space is needed. Parameters θ are the row-major
``W_i.ravel()`` concatenated for i = 1..L; P = Σ_i M_i M_{i−1}.
Products around layer i: W_{>i} = W_L⋯W_{i+1} (C×M_i, I_C for i = L) and
W_{<i} = W_{i−1}⋯W_1 (M_{i−1}×D, I_D for i = 1), so W = W_{>i} W_i W_{<i}.
Σ_x = XᵀX/N (required symmetric positive definite), Σ_yx = YᵀX/N, S = Σ_x^{1/2} (symmetric),
W* = Σ_yx Σ_x⁻¹ (the least-squares map), E = W − W* (the error of the end-to-end map).

Derivation (THEORY.md claim 9), step by step
--------------------------------------------
1. Loss as a function of W. Expanding the square,
   Loss = ½ tr(W Σ_x Wᵀ) − tr(Σ_yx Wᵀ) + ½ tr(YᵀY)/N = ½ tr(E Σ_x Eᵀ) + Loss*,
   with Loss* = Loss(W*). Its gradient w.r.t. W is G = RᵀX/N = WΣ_x − Σ_yx = E Σ_x.
2. First-order change of W. Perturbing every layer, W_i → W_i + Δ_i, changes W by
   A(Δ) = Σ_i W_{>i} Δ_i W_{<i}  (+ terms of order ≥ 2 in Δ),
   so the Jacobian of f(X) is J Δ = X A(Δ)ᵀ, and by the chain rule the per-layer gradient is
   ∇_i = ∂Loss/∂W_i = W_{>i}ᵀ G W_{<i}ᵀ, i.e. ∇Loss = Aᵀ(G) (adjoint in the Frobenius product).
3. Fisher. F = JᵀJ/N, so ΔᵀFΔ = ||X A(Δ)ᵀ||²/N = tr(A(Δ) Σ_x A(Δ)ᵀ) = ||A(Δ) S||²_F.
   Hence F = BᵀB with B(Δ) := A(Δ) S. The gradient is in B's co-range as well:
   ⟨∇Loss, Δ⟩ = ⟨G, A(Δ)⟩ = ⟨G S⁻¹, A(Δ) S⟩, i.e. ∇Loss = Bᵀ(y) with y := G S⁻¹ = E S.
   F is singular whenever P > rank B ≤ C·D (rescalings W_{i+1} → W_{i+1}Q⁻¹, W_i → Q W_i leave W
   unchanged): three 3×3 layers have P = 27 but rank F ≤ 9.
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
   The per-layer form of THEORY.md claim 9 is this divided by L:
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
8. Dynamics. Step with W_i ← W_i − ηΔ_i. To first order W changes by −η A(Δ) = −η E
   (reachable case), so
       W_{t+1} − W* = (1 − η)(W_t − W*) + O(η²),  W_t − W* ≈ (1 − η)^t (W_0 − W*),
       Loss_t − Loss* = ½ tr(E_t Σ_x E_tᵀ) ≈ (1 − η)^{2t} (Loss_0 − Loss*),
   a rate independent of Σ_x (the curvature) and of the weights. Continuous time (θ̇ = −F⁺∇L):
   Ẇ = A(θ̇) = −E exactly, W(τ) − W* = e^{−τ}(W_0 − W*), excess loss e^{−2τ}, τ = η·step.
   Exact discrete step of the per-layer form for square invertible layers (C = D = M_i): since
   W_i = W_{>i}⁻¹ W W_{<i}⁻¹ and Δ_i = (1/L) W_{>i}⁻¹ E W_{<i}⁻¹ (Σ_x cancels: G S⁻¹ S⁻¹ = E),
   W_i − ηΔ_i = W_{>i}⁻¹ Z W_{<i}⁻¹ with Z = W − (η/L)E; the product telescopes,
       W_{t+1} = (Z W⁻¹)^L W = (I − (η/L) E_t W_t⁻¹)^L W_t
              = W_t − η E_t + η² (L−1)/(2L) E_t W_t⁻¹ E_t − …,
   whose first-order part is again (1 − η); Σ_x enters only the loss, never the trajectory of W.
   Gradient descent: Δ_i = ∇_i, first-order change Σ_i P_i E Σ_x Q_i; for L = 1 exactly
   E_{t+1} = E_t (I − ηΣ_x): stability needs η < 2/λ_max and the slowest mode then contracts by
   ≥ 1 − 2/κ(Σ_x) per step, so gradient descent slows down with the condition number.
9. Kernels (THEORY.md "Layer-wise kernels"). ∂f_c(x_n)/∂(W_l)_{ab} = (W_{>l})_{ca}(W_{<l}x_n)_b,
   so Θ_l = J_l J_lᵀ has entries (W_{<l}x_n · W_{<l}x_{n'}) (W_{>l}W_{>l}ᵀ)_{cc'}, i.e.
   Θ_l = (X W_{<l}ᵀW_{<l} Xᵀ) ⊗ (W_{>l}W_{>l}ᵀ) (np.kron, index n·C + c).
   Exact NG in function space: Θ_F = J F⁺ Jᵀ/N = J(JᵀJ)⁺Jᵀ = J J⁺ = Θ Θ⁺ (Θ = Σ_l Θ_l), the
   projector onto range Θ: the identity iff rank Θ = N·C (impossible when N > D, because f is
   linear in x and rank Θ ≤ C·rank X). Block-diagonal: Σ_l J_l F_ll⁺ J_lᵀ/N = Σ_l Θ_l Θ_l⁺ = L·I
   iff every Θ_l has rank N·C (claim 2 with S = I, α = L).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import choice, finite_matrix, nonnegative, positive_int

PINV_RTOL = 1e-11
"""Relative cutoff on the singular values (eigenvalues for PSD matrices) of every matrix this
module pseudo-inverts: exact zeros from the rescaling symmetries come out at ~1e-16 relative."""

DENSE_MAX_PARAMS = 20000
METHODS = ("ngd", "gd", "block_diag")
LOSS_FORMS = ("first_order", "continuous", "exact")


# ---------------------------------------------------------------- validation (raised early)

def check_weights(weights) -> list[np.ndarray]:
    """Float64 copies of the layers; shapes must chain (W_{i+1} has as many columns as W_i rows)."""
    if isinstance(weights, np.ndarray) or not hasattr(weights, "__len__") or len(weights) == 0:
        raise ValueError("weights must be a non-empty list of 2-D layer matrices [W_1, ..., W_L]")
    layers = [np.asarray(finite_matrix(f"weights[{i}]", w), dtype=np.float64)
              for i, w in enumerate(weights)]
    for i in range(1, len(layers)):
        if layers[i].shape[1] != layers[i - 1].shape[0]:
            raise ValueError(
                f"layer shapes do not chain: weights[{i}] has {layers[i].shape[1]} columns but "
                f"weights[{i - 1}] has {layers[i - 1].shape[0]} rows")
    return layers


def check_data(weights, X, Y) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Layers, X (N×D) and Y (N×C) matching the network; Σ_x = XᵀX/N must be invertible."""
    layers = check_weights(weights)
    X = np.asarray(finite_matrix("X", X, cols=layers[0].shape[1]), dtype=np.float64)
    Y = np.asarray(finite_matrix("Y", Y, cols=layers[-1].shape[0], rows=X.shape[0]),
                   dtype=np.float64)
    check_input_covariance(input_covariance(X), X.shape[1], source="XᵀX/N")
    return layers, X, Y


def check_input_covariance(cov, dim: int, source: str = "input_cov") -> np.ndarray:
    """Σ_x: finite, symmetric, positive definite (the paper's assumption: W* is unique)."""
    cov = np.asarray(finite_matrix(source, cov, cols=dim, rows=dim), dtype=np.float64)
    scale = max(np.abs(cov).max(), np.finfo(float).tiny)
    if np.abs(cov - cov.T).max() > 1e-10 * scale:
        raise ValueError(f"{source} must be symmetric; pass (C + C.T)/2")
    eig = np.linalg.eigvalsh(cov)
    if eig[0] < -1e-12 * scale:
        raise ValueError(f"{source} is not positive semi-definite (eigenvalue {eig[0]:.3g})")
    if eig[0] <= PINV_RTOL * eig[-1]:
        raise ValueError(f"{source} is singular (eigenvalues {eig[0]:.3g}..{eig[-1]:.3g}); "
                         "use at least as many samples in general position as input dims")
    return cov


def _check_step(lr, steps) -> tuple[float, int]:
    lr = nonnegative("lr", lr)
    if lr == 0:
        raise ValueError("lr must be > 0")
    return lr, positive_int("steps", steps, minimum=0)


# ---------------------------------------------------------------- basic algebra

def end_to_end_map(weights) -> np.ndarray:
    """W = W_L ⋯ W_1 (C×D)."""
    layers = list(weights)
    out = layers[0]
    for w in layers[1:]:
        out = w @ out
    return out


def layer_products(weights) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """([W_{>i}], [W_{<i}]) for i = 1..L, so that W = W_{>i} W_i W_{<i} for every i."""
    layers = list(weights)
    below = [np.eye(layers[0].shape[1])]
    for w in layers[:-1]:
        below.append(w @ below[-1])
    above = [np.eye(layers[-1].shape[0])]
    for w in reversed(layers[1:]):
        above.append(above[-1] @ w)
    return above[::-1], below


def input_covariance(X) -> np.ndarray:
    """Σ_x = XᵀX / N."""
    X = np.asarray(X, dtype=np.float64)
    return X.T @ X / X.shape[0]


def least_squares_map(X, Y) -> np.ndarray:
    """W* = Σ_yx Σ_x⁻¹ (C×D), the minimiser of the loss over all end-to-end maps."""
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    return np.linalg.solve(input_covariance(X), X.T @ Y / X.shape[0]).T


def mse_loss(end_to_end, X, Y) -> float:
    """Loss = (1/2N) ||X Wᵀ − Y||²_F for an end-to-end map W."""
    residual = np.asarray(X) @ np.asarray(end_to_end).T - np.asarray(Y)
    return float(0.5 * np.sum(residual ** 2) / residual.shape[0])


def end_to_end_gradient(end_to_end, X, Y) -> np.ndarray:
    """G = ∂Loss/∂W = RᵀX/N = (W − W*) Σ_x (derivation step 1)."""
    X = np.asarray(X, dtype=np.float64)
    residual = X @ np.asarray(end_to_end).T - np.asarray(Y)
    return residual.T @ X / X.shape[0]


def layer_gradients(weights, grad) -> list[np.ndarray]:
    """∇_i = W_{>i}ᵀ G W_{<i}ᵀ (derivation step 2)."""
    above, below = layer_products(weights)
    return [a.T @ grad @ b.T for a, b in zip(above, below)]


def end_to_end_change(weights, directions) -> np.ndarray:
    """A(Δ) = Σ_i W_{>i} Δ_i W_{<i}: first-order change of W per unit step along Δ (step 2)."""
    above, below = layer_products(weights)
    return sum(a @ d @ b for a, d, b in zip(above, directions, below))


def parameter_norm(directions) -> float:
    """Euclidean norm of a per-layer update, all layers together."""
    return float(np.sqrt(sum(np.sum(d ** 2) for d in directions)))


def _sym_sqrt(cov) -> tuple[np.ndarray, np.ndarray]:
    """(S, S⁻¹) with S = Σ^{1/2} symmetric."""
    eig, vec = np.linalg.eigh(cov)
    return (vec * np.sqrt(eig)) @ vec.T, (vec / np.sqrt(eig)) @ vec.T


def _pinv(matrix) -> np.ndarray:
    return np.linalg.pinv(matrix, rtol=PINV_RTOL)


def _pinv_psd(matrix) -> np.ndarray:
    eig, vec = np.linalg.eigh(0.5 * (matrix + matrix.T))
    keep = eig > PINV_RTOL * max(eig[-1], 0.0)
    return (vec[:, keep] / eig[keep]) @ vec[:, keep].T


# ---------------------------------------------------------------- closed-form natural gradients

def _gram_root(matrix) -> np.ndarray:
    """U·diag(s) from the thin SVD of ``matrix``: a factor R with R Rᵀ = matrix·matrixᵀ."""
    u, sing, _ = np.linalg.svd(matrix, full_matrices=False)
    return u * sing


def end_to_end_operator_root(weights, input_cov) -> np.ndarray:
    """R with R Rᵀ = 𝒦 = BBᵀ = Σ_i (W_{>i}W_{>i}ᵀ) ⊗ (S W_{<i}ᵀW_{<i} S) (derivation step 5).

    R = [root(W_{>i}) ⊗ root(S W_{<i}ᵀ)]_i, at most (C·D) × (L·C·D). It equals B up to an
    orthogonal change of parameter basis, so its SVD gives 𝒦⁺ without squaring B's condition
    number (cond 𝒦 can reach 1e10 with cond Σ_x = 1e6).
    """
    sqrt_cov, _ = _sym_sqrt(input_cov)
    above, below = layer_products(weights)
    return np.hstack([np.kron(_gram_root(a), _gram_root(sqrt_cov @ b.T))
                      for a, b in zip(above, below)])


def end_to_end_operator(weights, input_cov) -> np.ndarray:
    """𝒦 = BBᵀ, (C·D)×(C·D): the Fisher seen from the end-to-end map (derivation step 5)."""
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
    """Moore–Penrose natural gradient F⁺∇Loss per layer, in closed form (derivation step 5).

    Δ_i = W_{>i}ᵀ M S W_{<i}ᵀ with vec M = 𝒦⁺ vec(G S⁻¹); the step is W_i ← W_i − ηΔ_i.
    ``grad`` is G = ∂Loss/∂W (C×D), ``input_cov`` is Σ_x (D×D, positive definite). Minimum-norm
    among all natural gradients, for any widths (bottlenecks included: then the change of W is
    the Σ_x-projection of E = GΣ_x⁻¹ onto the reachable tangent space).
    """
    layers, grad, cov = _prepare(weights, grad, input_cov)
    sqrt_cov, inv_sqrt_cov = _sym_sqrt(cov)
    target = grad @ inv_sqrt_cov
    operator_pinv = _operator_pinv(end_to_end_operator_root(layers, cov))
    mixing = (operator_pinv @ target.ravel()).reshape(target.shape)
    above, below = layer_products(layers)
    return [a.T @ mixing @ sqrt_cov @ b.T for a, b in zip(above, below)]


def block_diagonal_natural_gradient(weights, grad, input_cov, scale: float = 1.0
                                    ) -> list[np.ndarray]:
    """scale · F_ii⁺∇_i = scale · W_{>i}⁺ (G S⁻¹)(W_{<i} S)⁺ per layer (derivation step 6).

    ``scale = 1/L`` gives the per-layer form of THEORY.md claim 9 (see
    :func:`paper_natural_gradient`); ``scale = 1`` is the plain block-diagonal approximation.
    """
    layers, grad, cov = _prepare(weights, grad, input_cov)
    sqrt_cov, inv_sqrt_cov = _sym_sqrt(cov)
    target = grad @ inv_sqrt_cov
    above, below = layer_products(layers)
    return [scale * _pinv(a) @ target @ _pinv(b @ sqrt_cov) for a, b in zip(above, below)]


def paper_natural_gradient(weights, grad, input_cov) -> list[np.ndarray]:
    """Δ_i = (1/L) W_{>i}⁺ (G S⁻¹)(W_{<i}S)⁺: block-diagonal / L, the generalised inverse
    F⁻ = A♯A♯ᵀ of derivation step 7 (not Moore–Penrose in general)."""
    return block_diagonal_natural_gradient(weights, grad, input_cov, scale=1.0 / len(weights))


def gradient_direction(weights, grad, input_cov=None) -> list[np.ndarray]:
    """Plain gradient ∇_i = W_{>i}ᵀ G W_{<i}ᵀ (``input_cov`` unused; same signature)."""
    return layer_gradients(check_weights(weights), grad)


def end_to_end_reachable(weights, input_cov) -> bool:
    """True iff A is onto the C×D maps (rank 𝒦 = C·D), i.e. exact NG moves W by exactly −ηE."""
    layers = check_weights(weights)
    cov = check_input_covariance(input_cov, layers[0].shape[1])
    return _operator_rank(end_to_end_operator_root(layers, cov)) == layers[-1].shape[0] * cov.shape[0]


# ---------------------------------------------------------------- dense reference (P×P)

def _forward(layers, inputs):
    """f = inputs W_1ᵀ ⋯ W_Lᵀ, layer by layer (works on stacked batches and complex numbers)."""
    for w in layers:
        inputs = inputs @ np.swapaxes(w, -1, -2)
    return inputs


def _dense_jacobian(layers, X) -> np.ndarray:
    """J = ∂ vec_r f(X) / ∂θ (N·C × P) by complex-step differentiation, column by column.

    Im f(θ + i·h·e_p)/h = ∂f/∂θ_p + O(h²) with no subtractive cancellation; f is a polynomial in
    θ, so h = 1e-30 makes the error vanish below rounding. It only *evaluates* the network, so
    it shares no algebra with the closed forms it checks.
    """
    step = 1e-30
    columns = []
    for k, w in enumerate(layers):
        basis = np.eye(w.size).reshape(w.size, *w.shape)
        hidden = _forward(layers[:k], X.astype(complex))
        bumped = _forward([w + 1j * step * basis], hidden)          # (P_k, N, M_k)
        out = _forward(layers[k + 1:], bumped)                       # (P_k, N, C)
        columns.append(out.imag.reshape(w.size, -1) / step)
    return np.concatenate(columns).T


def _split(vector, layers) -> list[np.ndarray]:
    bounds = np.cumsum([0] + [w.size for w in layers])
    return [vector[bounds[k]:bounds[k + 1]].reshape(w.shape) for k, w in enumerate(layers)]


def _check_dense_size(layers) -> None:
    n_params = sum(w.size for w in layers)
    if n_params > DENSE_MAX_PARAMS:
        raise ValueError(f"dense reference needs a P×P Fisher; P = {n_params} > "
                         f"{DENSE_MAX_PARAMS}: use natural_gradient() instead")


def dense_fisher(weights, X) -> np.ndarray:
    """F = JᵀJ/N (P×P) from the complex-step Jacobian; refuses P > 20000."""
    layers = check_weights(weights)
    X = np.asarray(finite_matrix("X", X, cols=layers[0].shape[1]), dtype=np.float64)
    _check_dense_size(layers)
    jac = _dense_jacobian(layers, X)
    return jac.T @ jac / X.shape[0]


def _dense_setup(weights, X, Y):
    layers, X, Y = check_data(weights, X, Y)
    _check_dense_size(layers)
    jac = _dense_jacobian(layers, X)
    residual = (X @ end_to_end_map(layers).T - Y).ravel()
    return layers, jac, jac.T @ jac / X.shape[0], jac.T @ residual / X.shape[0]


def dense_fisher_pinv(jac, n: int) -> np.ndarray:
    """F⁺ for F = JᵀJ/n, from the SVD J = U diag(s) Vᵀ: F⁺ = V diag(n/s²) Vᵀ over s² > rtol·s_max².

    Same matrix as pinv(JᵀJ/n) but it never squares J's condition number while finding the
    eigenvectors, which keeps the reference accurate for ill-conditioned inputs (cond 1e6).
    """
    _, sing, vt = np.linalg.svd(jac, full_matrices=False)
    keep = sing ** 2 > PINV_RTOL * sing[0] ** 2 if sing.size else sing > 0
    return (vt[keep].T * (n / sing[keep] ** 2)) @ vt[keep]


def dense_natural_gradient(weights, X, Y) -> list[np.ndarray]:
    """Reference direction F⁺∇Loss (the step is −η times it), explicit Fisher F = JᵀJ/N (P×P).

    J by complex steps (:func:`_dense_jacobian`); ∇Loss = Jᵀr/N; F⁺ from
    :func:`dense_fisher_pinv`; the result is split back into layers. Refuses P > 20000.
    """
    layers, jac, _, grad = _dense_setup(weights, X, Y)
    return _split(dense_fisher_pinv(jac, np.shape(X)[0]) @ grad, layers)


def dense_block_diagonal_natural_gradient(weights, X, Y) -> list[np.ndarray]:
    """Reference: F_ii⁺∇_i with the diagonal blocks F_ii cut out of the dense Fisher."""
    layers, _, fisher, grad = _dense_setup(weights, X, Y)
    bounds = np.cumsum([0] + [w.size for w in layers])
    blocks = [slice(bounds[k], bounds[k + 1]) for k in range(len(layers))]
    return [(_pinv_psd(fisher[b, b]) @ grad[b]).reshape(w.shape) for b, w in zip(blocks, layers)]


def dense_function_space_kernels(weights, X) -> dict[str, object]:
    """Reference kernels from the dense Jacobian (THEORY.md "Setup").

    ``layer_blocks`` J_lJ_lᵀ, ``exact`` Θ_F = J F⁺ Jᵀ/N, ``block_diagonal`` Σ_l J_l F_ll⁺ J_lᵀ/N,
    ``jacobian_rank`` rank J.
    """
    layers = check_weights(weights)
    X = np.asarray(finite_matrix("X", X, cols=layers[0].shape[1]), dtype=np.float64)
    _check_dense_size(layers)
    n = X.shape[0]
    jac = _dense_jacobian(layers, X)
    bounds = np.cumsum([0] + [w.size for w in layers])
    parts = [jac[:, bounds[k]:bounds[k + 1]] for k in range(len(layers))]
    return {
        "layer_blocks": [p @ p.T for p in parts],
        "exact": jac @ dense_fisher_pinv(jac, n) @ jac.T / n,
        "block_diagonal": sum(p @ dense_fisher_pinv(p, n) @ p.T / n for p in parts),
        "jacobian_rank": int(np.linalg.matrix_rank(jac)),
    }


# ---------------------------------------------------------------- kernels in closed form

def layer_ntk_blocks(weights, X) -> list[np.ndarray]:
    """Θ_l = (X W_{<l}ᵀW_{<l} Xᵀ) ⊗ (W_{>l}W_{>l}ᵀ), N·C×N·C, index n·C + c (derivation step 9)."""
    layers = check_weights(weights)
    X = np.asarray(finite_matrix("X", X, cols=layers[0].shape[1]), dtype=np.float64)
    above, below = layer_products(layers)
    return [np.kron((X @ b.T) @ (X @ b.T).T, a @ a.T) for a, b in zip(above, below)]


def _range_projector(kernel) -> np.ndarray:
    return kernel @ _pinv_psd(kernel)


def exact_function_space_kernel(blocks) -> np.ndarray:
    """Θ_F(X, X) = Θ Θ⁺ with Θ = Σ_l Θ_l (exact NGD on the training points, step 9)."""
    return _range_projector(sum(blocks))


def block_diagonal_function_space_kernel(blocks) -> np.ndarray:
    """Σ_l Θ_l Θ_l⁺ (block-diagonal NGD on the training points, claim 2 with S = I)."""
    return sum(_range_projector(b) for b in blocks)


def isotropy(kernel) -> tuple[float, float]:
    """(α, deviation): α = tr Θ_G / (N·C), deviation = ||Θ_G − αI||_F / ||αI||_F (THEORY.md)."""
    size = kernel.shape[0]
    alpha = float(np.trace(kernel) / size)
    return alpha, float(np.linalg.norm(kernel - alpha * np.eye(size)) / (abs(alpha) * np.sqrt(size)))


# ---------------------------------------------------------------- dynamics

_DIRECTIONS = {
    "ngd": natural_gradient,
    "gd": gradient_direction,
    "block_diag": paper_natural_gradient,
}


@dataclass(frozen=True)
class Trajectory:
    """``losses[t]`` and ``maps[t]`` (end-to-end W) after t steps, t = 0..steps; final layers."""
    losses: np.ndarray
    maps: np.ndarray
    weights: list


def train(weights0, X, Y, method: str = "ngd", lr: float = 0.1, steps: int = 10) -> Trajectory:
    """Full-batch training W_i ← W_i − lr·Δ_i.

    ``method``: "ngd" Moore–Penrose exact NG (:func:`natural_gradient`), "gd" plain gradient,
    "block_diag" block-diagonal NG with the 1/L factor (:func:`paper_natural_gradient`).
    """
    layers, X, Y = check_data(weights0, X, Y)
    method = choice("method", method, METHODS)
    lr, steps = _check_step(lr, steps)
    direction, cov = _DIRECTIONS[method], input_covariance(X)
    maps = [end_to_end_map(layers)]
    for _ in range(steps):
        grad = end_to_end_gradient(maps[-1], X, Y)
        layers = [w - lr * d for w, d in zip(layers, direction(layers, grad, cov))]
        maps.append(end_to_end_map(layers))
    maps = np.stack(maps)
    return Trajectory(np.array([mse_loss(m, X, Y) for m in maps]), maps, layers)


def exact_block_diagonal_step(end_to_end, target, lr: float, depth: int) -> np.ndarray:
    """One exact step of the per-layer form, square invertible layers (derivation step 8):
    W' = (I − (η/L)(W − W*)W⁻¹)^L W."""
    error_ratio = (end_to_end - target) @ np.linalg.inv(end_to_end)
    factor = np.eye(end_to_end.shape[0]) - (lr / depth) * error_ratio
    return np.linalg.matrix_power(factor, depth) @ end_to_end


def _all_square(layers) -> bool:
    return all(w.shape[0] == w.shape[1] == layers[0].shape[0] for w in layers)


def predicted_end_to_end_maps(weights0, X, Y, lr: float, steps: int,
                              form: str = "first_order") -> np.ndarray:
    """Predicted W(t), t = 0..steps (derivation step 8).

    "first_order": W* + (1 − η)^t (W_0 − W*); "continuous": W* + e^{−ηt}(W_0 − W*) (the NG flow at
    time τ = ηt); both need the end-to-end map to be reachable (no bottleneck). "exact": iterate
    W' = (I − (η/L)E W⁻¹)^L W, exact for method "block_diag" with square invertible layers.
    """
    layers, X, Y = check_data(weights0, X, Y)
    form = choice("form", form, LOSS_FORMS)
    lr, steps = _check_step(lr, steps)
    target, start = least_squares_map(X, Y), end_to_end_map(layers)
    if form == "exact":
        if not _all_square(layers) or abs(np.linalg.det(start)) == 0:
            raise ValueError("form='exact' needs square invertible layers (all widths = in = out)")
        maps = [start]
        for _ in range(steps):
            maps.append(exact_block_diagonal_step(maps[-1], target, lr, len(layers)))
        return np.stack(maps)
    if not end_to_end_reachable(layers, input_covariance(X)):
        raise ValueError("a bottleneck (a width below both in_dim and out_dim) makes W* "
                         "unreachable; the closed-form curve needs every width >= in or >= out")
    t = np.arange(steps + 1)
    decay = (1.0 - lr) ** t if form == "first_order" else np.exp(-lr * t)
    return target + decay[:, None, None] * (start - target)


def predicted_loss(weights0, X, Y, lr: float, steps: int, form: str = "first_order"
                   ) -> np.ndarray:
    """Loss of the predicted end-to-end maps; for "first_order" it is
    Loss* + (1 − η)^{2t}(Loss_0 − Loss*), for "continuous" Loss* + e^{−2ηt}(Loss_0 − Loss*)."""
    maps = predicted_end_to_end_maps(weights0, X, Y, lr, steps, form)
    return np.array([mse_loss(m, X, Y) for m in maps])


# ---------------------------------------------------------------- problem generators

def input_spectrum(in_dim: int, cond: float) -> np.ndarray:
    """Eigenvalues of Σ_x, geometrically spaced from 1 down to 1/cond."""
    return np.geomspace(1.0, 1.0 / cond, in_dim)


def make_regression(in_dim: int, out_dim: int, n: int, cond: float = 1.0, seed: int = 0,
                    noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """X (n×in_dim) with XᵀX/n exactly equal to a rotated diag(:func:`input_spectrum`), and
    Y = X W_teacherᵀ + noise·ε (n×out_dim)."""
    in_dim, out_dim = positive_int("in_dim", in_dim), positive_int("out_dim", out_dim)
    n = positive_int("n", n)
    if n < in_dim:
        raise ValueError(f"n = {n} < in_dim = {in_dim} makes Σ_x singular; use n >= in_dim")
    cond, noise = nonnegative("cond", cond), nonnegative("noise", noise)
    if cond < 1:
        raise ValueError(f"cond is the eigenvalue spread λ_max/λ_min of Σ_x and must be >= 1, got {cond}")
    rng = np.random.default_rng(seed)
    q_samples, _ = np.linalg.qr(rng.standard_normal((n, in_dim)))   # n×D, orthonormal columns
    rotation, _ = np.linalg.qr(rng.standard_normal((in_dim, in_dim)))
    X = np.sqrt(n) * q_samples @ (np.sqrt(input_spectrum(in_dim, cond))[:, None] * rotation.T)
    teacher = rng.standard_normal((out_dim, in_dim))
    return X, X @ teacher.T + noise * rng.standard_normal((n, out_dim))


def random_weights(in_dim: int, widths, out_dim: int, seed: int = 0, jitter: float = 0.3
                   ) -> list[np.ndarray]:
    """Well-conditioned layers: (semi-)orthogonal matrices plus jitter·Gaussian/sqrt(fan_in)."""
    dims = [positive_int("in_dim", in_dim)] + [positive_int("width", w) for w in widths] \
        + [positive_int("out_dim", out_dim)]
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        q, _ = np.linalg.qr(rng.standard_normal((max(fan_in, fan_out), min(fan_in, fan_out))))
        base = q if fan_out >= fan_in else q.T
        layers.append(base + jitter * rng.standard_normal((fan_out, fan_in)) / np.sqrt(fan_in))
    return layers
