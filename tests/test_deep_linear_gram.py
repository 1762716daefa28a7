"""Issue 6 item 2: one natural-gradient step of a deep linear network computed three ways.

1. closed form  — :mod:`ntk_ngd.deep_linear.closed_forms` (per-layer formulas on the effective matrices),
2. Gram form    — :func:`ntk_ngd.method_kernels` / :func:`ntk_ngd.layer_kernels` on an
                  ``ntk_ngd.mlp(..., activation="linear", bias=False)`` network (N·C-sized Grams),
3. dense        — ``ntk_ngd.dense`` (alias of :mod:`ntk_ngd.reference`), a P×P pseudo-inverse of the
                  explicit Fisher JᵀJ/N (J by ``jax.jacrev`` of the real network).

Parameterization. ``ntk_ngd.mlp`` is NTK-parameterized: layer l computes z = c_l·h W_l with
c_l = w_std/√fan_in_l and W_l (fan_in × fan_out) standard normal; θ are those standard-normal
entries. The deep-linear module uses the effective matrices W_l^eff = c_l W_lᵀ (fan_out × fan_in),
so an effective update Δ_l is the NT update Δθ_l = Δ_lᵀ/c_l, and the Jacobian w.r.t. θ_l is c_l
times the Jacobian w.r.t. W_l^eff: Θ_l^NT = c_l² Θ_l^eff.

What is invariant and what is not:
* Function-space steps −ηJΔθ of *any* natural gradient (any solution of FΔ = ∇Loss) are
  invariant under reparameterization; so are the block-diagonal updates (F_ll scales by c_l²,
  ∇_l by c_l, per layer). Those are compared across all three forms.
* The Moore–Penrose (minimum-norm) split across layers is NOT invariant under unequal per-layer
  scales: minimum ||Δθ|| = Σ_l ||Δ_l||²/c_l² is a different norm from Σ_l ||Δ_l||². Since
  f = (Π_l c_l)·θ_Lᵀ⋯θ_1ᵀ x, the NT-parameter Moore–Penrose update is the deep-linear closed form
  applied to the *unscaled* layers θ_lᵀ with inputs (Π_l c_l)·X (:func:`nt_moore_penrose`); it
  equals the effective-matrix one converted to θ only when every c_l is the same.

N < D. ``deep_linear`` requires Σ_x = XᵀX/N invertible (N ≥ D), but Θ_F = I needs N ≤ D. For
N < D we restrict the inputs to the row space of X (:func:`row_space_reduction`): with X = U s Vᵀ
(V: D×N), x_n = V Vᵀ x_n, so J depends on Δ_1 only through Δ_1 V; the minimum-norm (and the
block-diagonal) update is the reduced problem's (inputs XV, first layer W_1V) with
Δ_1 = Δ̃_1 Vᵀ, and the other layers unchanged.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import ntk_ngd
from ntk_ngd import deep_linear as dl
from ntk_ngd import dense

LR = 0.3
BLOCK_TOL = 1e-10
STEP_TOL = 1e-8

# (depth, in_dim D, hidden widths, out_dim C, N, w_std, seed)
CASES = [
    (1, 4, (), 2, 4, 1.0, 0),          # one layer, N = D
    (2, 5, (5,), 5, 5, 1.0, 1),        # square, N = D, equal fan-ins
    (2, 6, (7,), 3, 4, 1.5, 2),        # rectangular, N < D
    (3, 4, (6, 5), 2, 4, 0.8, 3),      # rectangular, N = D
    (3, 6, (6, 6), 6, 3, 1.2, 4),      # square layers, N < D, equal fan-ins
    (4, 5, (7, 4, 6), 3, 5, 1.0, 5),   # a width (4) below N (5): block-diagonal loses isotropy
    (4, 3, (4, 5, 4), 1, 2, 1.1, 6),   # scalar output, N < D
]
#: N > D (not in the brief's N ≤ D range): Θ_F is a projector of rank C·D < N·C, not I; the three
#: forms still agree.
WIDE_DATA = (2, 2, (3,), 2, 5, 1.0, 7)


def rel(a, b) -> float:
    a, b = np.ravel(np.asarray(a, dtype=float)), np.ravel(np.asarray(b, dtype=float))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- helpers (conversions)

def layer_scales(net) -> list[float]:
    """c_l = w_std/√fan_in_l."""
    return [net.w_std / np.sqrt(fan_in) for fan_in in net.fan_in]


def effective_weights(net, params) -> list[np.ndarray]:
    """W_l^eff = c_l W_lᵀ (fan_out × fan_in), the deep-linear module's layers."""
    return [c * np.asarray(w, dtype=float).T for c, (w, _) in zip(layer_scales(net), net.dense_params(params))]


def unscaled_weights(net, params) -> list[np.ndarray]:
    """θ_lᵀ: the layers of the same network with every c_l moved into one input factor."""
    return [np.asarray(w, dtype=float).T for w, _ in net.dense_params(params)]


def to_nt_flat(net, directions) -> np.ndarray:
    """Effective per-layer directions Δ_l → flat NT θ-vector (dense.flatten_params order): Δ_lᵀ/c_l."""
    return np.concatenate([(d.T / c).ravel() for c, d in zip(layer_scales(net), directions)])


def split_flat(net, theta) -> list[np.ndarray]:
    """Flat NT θ-vector → per-layer (fan_in × fan_out) blocks."""
    return [theta[s].reshape(shape) for s, shape in zip(dense.layer_slices(net), net.layer_shapes)]


def row_space_reduction(weights, X):
    """(weights with W_1 → W_1 V, X V, V) with V (D×rank X) an orthonormal basis of X's row space."""
    _, sing, vt = np.linalg.svd(X, full_matrices=False)
    V = vt[sing > 1e-12 * sing[0]].T
    return [weights[0] @ V] + list(weights[1:]), X @ V, V


def closed_form(direction, weights, X, Y) -> list[np.ndarray]:
    """Per-layer update ``direction`` (dl.natural_gradient or dl.block_diagonal_natural_gradient)
    at the data, through the row-space reduction when N < D (module docstring)."""
    if X.shape[0] >= X.shape[1]:
        grad = dl.end_to_end_gradient(dl.end_to_end_map(weights), X, Y)
        return direction(weights, grad, dl.input_covariance(X))
    reduced, Xr, V = row_space_reduction(weights, X)
    grad = dl.end_to_end_gradient(dl.end_to_end_map(reduced), Xr, Y)
    out = direction(reduced, grad, dl.input_covariance(Xr))
    return [out[0] @ V.T] + out[1:]


def nt_moore_penrose(net, params, X, Y) -> np.ndarray:
    """F_θ⁺∇_θLoss in NT parameters, flat: the closed form on layers θ_lᵀ with inputs (Π c_l)·X."""
    kappa = float(np.prod(layer_scales(net)))
    directions = closed_form(dl.natural_gradient, unscaled_weights(net, params), kappa * X, Y)
    return np.concatenate([d.T.ravel() for d in directions])


def function_step(weights, directions, X, lr=LR) -> np.ndarray:
    """−η X A(Δ)ᵀ, flattened n·C + c: the first-order change of f(X) under W_l ← W_l − ηΔ_l."""
    return -lr * (X @ dl.end_to_end_change(weights, directions).T).ravel()


def predicted_block_rank(case) -> int:
    """rank Θ_l = rank(X W_{<l}ᵀ)·rank(W_{>l}) for generic weights: min(N, D, widths below)·min(C, widths above)."""
    depth, in_dim, widths, out_dim, n, _, _ = case
    dims = [in_dim, *widths, out_dim]
    ranks = []
    for l in range(depth):
        below = min([n, *dims[: l + 1]])
        above = min(dims[l + 1:])
        ranks.append(below * above)
    return ranks


# ---------------------------------------------------------------- problem (computed once per case)

@functools.lru_cache(maxsize=None)
def computed(case) -> dict:
    """Network, data and everything the Gram and dense forms give at it (jit compiles are the
    cost here, so each case is built once and shared by the tests below)."""
    depth, in_dim, widths, out_dim, n, w_std, seed = case
    net = ntk_ngd.mlp(depth, list(widths), in_dim, out_dim, activation="linear", bias=False, w_std=w_std)
    params = net.init(seed)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, in_dim)) * np.geomspace(1.0, 0.05, in_dim)   # anisotropic inputs
    Y = rng.standard_normal((n, out_dim))
    layer = ntk_ngd.layer_kernels(net, X, params=params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # rank deficiency is tested explicitly
        natural = [m for m in ntk_ngd.deep_linear.METHODS if m != "gd"]  # the deep-linear closed forms' methods
        gram = {m: np.asarray(ntk_ngd.method_kernels(net, X, m, params=params, train_kernels=layer).train,
                              dtype=float) for m in natural}
        dense_updates = {m: dense.parameter_update(net, params, X, Y, m, 1.0) for m in natural}
    return {
        "net": net, "params": params, "X": X, "Y": Y,
        "weights": effective_weights(net, params),
        "ntk_blocks": np.asarray(layer.ntk, dtype=float),
        "gram": gram,
        "jacobian": dense.jacobian(net, params, X),
        "dense_update": dense_updates,                    # −F⁺∇Loss (lr = 1), flat NT θ
        "residual": (np.asarray(net.apply(params, X), dtype=float) - Y).ravel(),
    }


def dense_step(p, method) -> np.ndarray:
    """The dense reference's function step J Δθ with Δθ = −LR·G⁺∇Loss."""
    return LR * p["jacobian"] @ p["dense_update"][method]


# ---------------------------------------------------------------- tests

ALL = CASES + [WIDE_DATA]


@pytest.mark.parametrize("case", ALL)
def test_effective_matrices_reproduce_the_network(case):
    p = computed(case)
    f = p["residual"].reshape(p["Y"].shape) + p["Y"]
    assert rel(p["X"] @ dl.end_to_end_map(p["weights"]).T, f) <= 1e-13


@pytest.mark.parametrize("case", ALL)
def test_layer_ntk_blocks_gram_closed_form_dense(case):
    """(a) Θ_l from layer_kernels = c_l² × deep_linear.layer_ntk_blocks(W^eff) = J_lJ_lᵀ (dense)."""
    p = computed(case)
    net, gram = p["net"], p["ntk_blocks"]
    closed = dl.layer_ntk_blocks(p["weights"], p["X"])
    for l, (c, block) in enumerate(zip(layer_scales(net), closed)):
        scale = np.abs(block).max() * c ** 2
        assert np.abs(gram[l] - c ** 2 * block).max() <= BLOCK_TOL * scale, f"layer {l + 1}"
        part = p["jacobian"][:, dense.layer_slices(net)[l]]
        assert np.abs(part @ part.T - gram[l]).max() <= BLOCK_TOL * scale, f"layer {l + 1}"
    # the ranks predicted from the shapes alone (they decide isotropy below)
    ranks = [np.linalg.matrix_rank(g, tol=1e-9 * np.abs(g).max()) for g in gram]
    assert ranks == predicted_block_rank(case)


@pytest.mark.parametrize("case", ALL)
def test_exact_ngd_step_three_ways(case):
    """(b) −ηΘ_F r (Gram) = −η X A(Δ_closed)ᵀ (closed form) = JΔθ_dense (dense pinv), ≤ 1e-8."""
    p = computed(case)
    net, X, Y, weights, r = p["net"], p["X"], p["Y"], p["weights"], p["residual"]
    n, out_dim = X.shape[0], net.out_dim
    theta_f = p["gram"]["exact"]
    gram_step = -LR * theta_f @ r
    closed = closed_form(dl.natural_gradient, weights, X, Y)
    closed_step = function_step(weights, closed, X)
    reference = dense_step(p, "exact")

    assert rel(gram_step, reference) <= STEP_TOL
    assert rel(closed_step, reference) <= STEP_TOL
    assert rel(closed_step, gram_step) <= STEP_TOL
    # the closed-form update converted to NT parameters moves the real network the same way
    assert rel(-LR * p["jacobian"] @ to_nt_flat(net, closed), reference) <= STEP_TOL
    # ... also without linearising: f(θ − εΔθ) − f(θ) = −εJΔθ + O(ε²)
    eps = 1e-5
    moved = dense.unflatten_params(net, dense.flatten_params(net, p["params"]) - eps * to_nt_flat(net, closed))
    actual = (np.asarray(net.apply(moved, X), dtype=float) - Y).ravel() - r
    assert rel(actual, (eps / LR) * closed_step) <= 1e-3

    if n <= X.shape[1]:
        assert np.abs(theta_f - np.eye(n * out_dim)).max() <= 1e-10       # Θ_F = I
        assert rel(gram_step, -LR * r) <= 1e-10
    else:
        rank = X.shape[1] * out_dim                                         # rank J = C·D
        assert np.abs(theta_f @ theta_f - theta_f).max() <= 1e-10          # a projector ...
        assert abs(np.trace(theta_f) - rank) <= 1e-8                        # ... of rank C·D
        assert rel(gram_step, -LR * r) > 1e-2


@pytest.mark.parametrize("case", ALL)
def test_moore_penrose_split_depends_on_the_parameterization(case):
    """Per-layer updates: the NT-parameter F⁺∇ (dense) equals the closed form on the unscaled
    layers with inputs (Π c_l)X; it equals the effective-matrix closed form converted to θ only
    when all c_l are equal (then all fan-ins are equal). Same end-to-end change either way."""
    p = computed(case)
    net, X, Y = p["net"], p["X"], p["Y"]
    reference = p["dense_update"]["exact"]                                  # −F⁺∇
    assert rel(-nt_moore_penrose(net, p["params"], X, Y), reference) <= STEP_TOL
    converted = to_nt_flat(net, closed_form(dl.natural_gradient, p["weights"], X, Y))
    assert rel(p["jacobian"] @ converted, p["jacobian"] @ -reference) <= STEP_TOL
    if len(set(net.fan_in)) == 1:
        assert rel(-converted, reference) <= STEP_TOL
    else:
        assert rel(-converted, reference) > 1e-3
        assert np.linalg.norm(reference) < np.linalg.norm(converted)       # NT min-norm in θ


@pytest.mark.parametrize("case", ALL)
def test_block_diagonal_step_three_ways(case):
    """(c) block_diag: Gram Σ_l Θ_lΘ_l⁺ has α = Σ_l rank Θ_l / NC (= L when N ≤ D and every hidden
    width ≥ max(N, C)); its step equals the closed-form block-diagonal update's and the dense
    one's; per layer, block-diagonal updates are invariant under the NT scales c_l."""
    p = computed(case)
    net, X, Y, weights, r = p["net"], p["X"], p["Y"], p["weights"], p["residual"]
    n, out_dim, depth = X.shape[0], net.out_dim, net.depth
    theta_bd = p["gram"]["block_diag"]
    gram_step = -LR * theta_bd @ r
    closed = closed_form(dl.block_diagonal_natural_gradient, weights, X, Y)
    closed_step = function_step(weights, closed, X)
    reference = dense_step(p, "block_diag")
    assert rel(gram_step, reference) <= STEP_TOL
    assert rel(closed_step, reference) <= STEP_TOL
    assert rel(closed_step, gram_step) <= STEP_TOL
    assert rel(-to_nt_flat(net, closed), p["dense_update"]["block_diag"]) <= STEP_TOL

    alpha, deviation = dl.isotropy(theta_bd)
    assert abs(alpha - sum(predicted_block_rank(case)) / (n * out_dim)) <= 1e-10
    if n <= X.shape[1] and all(w >= max(n, out_dim) for w in net.hidden):
        assert abs(alpha - depth) <= 1e-10 and deviation <= 1e-10          # α = L, isotropic
        assert rel(gram_step, -LR * depth * r) <= 1e-10
        # the paper's per-layer form (block-diagonal / L) takes the exact-NG step −ηr
        assert rel(function_step(weights, [d / depth for d in closed], X), -LR * r) <= STEP_TOL
    else:
        assert deviation > 1e-2


def test_block_diagonal_breaks_below_n():
    """The breaking case: width 4 < N = 5 gives α = (2·15 + 2·12)/15 = 3.6, not L = 4, while
    exact NG keeps Θ_F = I; the Gram form warns about nothing here (every layer has ≥ N·C
    parameters), so only the rank of W_{<l}X decides."""
    case = CASES[5]
    p = computed(case)
    assert predicted_block_rank(case) == [15, 15, 12, 12]
    alpha, deviation = dl.isotropy(p["gram"]["block_diag"])
    assert abs(alpha - 3.6) <= 1e-10 and deviation > 0.1
    assert np.abs(p["gram"]["exact"] - np.eye(15)).max() <= 1e-10
