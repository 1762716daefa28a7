"""Parameter-space reference of every Fisher approximation (small networks only).

This module is the *independent* check of the Gram-form code in :mod:`ntk_ngd.kernels`: it
builds explicit P×P matrices in float64 and never uses ``Network.forward_with_taps`` or
anything from ``kernels``. It is meant for P <= :data:`MAX_PARAMS`.

Conventions (THEORY.md "Setup"; the Gram form uses the same)
-----------------------------------------------------------
* Parameter ordering: layer l contributes W̃_l = concatenate([W_l, b_l[None, :]]) of shape
  (fan_in + bias, fan_out), flattened row-major (index ``i * fan_out + j``); layers in order
  1..L. :func:`flatten_params` / :func:`unflatten_params` convert, :func:`layer_slices` gives
  each layer's slice of the flat vector θ.
* Outputs are flattened row-major: row ``n * C + c``. The Jacobian J = ∂f(X)/∂θ is (N·C, P).
* Loss = (1/2N) Σ ||f(x_n) − y_n||², residual r = f(X) − Y flattened, ∇Loss = Jᵀ r / N.
* Kernel of a method with approximation G and damping ρ:
  Θ_G(X_a, X) = J(X_a) (G + ρI)⁻¹ J(X)ᵀ / N; update Δθ = −η (G + ρI)⁻¹ ∇Loss;
  function step Δf(X_a) = J(X_a) Δθ (linearised).
* ρ = 0 means the Moore–Penrose pseudo-inverse. It is taken per diagonal block of G (the
  inverse of a block-diagonal matrix is the block-diagonal of the inverses, so this is exact;
  per block the cut-off is relative to *that* block's largest eigenvalue). A symmetric block
  of size m with eigenvalues λ_i is inverted through ``numpy.linalg.eigh`` keeping only
  |λ_i| > tol, tol = rcond · max|λ|, with ``rcond = m · eps`` by default (eps = float64 machine
  epsilon, the same rule as ``numpy.linalg.matrix_rank``). G = JᵀJ/N squares the conditioning
  of J, so the pseudo-inverse resolves J only up to cond(J) ≈ (m · eps)^(-1/2) ≈ 10^6–10^7.
  ρ > 0 uses a symmetric (LDLᵀ) solve of each block (G_b + ρI); the layer-pattern
  approximations (block-tridiagonal, general S) are symmetric but indefinite, so neither
  Cholesky nor a PSD-only eigenvalue cut-off may be used for them.

Methods (``METHODS``)
---------------------
``gd`` G = I (no damping, ρ is ignored: Θ_GD = J Jᵀ / N) · ``exact`` G = JᵀJ/N ·
``block_diag`` blockdiag_l(J_lᵀJ_l/N) · ``block_tridiag`` J_aᵀJ_b/N for |a−b| <= 1 ·
``pattern`` S_ab J_aᵀJ_b/N for an L×L symmetric 0/1 matrix S · ``kfac`` blockdiag_l
kron(A_l + √ρ I, B_l + √ρ I) (factored damping; at ρ = 0 the pseudo-inverse is
kron(A_l⁺, B_l⁺)), ``kfac_readout="paper"`` uses B_L/N for the readout layer · ``unit_wise``
one block per (layer l, output unit j): the column W̃_l[:, j] · ``ef`` Σ_n g_n g_nᵀ / N with
g_n = J_nᵀ r_n · ``sf`` (1/k) Σ_s Σ_n J_nᵀ ε_n ε_nᵀ J_n / N, ε ~ ``default_rng(seed)
.standard_normal((k, N, C))`` · ``ief`` (update only) Δθ = −η G_matᵀ (G_mat G_matᵀ + λI)⁻¹ s,
rows g_n, s_n = ||r_n||². ``kpsvd`` (option ``rank`` k) blockdiag_l Σ_{i≤k} σ_i A_i ⊗ B_i from an explicit
SVD of Van Loan's rearrangement of F_l = J_lᵀJ_l/N · ``ekfac`` blockdiag_l U diag(s) Uᵀ with U = kron(U_A, U_B)
from ``numpy.linalg.eigh`` of the K-FAC factors and s = diag(Uᵀ F_l U) · ``diag`` diag(F). All three are
damped additively (G + ρI) and pseudo-inverted per layer block at ρ = 0 (:func:`kron_fit`).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from .. import _validate
from ..networks import Network

#: Largest parameter count the dense reference accepts (a P×P float64 matrix is 3.2 GB there).
MAX_PARAMS = 20000

#: Methods that define a function-space kernel Θ_G.
KERNEL_METHODS = ("gd", "exact", "block_diag", "block_tridiag", "pattern", "kfac", "unit_wise", "ef", "sf",
                  "kpsvd", "ekfac", "diag", "kfac_cor")
#: Methods whose layer block is fitted to the explicit Fisher block F_l (see :func:`kron_fit`).
KRON_METHODS = ("kpsvd", "ekfac", "diag", "kfac_cor")
#: Every method, ``ief`` (an update, not a kernel) included.
METHODS = KERNEL_METHODS + ("ief",)
KFAC_READOUTS = ("common", "paper")

_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _check_net(net: Network) -> Network:
    if not isinstance(net, Network):
        raise ValueError(f"net must be an ntk_ngd.networks.Network (from mlp(...)), got {type(net).__name__}")
    P = net.num_params
    if P > MAX_PARAMS:
        raise ValueError(
            f"the network has P={P} parameters; the dense reference is limited to P <= {MAX_PARAMS}"
        )
    return net


def _check_method(method: str, allowed: Sequence[str] = METHODS) -> str:
    if method not in allowed:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(allowed)}")
    return method


def _check_pattern(net: Network, pattern) -> np.ndarray:
    L = net.depth
    if pattern is None:
        raise ValueError(f"method 'pattern' needs pattern=, an {L}x{L} symmetric 0/1 matrix")
    S = np.asarray(pattern, dtype=float)
    if S.shape != (L, L):
        raise ValueError(f"pattern must be {L}x{L} (one row per Dense layer), got shape {S.shape}")
    if not np.all((S == 0) | (S == 1)):
        raise ValueError("pattern entries must be 0 or 1")
    if not np.array_equal(S, S.T):
        raise ValueError("pattern must be symmetric (S_ab couples layers a and b both ways)")
    return S


def _check_residual(residual, N: int, C: int) -> np.ndarray:
    r = np.asarray(residual, dtype=float)
    if r.size != N * C or r.ndim not in (1, 2) or (r.ndim == 2 and r.shape != (N, C)):
        raise ValueError(f"residual must have shape ({N}, {C}) or ({N * C},), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("residual contains NaN or inf")
    return r.reshape(N, C)


# --------------------------------------------------------------------------------------------
# Parameters <-> flat vector, Jacobian
# --------------------------------------------------------------------------------------------
def layer_slices(net: Network) -> list[slice]:
    """Slice of each Dense layer's parameters in the flat vector θ (layers 1..L in order)."""
    out, start = [], 0
    for count in net.layer_param_counts:
        out.append(slice(start, start + count))
        start += count
    return out


def flatten_params(net: Network, params) -> np.ndarray:
    """Flat θ (P,): per layer W̃ = [W; b] of shape (fan_in + bias, fan_out), row-major.

    neural-tangents stores b with shape (1, fan_out); (fan_out,) is accepted too.
    """
    parts = []
    for l in range(net.depth):
        W, b = params[2 * l]
        Wt = np.asarray(W, dtype=float)
        if net.bias:
            Wt = np.concatenate([Wt, np.asarray(b, dtype=float).reshape(1, -1)], axis=0)
        parts.append(Wt.reshape(-1))
    return np.concatenate(parts)


def unflatten_params(net: Network, theta):
    """neural-tangents params (list, Dense l at index 2l, ``()`` for activations) from θ."""
    theta = jnp.asarray(theta)
    if theta.shape != (net.num_params,):
        raise ValueError(f"theta must have shape ({net.num_params},), got {tuple(theta.shape)}")
    params = []
    for l, (sl, (fi, fo)) in enumerate(zip(layer_slices(net), net.layer_shapes)):
        Wt = theta[sl].reshape(fi + int(net.bias), fo)
        params.append((Wt[:fi], Wt[fi:] if net.bias else None))  # NT stores b as (1, fan_out)
        if l < net.depth - 1:
            params.append(())
    return params


def jacobian(net: Network, params, X) -> np.ndarray:
    """J = ∂f(X)/∂θ, shape (N·C, P), rows n·C + c, columns in the :func:`flatten_params` order.

    ``jax.jit(jax.jacrev(...))`` of θ ↦ ``net.apply(unflatten_params(net, θ), X).reshape(-1)``
    (jit only to compile once instead of op by op).
    """
    _check_net(net)
    X = net.check_inputs(X)
    theta = jnp.asarray(flatten_params(net, params))

    def f(t):  # X is a concrete constant here (net.apply validates it)
        return net.apply(unflatten_params(net, t), X).reshape(-1)

    return np.asarray(jax.jit(jax.jacrev(f))(theta), dtype=float)


# --------------------------------------------------------------------------------------------
# Own forward pass (K-FAC factors): scaled layer inputs h̃ and backward signals δ
# --------------------------------------------------------------------------------------------
def _forward(net: Network, params, X, taps):
    """f(X) and the scaled inputs h̃_{l−1} = [w_std h/√fan_in, b_std], with taps[l] added to z_l."""
    h = jnp.asarray(X)
    inputs = []
    for l in range(net.depth):
        W, b = params[2 * l]
        fan_in = W.shape[0]
        h_scaled = (net.w_std / np.sqrt(fan_in)) * h
        z = h_scaled @ W + taps[l]
        if net.bias:
            z = z + net.b_std * b
            h_scaled = jnp.concatenate([h_scaled, jnp.full((h.shape[0], 1), net.b_std)], axis=1)
        inputs.append(h_scaled)
        h = net.stax_layers[2 * l + 1][1]((), z) if l < net.depth - 1 else z
    return h, inputs


def layer_signals(net: Network, params, X) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, deltas): ``inputs[l]`` (N, fan_in + bias) = h̃_{l−1}(x_n) and ``deltas[l]``
    (N, C, fan_out) = δ_{l,c}(x_n) = ∂f_c(x_n)/∂z_l(x_n), from this module's own forward pass.

    J_l row (n, c) equals ``kron(inputs[l][n], deltas[l][n, c])`` (tested).
    """
    _check_net(net)
    X = np.asarray(net.check_inputs(X), dtype=float)
    N = X.shape[0]
    taps = [jnp.zeros((N, fo)) for fo in net.fan_out]
    _, inputs = _forward(net, params, X, taps)
    jac = jax.jit(jax.jacrev(lambda t: _forward(net, params, X, t)[0]))(taps)  # each (N, C, N, fo)
    idx = np.arange(N)
    deltas = [np.asarray(j, dtype=float)[idx, :, idx, :] for j in jac]  # (N, C, fo)
    return [np.asarray(h, dtype=float) for h in inputs], deltas


def kfac_factors(net: Network, params, X, kfac_readout: str = "common") -> list[tuple[np.ndarray, np.ndarray]]:
    """K-FAC factors per layer: A_l = (1/N) Σ_n h̃ h̃ᵀ, B_l = (1/N) Σ_n Σ_c δ δᵀ (undamped).

    ``kfac_readout="paper"`` divides the readout layer's B_L by N once more.
    """
    _validate.choice("kfac_readout", kfac_readout, KFAC_READOUTS)
    inputs, deltas = layer_signals(net, params, X)
    N = inputs[0].shape[0]
    out = []
    for l, (H, D) in enumerate(zip(inputs, deltas)):
        A = H.T @ H / N
        Dm = D.reshape(-1, D.shape[-1])
        B = Dm.T @ Dm / N
        if kfac_readout == "paper" and l == net.depth - 1:
            B = B / N
        out.append((A, B))
    return out


# --------------------------------------------------------------------------------------------
# Kronecker fits of one explicit layer block (KPSVD, EKFAC, diagonal)
# --------------------------------------------------------------------------------------------
def rearrange(F_block: np.ndarray, d: int, m: int) -> np.ndarray:
    """Van Loan's rearrangement R(F) (d² × m²) of a (d·m)² block: R(A ⊗ B) = vec(A) vec(B)ᵀ.

    Entry F[i·m + j, i'·m + j'] (parameter (i, j) = row i of W̃, column j) goes to R[(i, i'), (j, j')].
    """
    return F_block.reshape(d, m, d, m).transpose(0, 2, 1, 3).reshape(d * d, m * m)


def kpsvd_terms(F_block: np.ndarray, d: int, m: int, rank: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """[(σ_i, A_i, B_i)]: the top-``rank`` terms of the explicit SVD of R(F) (||A_i||_F = ||B_i||_F = 1);
    singular values ≤ max(d², m²)·eps·σ_1 are dropped (numerically zero terms)."""
    U, sig, Vt = np.linalg.svd(rearrange(F_block, d, m), full_matrices=False)
    keep = max(1, min(rank, int(np.sum(sig > max(d * d, m * m) * _EPS * sig[0]))))
    return [(float(sig[i]), U[:, i].reshape(d, d), Vt[i].reshape(m, m)) for i in range(keep)]


def ekfac_basis(A: np.ndarray, B: np.ndarray, F_block: np.ndarray):
    """(U = kron(U_A, U_B), s = diag(Uᵀ F U)): EKFAC's basis and its Fisher-fitted eigenvalues."""
    U = np.kron(np.linalg.eigh(A)[1], np.linalg.eigh(B)[1])
    return U, np.einsum("pi,pq,qi->i", U, F_block, U)


def kron_fit(method: str, F_block: np.ndarray, d: int, m: int, rank: int = 1, factors=None) -> np.ndarray:
    """The undamped approximation of one explicit layer block F_l (d·m square) for ``method`` in
    :data:`KRON_METHODS`; ``factors`` = (A_l, B_l), K-FAC's factors, for ``ekfac``."""
    _check_method(method, KRON_METHODS)
    if method == "diag":
        return np.diag(np.diag(F_block))
    if method == "ekfac":
        U, s = ekfac_basis(*factors, F_block)
        return (U * s) @ U.T
    if method == "kfac_cor":  # K-FAC's A⊗B + the explicit best Kronecker fit of the remainder
        KF = np.kron(*factors)
        G = KF + sum(sig * np.kron(C, D) for sig, C, D in kpsvd_terms(F_block - KF, d, m, 1))
        return (G + G.T) / 2
    G = sum(sig * np.kron(A, B) for sig, A, B in kpsvd_terms(F_block, d, m, rank))
    return (G + G.T) / 2


def layer_fisher_blocks(net: Network, params, X) -> list[np.ndarray]:
    """The exact per-layer Fisher blocks F_l = J_lᵀJ_l/N from the explicit Jacobian."""
    J = jacobian(net, params, X)
    N = np.asarray(X).shape[0]
    return [J[:, sl].T @ J[:, sl] / N for sl in layer_slices(net)]


# --------------------------------------------------------------------------------------------
# Inverses of symmetric blocks
# --------------------------------------------------------------------------------------------
def sym_pinv(G: np.ndarray, rcond: float | None = None) -> np.ndarray:
    """Moore–Penrose pseudo-inverse of a symmetric (not necessarily PSD) matrix via ``eigh``.

    Keeps eigenvalues with |λ| > rcond · max|λ|, ``rcond`` defaulting to size · eps. (The
    layer-pattern approximations, block-tridiagonal included, are indefinite: their negative
    eigenvalues must be kept.)
    """
    G = np.asarray(G, dtype=float)
    m = G.shape[0]
    if m == 0:
        return G.copy()
    lam, V = np.linalg.eigh((G + G.T) / 2)
    if rcond is None:
        rcond = m * _EPS
    top = np.max(np.abs(lam))
    keep = np.abs(lam) > rcond * top if top > 0 else np.zeros_like(lam, dtype=bool)
    Vk = V[:, keep]
    return (Vk / lam[keep]) @ Vk.T


def _solve_block(G: np.ndarray, rhs: np.ndarray, damping: float, rcond) -> np.ndarray:
    if damping > 0:
        m = G.shape[0]
        # G is rank <= N·C, so G + ρI has condition number ~ λ_max/ρ and scipy warns at small ρ;
        # the right-hand sides Jᵀ lie in range(G), and the kernels stay accurate to O(ρ) (measured
        # down to ρ = 1e-15 at depth 4–6), so the warning is silenced here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            return scipy.linalg.solve((G + G.T) / 2 + damping * np.eye(m), rhs, assume_a="sym")
    return sym_pinv(G, rcond) @ rhs


class _Preconditioner:
    """(G + ρI)⁻¹ (pseudo-inverse at ρ = 0) applied blockwise; ``blocks`` partition range(P)."""

    def __init__(self, P: int, G=None, blocks=None, damping=0.0, rcond=None, kfac=None, slices=None, identity=False):
        self.P, self.G, self.blocks, self.damping, self.rcond = P, G, blocks, damping, rcond
        self.kfac, self.slices, self.identity = kfac, slices, identity

    def apply(self, rhs: np.ndarray) -> np.ndarray:
        rhs = np.asarray(rhs, dtype=float)
        if self.identity:
            return rhs.copy()
        out = np.zeros_like(rhs)
        if self.kfac is not None:
            s = np.sqrt(self.damping)
            for sl, (A, B) in zip(self.slices, self.kfac):
                if self.damping > 0:
                    Ai = np.linalg.inv(A + s * np.eye(A.shape[0]))
                    Bi = np.linalg.inv(B + s * np.eye(B.shape[0]))
                else:
                    Ai, Bi = sym_pinv(A, self.rcond), sym_pinv(B, self.rcond)
                out[sl] = np.kron(Ai, Bi) @ rhs[sl]
            return out
        for idx in self.blocks:
            out[idx] = _solve_block(self.G[np.ix_(idx, idx)], rhs[idx], self.damping, self.rcond)
        return out


def _pattern_matrix(net: Network, method: str, pattern) -> np.ndarray:
    L = net.depth
    if method == "exact":
        return np.ones((L, L))
    if method == "block_diag":
        return np.eye(L)
    if method == "block_tridiag":
        a = np.arange(L)
        return (np.abs(a[:, None] - a[None, :]) <= 1).astype(float)
    return _check_pattern(net, pattern)


def _components(S: np.ndarray) -> list[list[int]]:
    """Connected components of the graph with adjacency S (layers coupled by the pattern)."""
    L = S.shape[0]
    seen, comps = set(), []
    for start in range(L):
        if start in seen:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            a = stack.pop()
            comp.append(a)
            for b in range(L):
                if S[a, b] and b not in seen:
                    seen.add(b)
                    stack.append(b)
        comps.append(sorted(comp))
    return comps


def _unit_blocks(net: Network) -> list[np.ndarray]:
    blocks = []
    for sl, (fi, fo) in zip(layer_slices(net), net.layer_shapes):
        rows = fi + int(net.bias)
        for j in range(fo):
            blocks.append(sl.start + np.arange(rows) * fo + j)
    return blocks


def _jacobians(net: Network, params, X, X_test=None):
    """(J(X), J(X_test) or None) from one Jacobian of the stacked inputs (rows are per sample)."""
    if X_test is None:
        return jacobian(net, params, X), None
    X_test = net.check_inputs(X_test, "X_test")
    J = jacobian(net, params, np.concatenate([np.asarray(X, float), np.asarray(X_test, float)]))
    n = np.asarray(X).shape[0] * net.out_dim
    return J[:n], J[n:]


def _build(net, params, X, method, damping, residual, rcond, X_test=None, *, k=1, seed=0, pattern=None,
           kfac_readout="common", rank=1):
    """(G, _Preconditioner, J, J_test) for a kernel method; every input is checked first."""
    _check_net(net)
    _check_method(method, METHODS)
    if method == "ief":
        raise ValueError("method 'ief' is an update, not a Fisher approximation or kernel; "
                         "use parameter_update or function_step")
    damping = _validate.nonnegative("damping", damping)
    if rcond is not None:
        rcond = _validate.nonnegative("rcond", rcond)
    _validate.choice("kfac_readout", kfac_readout, KFAC_READOUTS)
    if pattern is not None and method != "pattern":
        raise ValueError(f"pattern= is only used by method 'pattern', not {method!r}")
    rank = _validate.positive_int("kpsvd rank (number of Kronecker terms)", rank)
    if rank != 1 and method != "kpsvd":
        raise ValueError(f"rank= is only used by method 'kpsvd', not {method!r}")
    X = net.check_inputs(X)
    N, C, P = X.shape[0], net.out_dim, net.num_params
    if method == "ef":
        if residual is None:
            raise ValueError(f"method 'ef' needs residual= (f(X) - Y, shape ({N}, {C}))")
        residual = _check_residual(residual, N, C)
    if method == "sf":
        k = _validate.positive_int("k", k)
        seed = _validate.positive_int("seed", seed, minimum=0)
    if method == "pattern":
        _check_pattern(net, pattern)
    if X_test is not None:
        net.check_inputs(X_test, "X_test")
    J, Jt = _jacobians(net, params, X, X_test)
    slices = layer_slices(net)
    everything = [np.arange(P)]

    if method == "gd":
        return np.eye(P), _Preconditioner(P, identity=True), J, Jt
    if method == "kfac":
        factors = kfac_factors(net, params, X, kfac_readout)
        s = np.sqrt(damping)
        G = np.zeros((P, P))
        for sl, (A, B) in zip(slices, factors):
            G[sl, sl] = np.kron(A + s * np.eye(A.shape[0]), B + s * np.eye(B.shape[0]))
        return G, _Preconditioner(P, damping=damping, rcond=rcond, kfac=factors, slices=slices), J, Jt
    if method in ("exact", "block_diag", "block_tridiag", "pattern"):
        S = _pattern_matrix(net, method, pattern)
        G = J.T @ J / N
        mask = np.zeros((P, P))
        for a, sa in enumerate(slices):
            for b, sb in enumerate(slices):
                mask[sa, sb] = S[a, b]
        G = G * mask
        blocks = [np.concatenate([np.arange(P)[slices[a]] for a in comp]) for comp in _components(S)]
        return G, _Preconditioner(P, G, blocks, damping, rcond), J, Jt
    if method in KRON_METHODS:
        F = J.T @ J / N
        factors = kfac_factors(net, params, X) if method in ("ekfac", "kfac_cor") else [None] * net.depth
        G = np.zeros((P, P))
        for sl, (fi, fo), AB in zip(slices, net.layer_shapes, factors):
            G[sl, sl] = kron_fit(method, F[sl, sl], fi + int(net.bias), fo, rank=rank, factors=AB)
        # diag: one 1×1 block per parameter, so the pseudo-inverse keeps every d_p > 0 (the ρ → 0⁺ limit)
        blocks = [np.array([p]) for p in range(P)] if method == "diag" else [np.arange(P)[sl] for sl in slices]
        return G, _Preconditioner(P, G, blocks, damping, rcond), J, Jt
    if method == "unit_wise":
        G = np.zeros((P, P))
        blocks = _unit_blocks(net)
        for idx in blocks:
            Jb = J[:, idx]
            G[np.ix_(idx, idx)] = Jb.T @ Jb / N
        return G, _Preconditioner(P, G, blocks, damping, rcond), J, Jt
    Jn = J.reshape(N, C, P)
    if method == "ef":
        g = np.einsum("ncp,nc->np", Jn, residual)  # per-sample gradients g_n = J_nᵀ r_n
        G = g.T @ g / N
    else:  # sf
        eps = np.random.default_rng(seed).standard_normal((k, N, C))
        G = np.zeros((P, P))
        for s in range(k):
            g = np.einsum("ncp,nc->np", Jn, eps[s])
            G += g.T @ g / N
        G /= k
    return G, _Preconditioner(P, G, everything, damping, rcond), J, Jt


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def fisher_approximation(
    net: Network,
    params,
    X,
    method: str,
    damping: float = 0.0,
    residual=None,
    k: int = 1,
    seed: int = 0,
    pattern=None,
    kfac_readout: str = "common",
    rank: int = 1,
) -> np.ndarray:
    """The approximation G (P×P) of the Fisher F = JᵀJ/N for a kernel method.

    Undamped for every method (the damping enters as G + ρI elsewhere) except ``kfac``, whose
    factored damping is part of the approximation: blockdiag_l kron(A_l + √ρ I, B_l + √ρ I).
    ``gd`` returns the identity. ``residual`` (N×C or NC) is required for ``ef``.
    """
    G, _, _, _ = _build(net, params, X, method, damping, residual, None, k=k, seed=seed, pattern=pattern,
                        kfac_readout=kfac_readout, rank=rank)
    return G


def inverse_preconditioner(
    net: Network, params, X, method: str, damping: float = 0.0, residual=None, rcond=None, **opts
) -> np.ndarray:
    """The explicit P×P matrix M = (G + ρI)⁻¹ (blockwise pseudo-inverse at ρ = 0; for ``kfac``
    blockdiag kron((A + √ρ)⁻¹, (B + √ρ)⁻¹); identity for ``gd``)."""
    _, pre, _, _ = _build(net, params, X, method, damping, residual, rcond, **_method_options(opts))
    return pre.apply(np.eye(net.num_params))


def _no_extra(opts):
    if opts:
        raise ValueError(f"unexpected options {sorted(opts)}; valid: k, seed, pattern, kfac_readout, rank, rcond")


def _method_options(opts) -> dict:
    """The method options of the public functions (``k``, ``seed``, ``pattern``, ``kfac_readout``, ``rank``)."""
    out = {"k": opts.pop("k", 1), "seed": opts.pop("seed", 0), "pattern": opts.pop("pattern", None),
           "kfac_readout": opts.pop("kfac_readout", "common"), "rank": opts.pop("rank", 1)}
    _no_extra(opts)
    return out


def preconditioned_kernel(
    net: Network,
    params,
    X,
    method: str,
    damping: float = 0.0,
    X_test=None,
    residual=None,
    rcond: float | None = None,
    **opts,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(K_train, K_test): Θ_G(X, X) (NC×NC) and Θ_G(X_test, X) (N_test·C × NC) or ``None``.

    Θ_G(X_a, X) = J(X_a) (G + ρI)⁻¹ J(X)ᵀ / N, through a blockwise symmetric solve (ρ > 0) or
    pseudo-inverse (ρ = 0). ``opts``: ``k``, ``seed`` (sf), ``pattern``, ``kfac_readout``.
    """
    _, pre, J, Jt = _build(net, params, X, method, damping, residual, rcond, X_test, **_method_options(opts))
    N = np.asarray(X).shape[0]
    MJt = pre.apply(J.T)
    return J @ MJt / N, (None if Jt is None else Jt @ MJt / N)


def residual_of(net: Network, params, X, Y) -> np.ndarray:
    """r = f(X) − Y, shape (N, C)."""
    X = net.check_inputs(X)
    Y = _validate.finite_matrix("Y", Y, cols=net.out_dim, rows=X.shape[0])
    return np.asarray(net.apply(params, X), dtype=float) - np.asarray(Y, dtype=float)


def parameter_update(
    net: Network,
    params,
    X,
    Y,
    method: str,
    lr: float,
    damping: float = 0.0,
    rcond: float | None = None,
    **opts,
) -> np.ndarray:
    """Δθ (P,) for one step of ``method`` with learning rate ``lr``.

    Kernel methods: Δθ = −lr (G + ρI)⁻¹ ∇Loss, ∇Loss = Jᵀr/N, r = f(X) − Y (for ``ef`` the
    Fisher uses this same r); ``gd``: Δθ = −lr ∇Loss. ``ief``: Δθ = −lr G_matᵀ (G_mat G_matᵀ +
    ρI)⁻¹ s with rows g_n = J_nᵀ r_n and s_n = ||r_n||²; at ρ = 0 this is −lr G_mat⁺ s, with the
    SVD pseudo-inverse of G_mat (cut-off max(N, P) · eps · σ_max, or ``rcond`` · σ_max).
    ``opts``: ``k``, ``seed`` (sf), ``pattern``, ``kfac_readout``.
    """
    return _update(net, params, X, Y, method, lr, damping, rcond, None, opts)[0]


def _update(net, params, X, Y, method, lr, damping, rcond, X_test, opts):
    """(Δθ, J, J_test) — the work of :func:`parameter_update`, sharing the Jacobians."""
    _check_net(net)
    _check_method(method, METHODS)
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a finite number, got {lr!r}") from None
    if not np.isfinite(lr):
        raise ValueError(f"lr must be a finite number, got {lr!r}")
    damping = _validate.nonnegative("damping", damping)
    if "residual" in opts:
        raise ValueError("parameter_update computes the residual from Y; do not pass residual=")
    X = net.check_inputs(X)
    N, C = X.shape[0], net.out_dim
    r = residual_of(net, params, X, Y)
    if method == "ief":
        _no_extra(opts)
        if rcond is not None:
            rcond = _validate.nonnegative("rcond", rcond)
        if X_test is not None:
            net.check_inputs(X_test, "X_test")
        J, Jt = _jacobians(net, params, X, X_test)
        g = np.einsum("ncp,nc->np", J.reshape(N, C, -1), r)  # (N, P)
        s = np.sum(r**2, axis=1)
        if damping > 0:
            coef = scipy.linalg.solve(g @ g.T + damping * np.eye(N), s, assume_a="pos")
            return -lr * (g.T @ coef), J, Jt
        cut = max(g.shape) * _EPS if rcond is None else rcond
        return -lr * (np.linalg.pinv(g, rcond=cut) @ s), J, Jt
    _, pre, J, Jt = _build(net, params, X, method, damping, r, rcond, X_test, **_method_options(opts))
    grad = J.T @ r.reshape(-1) / N
    return -lr * pre.apply(grad), J, Jt


def function_step(
    net: Network,
    params,
    X,
    Y,
    method: str,
    lr: float,
    damping: float = 0.0,
    X_test=None,
    rcond: float | None = None,
    **opts,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Linearised function-space step (Δf(X) (N, C), Δf(X_test) (N_test, C) or ``None``):
    Δf(X_a) = J(X_a) Δθ with Δθ from :func:`parameter_update`."""
    dtheta, J, Jt = _update(net, params, X, Y, method, lr, damping, rcond, X_test, opts)
    C = net.out_dim
    return (J @ dtheta).reshape(-1, C), (None if Jt is None else (Jt @ dtheta).reshape(-1, C))


def fisher_efficiency_ratio(net: Network, params, X, Y, update) -> float:
    """γ(v)/γ(v_NG) (THEORY.md claim 7b), γ(v) = sqrt(vᵀFv)/(gᵀv), F = JᵀJ/N, g = ∇Loss.

    v_NG = −F⁺g is the exact (pseudo-inverse) natural-gradient update, so a descent update has
    ratio >= 1 (Cauchy–Schwarz) and exact NG has 1. Scale-invariant; returns ``inf`` if gᵀv = 0.
    """
    _check_net(net)
    X = net.check_inputs(X)
    N = X.shape[0]
    v = np.asarray(update, dtype=float).reshape(-1)
    if v.shape != (net.num_params,):
        raise ValueError(f"update must have {net.num_params} entries (flat θ), got {np.asarray(update).shape}")
    r = residual_of(net, params, X, Y).reshape(-1)
    J = jacobian(net, params, X)
    F = J.T @ J / N
    g = J.T @ r / N
    v_ng = -sym_pinv(F) @ g

    def gamma(u):
        return np.sqrt(max(u @ F @ u, 0.0)) / (g @ u)

    denom = g @ v
    if denom == 0:
        return float("inf")
    return float(gamma(v) / gamma(v_ng))
