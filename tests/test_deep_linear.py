"""THEORY.md claim 9: exact natural gradient in deep linear networks (ntk_ngd.deep_linear).

Every closed form is checked against an independent computation: the dense Fisher built from a
complex-step Jacobian (it only evaluates the network), the least-squares map from ``np.linalg.lstsq``, ODE integration, or
eigenvalues of matrices built here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.integrate import solve_ivp
from scipy.linalg import sqrtm

import ntk_ngd  # noqa: F401  (float64)
from ntk_ngd import cli
from ntk_ngd import deep_linear as dl
from ntk_ngd.trajectory import DIVERGENCE_FACTOR, Trajectory

CONDS = (1.0, 1e3, 1e6)
FEW = settings(max_examples=40, deadline=None, derandomize=True)


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def flat(layers) -> np.ndarray:
    return np.concatenate([np.ravel(w) for w in layers])


def lstsq_error(weights, X, Y) -> np.ndarray:
    """E = W − W*, with W* from numpy's least-squares solver (independent of the module)."""
    w_star = np.linalg.lstsq(X, Y, rcond=None)[0].T
    return dl.end_to_end_map(weights) - w_star


def problem(in_dim, widths, out_dim, cond, seed, extra=3, noise=0.5, jitter=0.5):
    X, Y = dl.make_regression(in_dim, out_dim, in_dim + extra, cond, seed=seed, noise=noise)
    weights = dl.random_weights(in_dim, widths, out_dim, seed=seed + 1, jitter=jitter)
    grad = dl.end_to_end_gradient(dl.end_to_end_map(weights), X, Y)
    return X, Y, weights, grad, dl.input_covariance(X)


def excess_ratios(losses, loss_star):
    excess = losses - loss_star
    return excess[1:] / excess[:-1]


shapes = st.tuples(
    st.integers(1, 4),                                   # in_dim D
    st.lists(st.integers(1, 5), min_size=0, max_size=4),  # hidden widths (depth 1..5)
    st.integers(1, 4),                                   # out_dim C
    st.sampled_from(CONDS),
    st.integers(0, 10_000),                              # seed
)


# ---------------------------------------------------------------- closed form vs dense pinv

@FEW
@given(shapes)
def test_closed_form_equals_dense_moore_penrose(case):
    """Any depth/widths (bottlenecks included), whitened or ill-conditioned inputs."""
    in_dim, widths, out_dim, cond, seed = case
    X, Y, weights, grad, cov = problem(in_dim, widths, out_dim, cond, seed)
    dense = dl.dense_natural_gradient(weights, X, Y)
    closed = dl.natural_gradient(weights, grad, cov)
    assert rel(flat(closed), flat(dense)) <= 1e-8            # same per-layer split (min norm)
    dense_change = dl.end_to_end_change(weights, dense)
    assert rel(dl.end_to_end_change(weights, closed), dense_change) <= 1e-8
    # the block-diagonal closed form vs the diagonal blocks of the dense Fisher
    block_dense = dl.dense_block_diagonal_natural_gradient(weights, X, Y)
    assert rel(flat(dl.block_diagonal_natural_gradient(weights, grad, cov)), flat(block_dense)) <= 1e-8
    # F is singular (rank J ≤ C·D); W reachable ⟺ rank J = C·D; then the change of W is E
    rank = dl.dense_function_space_kernels(weights, X)["jacobian_rank"]
    assert rank <= out_dim * in_dim
    assert dl.end_to_end_reachable(weights, cov) == (rank == out_dim * in_dim)
    if all(w >= out_dim for w in widths) or all(w >= in_dim for w in widths):
        assert rank == out_dim * in_dim
        assert rel(dense_change, lstsq_error(weights, X, Y)) <= 1e-8


wide_shapes = st.tuples(
    st.integers(1, 4), st.lists(st.integers(0, 2), min_size=1, max_size=4),
    st.integers(1, 4), st.sampled_from(CONDS), st.integers(0, 10_000))


@FEW
@given(wide_shapes)
def test_per_layer_form_is_a_natural_gradient_but_not_moore_penrose(case):
    """Every width >= max(C, D): (1/L) W_{>i}⁺ (G S⁻¹)(W_{<i}S)⁺ solves F Δ = ∇Loss (same change
    of W as F⁺∇Loss) but splits it differently across layers and has a larger norm."""
    in_dim, extra_widths, out_dim, cond, seed = case
    widths = [max(in_dim, out_dim) + k for k in extra_widths]
    X, Y, weights, grad, cov = problem(in_dim, widths, out_dim, cond, seed)
    paper = dl.paper_natural_gradient(weights, grad, cov)
    dense = dl.dense_natural_gradient(weights, X, Y)
    assert rel(dl.end_to_end_change(weights, paper), dl.end_to_end_change(weights, dense)) <= 1e-8
    assert rel(dl.end_to_end_change(weights, paper), lstsq_error(weights, X, Y)) <= 1e-8
    assert rel(flat(paper), flat(dense)) > 1e-3               # different split across layers
    assert dl.parameter_norm(paper) > dl.parameter_norm(dense)  # MP is the minimum-norm one


@pytest.mark.parametrize("cond", [1.0, 1e4])
def test_per_layer_form_is_a_symmetric_reflexive_generalised_inverse(cond):
    """F⁻ = A♯A♯ᵀ (A♯ built column by column from the per-layer form) satisfies F F⁻ F = F and
    F⁻ F F⁻ = F⁻, gives F⁻∇Loss = the per-layer update, but F⁻F is not symmetric: F⁻ ≠ F⁺."""
    X, Y, weights, grad, cov = problem(2, [3, 4], 3, cond, seed=11)
    sqrt_cov = np.real(sqrtm(cov))
    basis = np.eye(3 * 2).reshape(6, 3, 2)            # y = G S⁻¹ runs over a basis of C×D
    sharp = np.stack([flat(dl.paper_natural_gradient(weights, e @ sqrt_cov, cov)) for e in basis]).T
    fisher = dl.dense_fisher(weights, X)
    g_inv = sharp @ sharp.T
    scale = np.abs(fisher).max()
    assert np.abs(fisher @ g_inv @ fisher - fisher).max() <= 1e-9 * scale
    assert np.abs(g_inv @ fisher @ g_inv - g_inv).max() <= 1e-9 * np.abs(g_inv).max()
    gradient = np.concatenate([g.ravel() for g in dl.layer_gradients(weights, grad)])
    assert rel(g_inv @ gradient, flat(dl.paper_natural_gradient(weights, grad, cov))) <= 1e-9
    projector = g_inv @ fisher
    assert np.abs(projector - projector.T).max() > 1e-2        # oblique: not Moore–Penrose
    assert rel(g_inv, np.linalg.pinv(fisher, rtol=1e-10, hermitian=True)) > 1e-2


def test_three_square_layers_fisher_rank_and_split():
    """THEORY.md claim 9's check: three 3×3 layers, Fisher rank 9 of 27, same W change, norms."""
    X, Y, weights, grad, cov = problem(3, [3, 3], 3, 1.0, seed=0, noise=0.5)
    assert dl.dense_function_space_kernels(weights, X)["jacobian_rank"] == 3 * 3
    assert sum(w.size for w in weights) == 27
    paper, dense = dl.paper_natural_gradient(weights, grad, cov), dl.dense_natural_gradient(weights, X, Y)
    assert rel(dl.end_to_end_change(weights, paper), dl.end_to_end_change(weights, dense)) <= 1e-12
    assert dl.parameter_norm(paper) > 1.2 * dl.parameter_norm(dense)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_per_layer_form_is_moore_penrose_when_balanced_orthogonal(depth):
    """Whitened inputs and W_i = s·O_i with one s: the per-layer form lies in range(Bᵀ), so it
    is the minimum-norm update; unequal scales break this (for depth > 1)."""
    rng = np.random.default_rng(depth)
    X, Y = dl.make_regression(3, 3, 9, 1.0, seed=depth, noise=0.5)
    orthogonal = [np.linalg.qr(rng.standard_normal((3, 3)))[0] for _ in range(depth)]
    cov = dl.input_covariance(X)
    assert np.allclose(cov, np.eye(3), atol=1e-12)

    def split_gap(scales):
        weights = [s * o for s, o in zip(scales, orthogonal)]
        grad = dl.end_to_end_gradient(dl.end_to_end_map(weights), X, Y)
        return rel(flat(dl.paper_natural_gradient(weights, grad, cov)),
                   flat(dl.dense_natural_gradient(weights, X, Y)))

    assert split_gap([1.3] * depth) <= 1e-10
    if depth > 1:
        assert split_gap(np.linspace(0.7, 1.5, depth)) > 1e-2


# ---------------------------------------------------------------- where block-diagonal/L is not exact

def _col_proj(a, u):
    """Orthogonal projection of the columns of u onto range(a), by least squares."""
    return a @ np.linalg.lstsq(a, u, rcond=None)[0]


def averaged_projections(weights, sqrt_cov, target):
    """(1/L) Σ_i Π_{>i} target Π_{<i}, projectors rebuilt by lstsq (onto col W_{>i}, row W_{<i}S)."""
    above, below = dl.layer_products(weights)
    return sum(_col_proj(a, _col_proj((b @ sqrt_cov).T, target.T).T)
               for a, b in zip(above, below)) / len(weights)


def test_block_diagonal_fails_between_in_and_out_dim():
    """D = 4, widths 3, C = 2: exact NG still reaches E (every width >= C), but block-diagonal/L
    moves ES by the average of per-layer projections, which misses the part of ES outside
    row(W_{<i}S) for i = 2, 3 (a 2-dim subspace gets only 1/L of the step)."""
    X, Y, weights, grad, cov = problem(4, [3, 3], 2, 1e2, seed=3, extra=4)
    sqrt_cov = np.real(sqrtm(cov))
    error = lstsq_error(weights, X, Y)
    exact = dl.dense_natural_gradient(weights, X, Y)
    assert rel(dl.end_to_end_change(weights, exact), error) <= 1e-8
    paper_change = dl.end_to_end_change(weights, dl.paper_natural_gradient(weights, grad, cov))
    assert rel(paper_change, error) > 1e-2
    assert rel(paper_change @ sqrt_cov, averaged_projections(weights, sqrt_cov, error @ sqrt_cov)) <= 1e-8
    # training: late per-step ratio of block-diagonal/L is (1 − η μ_min)², μ_min the smallest
    # eigenvalue of the averaged-projection operator (built here on a basis); NG keeps (1 − η)²
    lr, steps = 0.1, 80
    loss_star = dl.mse_loss(dl.end_to_end_map(weights) - error, X, Y)
    blk = dl.train(weights, X, Y, "block_diag", lr, steps)
    exact = dl.train(weights, X, Y, "exact", lr, steps)
    basis = np.eye(8).reshape(8, 2, 4)
    operator = np.stack([averaged_projections(blk.params, sqrt_cov, e).ravel() for e in basis]).T
    mu_min = np.linalg.eigvalsh(0.5 * (operator + operator.T))[0]
    assert abs(excess_ratios(blk.train_loss, loss_star)[-1] - (1 - lr * mu_min) ** 2) <= 1e-3
    assert abs(excess_ratios(exact.train_loss, loss_star)[-1] - (1 - lr) ** 2) <= 1e-3
    assert mu_min < 0.5
    assert blk.train_loss[-1] - loss_star > 100 * (exact.train_loss[-1] - loss_star)


def test_true_bottleneck_neither_reaches_the_error():
    """Width 1 < min(C, D) = 3: W stays rank ≤ 1; exact NG removes only the Σ_x-projection of E
    onto the tangent space, and block-diagonal/L is yet another (smaller) map."""
    X, Y, weights, grad, cov = problem(3, [1], 3, 10.0, seed=5)
    assert not dl.end_to_end_reachable(weights, cov)
    error = lstsq_error(weights, X, Y)
    exact_change = dl.end_to_end_change(weights, dl.dense_natural_gradient(weights, X, Y))
    paper_change = dl.end_to_end_change(weights, dl.paper_natural_gradient(weights, grad, cov))
    assert rel(exact_change, error) > 1e-2
    assert rel(paper_change, exact_change) > 1e-2
    with pytest.raises(ValueError, match="bottleneck"):
        dl.predicted_loss(weights, X, Y, 0.1, 3)


# ---------------------------------------------------------------- function-space kernels

def test_function_space_kernels_full_rank():
    """N ≤ D, every J_l of rank N·C: Θ_F = I and block-diagonal α = L, vs the dense Jacobian."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 5))
    weights = dl.random_weights(5, [6, 7], 2, seed=1)
    dense = dl.dense_function_space_kernels(weights, X)
    blocks = dl.layer_ntk_blocks(weights, X)
    for closed, reference in zip(blocks, dense["layer_blocks"]):
        assert rel(closed, reference) <= 1e-12
    size = X.shape[0] * 2
    assert np.abs(dense["exact"] - np.eye(size)).max() <= 1e-8
    assert np.abs(dl.exact_function_space_kernel(blocks) - dense["exact"]).max() <= 1e-8
    alpha, deviation = dl.isotropy(dense["block_diagonal"])
    assert abs(alpha - len(weights)) <= 1e-8 and deviation <= 1e-8
    assert np.abs(dl.block_diagonal_function_space_kernel(blocks) - dense["block_diagonal"]).max() <= 1e-8


def test_function_space_kernels_more_samples_than_inputs():
    """N > D: f is linear in x, rank J = C·D < N·C, so Θ_F is a projector, not I."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 3))
    weights = dl.random_weights(3, [4, 4], 2, seed=2)
    dense = dl.dense_function_space_kernels(weights, X)
    blocks = dl.layer_ntk_blocks(weights, X)
    exact = dl.exact_function_space_kernel(blocks)
    assert np.abs(exact - dense["exact"]).max() <= 1e-8
    assert np.abs(exact @ exact - exact).max() <= 1e-8
    alpha, deviation = dl.isotropy(exact)
    assert abs(alpha - dense["jacobian_rank"] / 12) <= 1e-8 and deviation > 0.5
    ranks = [np.linalg.matrix_rank(b) for b in dense["layer_blocks"]]
    assert abs(dl.isotropy(dl.block_diagonal_function_space_kernel(blocks))[0] - sum(ranks) / 12) <= 1e-8


# ---------------------------------------------------------------- dynamics

@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_exact_rate_is_one_minus_eta_squared_for_every_conditioning(depth):
    """Per-step excess-loss ratio = (1 − η)² + O(η²), with the same O(η²) size for cond 1..1e6."""
    coefficients = []
    for cond in CONDS:
        X, Y = dl.make_regression(3, 3, 12, cond, seed=depth, noise=0.0)
        weights = dl.random_weights(3, [3] * (depth - 1), 3, seed=depth + 1)
        loss_star = dl.mse_loss(np.linalg.lstsq(X, Y, rcond=None)[0].T, X, Y)
        deviation = {}
        for lr in (1e-2, 1e-3):
            ratios = excess_ratios(dl.train(weights, X, Y, "exact", lr, 8).train_loss, loss_star)
            deviation[lr] = np.max(np.abs(ratios - (1 - lr) ** 2))
        if depth == 1:   # a single layer is linear in θ: the first-order step is exact
            assert deviation[1e-2] <= 1e-8 and deviation[1e-3] <= 1e-8
            continue
        assert deviation[1e-3] <= 0.02 * deviation[1e-2]          # O(η²), not O(η)
        coefficients.append(deviation[1e-3] / 1e-3 ** 2)
    if coefficients:
        assert max(coefficients) <= 10 * min(coefficients)           # does not grow with cond


def test_gd_rate_degrades_with_condition_number():
    """GD's late per-step ratio is (1 − ηλ_min(𝒦))² with λ_min ∝ 1/cond; NG's stays (1 − η)²."""
    gd_gaps, ng_ratios = [], []
    for cond in (1e2, 1e4):
        X, Y = dl.make_regression(2, 1, 8, cond, seed=0)
        weights = dl.random_weights(2, [2, 2], 1, seed=1)
        cov = dl.input_covariance(X)
        lr_gd = 0.5 / np.linalg.eigvalsh(dl.end_to_end_operator(weights, cov))[-1]
        gd = dl.train(weights, X, Y, "gd", lr_gd, 400)
        late = gd.train_loss[-1] / gd.train_loss[-2]
        spectrum = np.linalg.eigvalsh(dl.end_to_end_operator(gd.params, cov))
        predicted_gap = 1 - (1 - lr_gd * spectrum[0]) ** 2
        assert abs((1 - late) - predicted_gap) <= 0.01 * predicted_gap
        gd_gaps.append(1 - late)
        ng_ratios.append(excess_ratios(dl.train(weights, X, Y, "exact", 0.1, 10).train_loss, 0.0))
    assert gd_gaps[1] < gd_gaps[0] / 30                        # 100× cond → ~100× slower GD
    for ratios in ng_ratios:
        assert np.max(np.abs(ratios - 0.9 ** 2)) <= 0.01           # (1 − η)² + O(η²), η = 0.1
    assert 1 - ng_ratios[1].max() > 1000 * gd_gaps[1]


@pytest.mark.parametrize("depth,cond,noise", [(2, 1.0, 0.1), (3, 1e3, 0.1), (4, 1e6, 0.0)])
def test_block_diagonal_training_follows_exact_square_recurrence(depth, cond, noise):
    """Square invertible layers: W' = (I − (η/L)E W⁻¹)^L W exactly, and Σ_x-free.

    (With noisy targets and cond 1e6, W* is far from W_0 and the finite-η step (1 − (η/L)EW⁻¹)^L
    can cross a singular W and blow up; the realizable case keeps η = 0.2 stable.)"""
    X, Y = dl.make_regression(3, 3, 10, cond, seed=depth, noise=noise)
    weights = dl.random_weights(3, [3] * (depth - 1), 3, seed=depth)
    run = dl.train(weights, X, Y, "block_diag", 0.2, 10)
    predicted_maps = dl.predicted_end_to_end_maps(weights, X, Y, 0.2, 10, "exact")
    predicted = dl.predicted_loss(weights, X, Y, 0.2, 10, "exact")
    # the run stops where the recurrence itself blows up (cond 1e3, noisy: 0.098 → 7,565 at step 9 for depth 3)
    grown = np.flatnonzero(predicted > DIVERGENCE_FACTOR * predicted[0])
    assert run.diverged_at == (int(grown[0]) if grown.size else None)
    t = len(predicted) if run.diverged_at is None else run.diverged_at
    assert rel(dl.end_to_end_maps(run, X)[:t], predicted_maps[:t]) <= 1e-9
    assert rel(run.train_loss[:t], predicted[:t]) <= 1e-9
    first_order = dl.predicted_loss(weights, X, Y, 0.2, 10, "first_order")
    assert rel(run.train_loss[:t], first_order[:t]) > 1e-6          # the O(η²) terms are real


def test_continuous_time_flow_is_exponential():
    """θ̇ = −F⁺∇Loss integrated by an ODE solver: W(τ) − W* = e^{−τ}(W_0 − W*) at τ = 1."""
    X, Y, weights, _, cov = problem(3, [4, 2, 5], 2, 1e3, seed=7)
    shapes = [w.shape for w in weights]
    bounds = np.cumsum([0] + [w.size for w in weights])

    def unflatten(theta):
        return [theta[bounds[k]:bounds[k + 1]].reshape(s) for k, s in enumerate(shapes)]

    def velocity(_, theta):
        layers = unflatten(theta)
        grad = dl.end_to_end_gradient(dl.end_to_end_map(layers), X, Y)
        return -flat(dl.natural_gradient(layers, grad, cov))

    sol = solve_ivp(velocity, (0.0, 1.0), flat(weights), rtol=1e-11, atol=1e-12)
    final = dl.end_to_end_map(unflatten(sol.y[:, -1]))
    w_star = np.linalg.lstsq(X, Y, rcond=None)[0].T
    expected = w_star + np.exp(-1.0) * (dl.end_to_end_map(weights) - w_star)
    assert rel(final, expected) <= 1e-7
    predicted = dl.predicted_loss(weights, X, Y, 0.1, 10, "continuous")[-1]
    assert abs(dl.mse_loss(final, X, Y) - predicted) <= 1e-7 * predicted


# ---------------------------------------------------------------- the package's Trajectory

@pytest.mark.parametrize("method", ["exact", "gd", "block_diag"])
def test_train_returns_the_package_trajectory(method):
    """One result type: predictions f_t = X W_tᵀ, losses ½||f_t − Y||²/N, the given lr, the final layers,
    and α/deviation of the method's step-0 kernel — ΘΘ⁺, Θ/N, (1/L)Σ_l Θ_lΘ_l⁺ — from the dense Jacobian."""
    X, Y, weights, _, _ = problem(3, [4, 2], 2, 1e2, seed=4)
    steps, n = 5, X.shape[0]
    run = dl.train(weights, X, Y, method, 0.1, steps)
    assert isinstance(run, Trajectory)
    assert (run.method, run.loss, run.lr, run.lr_rule, run.diverged_at) == (method, "mse", 0.1, "given", None)
    assert run.train_pred.shape == (steps + 1, *Y.shape) and run.test_pred is None and run.test_loss is None
    assert np.array_equal(run.times, np.arange(steps + 1))
    assert rel(run.train_loss, 0.5 * np.sum((run.train_pred - Y) ** 2, axis=(1, 2)) / n) <= 1e-12
    assert rel(run.train_pred[-1], X @ dl.end_to_end_map(run.params).T) <= 1e-12
    assert rel(dl.end_to_end_maps(run, X), np.stack([np.linalg.lstsq(X, f, rcond=None)[0].T
                                                     for f in run.train_pred])) <= 1e-10
    assert run.steps_run == steps and run.final_loss == run.train_loss[-1]
    dense = dl.dense_function_space_kernels(weights, X)
    kernel = {"exact": dense["exact"], "gd": sum(dense["layer_blocks"]) / n,
              "block_diag": dense["block_diagonal"] / len(weights)}[method]
    alpha, deviation = dl.isotropy(kernel)
    assert abs(run.alpha - alpha) <= 1e-8 * alpha and abs(run.deviation - deviation) <= 1e-8 * deviation


def test_divergence_stops_the_run():
    """GD at 10/λ_max(𝒦) blows up: the run stops at the first loss > DIVERGENCE_FACTOR × Loss_0 (the one
    rule of ntk_ngd.trajectory), records it, leaves NaN afterwards and keeps the last finite layers."""
    X, Y = dl.make_regression(3, 2, 6, 1e2, seed=2, noise=0.5)
    weights = dl.random_weights(3, [3], 2, seed=3, jitter=0.5)
    lr = 10 / np.linalg.eigvalsh(dl.end_to_end_operator(weights, dl.input_covariance(X)))[-1]
    run = dl.train(weights, X, Y, "gd", lr, 40)
    t = run.diverged_at
    assert run.diverged and 1 <= t < 40
    assert np.all(np.isfinite(run.train_loss[:t])) and np.all(np.isnan(run.train_loss[t:]))
    assert np.all(np.isnan(run.train_pred[t:]))
    assert run.train_loss[:t].max() <= DIVERGENCE_FACTOR * run.train_loss[0]
    assert run.steps_run == t - 1 and run.final_loss == run.train_loss[t - 1]
    assert dl.mse_loss(dl.end_to_end_map(run.params), X, Y) == run.train_loss[t - 1]
    # the next GD step from the kept layers is the one that crossed the threshold
    W = dl.end_to_end_map(run.params)
    grads = dl.layer_gradients(run.params, dl.end_to_end_gradient(W, X, Y))
    crossed = dl.mse_loss(dl.end_to_end_map([w - lr * g for w, g in zip(run.params, grads)]), X, Y)
    assert not crossed <= DIVERGENCE_FACTOR * run.train_loss[0]


# ---------------------------------------------------------------- bad input

def test_bad_input_raises_one_line_value_errors():
    X, Y, weights, grad, cov = problem(3, [3], 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="singular"):
        dl.natural_gradient(weights, grad, np.diag([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        dl.natural_gradient(weights, grad, np.diag([1.0, 1.0, -0.5]))
    with pytest.raises(ValueError, match="symmetric"):
        dl.natural_gradient(weights, grad, np.eye(3) + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="do not chain"):
        dl.natural_gradient([np.ones((3, 3)), np.ones((2, 4))], grad, cov)
    with pytest.raises(ValueError, match="NaN"):
        dl.train(weights, np.where(X > 0, np.nan, X), Y, "exact", 0.1, 2)
    with pytest.raises(ValueError, match="NaN"):
        dl.natural_gradient([weights[0] * np.nan, weights[1]], grad, cov)
    with pytest.raises(ValueError, match="singular"):
        dl.train(weights, X[:2], Y[:2], "exact", 0.1, 2)        # N < D
    with pytest.raises(ValueError, match="method"):
        dl.train(weights, X, Y, "adam", 0.1, 2)
    with pytest.raises(ValueError, match="method"):
        dl.train(weights, X, Y, "ngd", 0.1, 2)                  # renamed "exact" (one name everywhere)
    with pytest.raises(ValueError, match="square"):
        dl.predicted_loss(weights, X, Y, 0.1, 2, "exact")
    with pytest.raises(ValueError, match="P = "):
        dl.dense_natural_gradient([np.ones((150, 3)), np.eye(150), np.ones((2, 150))], X, Y)
    for message in [str(e) for e in _collect_errors(weights, grad, X, Y)]:
        assert "\n" not in message


def _collect_errors(weights, grad, X, Y):
    for call in (lambda: dl.natural_gradient(weights, grad, -np.eye(3)),
                 lambda: dl.train(weights, X, Y[:, :1], "exact", 0.1, 2),
                 lambda: dl.train(weights, X, Y, "exact", 0.0, 2)):
        with pytest.raises(ValueError) as info:
            call()
        yield info.value


# ---------------------------------------------------------------- CLI

def test_cli_json_agrees_with_prediction(capsys):
    lr, steps = 0.01, 6
    code = cli.main(["deep-linear", "--depth", "3", "--in-dim", "3", "--out-dim", "2",
                     "--n", "12", "--cond", "1e4", "--steps", str(steps), "--lr", str(lr), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["loss_exact"]) == steps + 1
    assert payload["max_rel_deviation"] <= 50 * steps * lr ** 2   # O(η²) per step
    # the printed prediction is the closed form Loss* + (1 − η)^{2t}(Loss_0 − Loss*)
    t = np.arange(steps + 1)
    excess0 = payload["loss_exact"][0] - payload["loss_star"]
    expected = payload["loss_star"] + (1 - lr) ** (2 * t) * excess0
    assert np.allclose(payload["loss_predicted"], expected, rtol=1e-10)


@pytest.mark.parametrize("argv", [
    ["--depth", "2", "--widths", "3,3"],
    ["--cond", "0.5"],
    ["--n", "2"],
    ["--lr", "1.5"],
    ["--widths", "a,b"],
])
def test_cli_bad_input_returns_2(argv, capsys):
    assert cli.main(["deep-linear", *argv]) == 2
    assert "error" in capsys.readouterr().err
