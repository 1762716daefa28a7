"""Gram-form function-space kernels of every method vs the dense parameter-space reference,
the cases where an approximation is exact, the isotropy claims (THEORY.md 1–7) and the cases
where they break."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ntk_ngd as nn
from ntk_ngd import dense
from ntk_ngd.diagnostics import isotropy, predict
from ntk_ngd.function_space import method_kernels
from conftest import rel_err, sphere_inputs as sphere

TOL = 1e-8


def registry_cases(seed: int, samples: int):
    """(name, options, needs residual) for every registered method: its example options, and for random
    methods ``samples`` model samples drawn from ``seed``."""
    for spec in nn.methods.registered():
        opts = dict(spec.example_options)
        if spec.random:
            opts.update(samples=samples, seed=seed)
        yield spec.name, opts, spec.needs_residual




def model_samples(seed, step, shape):
    """The sampled Fisher's Gaussian targets of step ``step`` as documented in methods/sf.py."""
    import jax

    return np.asarray(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), step), shape))


def gram_kernels(net, X, method, params, damping, residual=None, X_test=None, **opts):
    if "k" in opts:  # the number of sampled-Fisher samples
        opts = {"samples": opts.pop("k"), **opts}
    out = method_kernels(net, X, method, params=params, damping=damping, residual=residual, X_test=X_test, **opts)
    return np.asarray(out.train), None if out.test is None else np.asarray(out.test)


# ---------------------------------------------------------------------------------------------
# Gram form == dense reference
# ---------------------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(
    depth=st.integers(1, 4),
    width=st.integers(6, 12),
    n=st.integers(2, 5),
    out_dim=st.sampled_from([1, 2]),
    damping=st.sampled_from([1e-3, 1.0]),
    activation=st.sampled_from(["relu", "erf", "linear"]),
    bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_gram_form_equals_dense_reference_damped(depth, width, n, out_dim, damping, activation, bias, seed):
    """ρ > 0: every method's Θ_G(X, X) and Θ_G(X_test, X) agree with J(G+ρI)⁻¹Jᵀ/N."""
    net = nn.mlp(depth=depth, width=width, in_dim=3, out_dim=out_dim, activation=activation, bias=bias)
    params = net.init(seed)
    X, X_test = sphere(n, 3, seed), sphere(3, 3, seed + 1)
    residual = np.random.default_rng(seed).standard_normal((n, out_dim))
    for method, opts, needs_residual in registry_cases(seed, 3):
        res = residual if needs_residual else None
        ref_train, ref_test = dense.preconditioned_kernel(net, params, X, method, damping=damping, X_test=X_test,
                                                          residual=res, **dict(opts))
        got_train, got_test = gram_kernels(net, X, method, params, damping, res, X_test, **dict(opts))
        assert rel_err(got_train, ref_train) <= TOL, method
        assert rel_err(got_test, ref_test) <= TOL, method


@settings(max_examples=6, deadline=None)
@given(
    depth=st.integers(1, 4),
    n=st.integers(2, 5),
    out_dim=st.sampled_from([1, 2]),
    activation=st.sampled_from(["relu", "erf"]),
    seed=st.integers(0, 1000),
)
def test_gram_form_equals_dense_reference_undamped(depth, n, out_dim, activation, seed):
    """ρ = 0: pseudo-inverse (ρ → 0⁺) kernels agree with the dense pseudo-inverse reference on
    well-conditioned nets (widths ≥ 2·N·C, inputs of dimension > N)."""
    net = nn.mlp(depth=depth, width=16, in_dim=8, out_dim=out_dim, activation=activation)
    params = net.init(seed)
    X, X_test = sphere(n, 8, seed), sphere(3, 8, seed + 1)
    residual = np.random.default_rng(seed).standard_normal((n, out_dim)) + 0.5
    for method, opts, needs_residual in registry_cases(seed, 4):
        res = residual if needs_residual else None
        try:
            got_train, got_test = gram_kernels(net, X, method, params, 0.0, res, X_test, **dict(opts))
        except ValueError as err:  # weighted Fishers with rank-deficient per-sample weights (C > 1): infinite
            assert out_dim > 1 and "singular" in str(err), (method, err)
            continue
        ref_train, ref_test = dense.preconditioned_kernel(net, params, X, method, damping=0.0, X_test=X_test,
                                                          residual=res, **dict(opts))
        # The dense pinv of G = JᵀJ/N resolves J only to cond ~ 1e7 (dense.py docstring); the Gram
        # form inverts N-sized Grams. 1e-6 bounds the dense side's error, not ours.
        assert rel_err(got_train, ref_train) <= 1e-6, method
        assert rel_err(got_test, ref_test) <= 1e-6, method


def test_ief_function_step_equals_dense_update():
    """iEF (an update, not a Fisher): −η Θ_iEF(x', X) r from the Gram form == J(x')Δθ_iEF."""
    net = nn.mlp(depth=3, width=10, in_dim=4, out_dim=2)
    params = net.init(3)
    X, Y, X_test = sphere(5, 4, 0), np.random.default_rng(1).standard_normal((5, 2)), sphere(3, 4, 2)
    r = np.asarray(net.apply(params, X)) - Y
    for damping in (0.0, 1e-3, 1.0):
        ref_train, ref_test = dense.function_step(net, params, X, Y, "ief", lr=0.7, damping=damping, X_test=X_test)
        K, K_test = gram_kernels(net, X, "ief", params, damping, r, X_test)
        assert rel_err(-0.7 * K @ r.reshape(-1), np.ravel(ref_train)) <= TOL
        assert rel_err(-0.7 * K_test @ r.reshape(-1), np.ravel(ref_test)) <= TOL


# ---------------------------------------------------------------------------------------------
# cases where an approximation is exact (curvlinops style)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params_seed", [None, 0])
def test_single_layer_block_diag_and_two_layer_tridiag_equal_exact(params_seed):
    X, X_test = sphere(6, 9, 0), sphere(2, 9, 1)
    for depth, method in ((1, "block_diag"), (1, "block_tridiag"), (2, "block_tridiag")):
        net = nn.mlp(depth=depth, width=32, in_dim=9)
        params = None if params_seed is None else net.init(params_seed)
        for damping in (0.0, 0.1):
            exact = gram_kernels(net, X, "exact", params, damping, X_test=X_test)
            approx = gram_kernels(net, X, method, params, damping, X_test=X_test)
            assert rel_err(approx[0], exact[0]) <= TOL and rel_err(approx[1], exact[1]) <= TOL


def test_banded_pattern_of_full_bandwidth_equals_exact():
    net = nn.mlp(depth=4, width=24, in_dim=9)
    params, X = net.init(1), sphere(6, 9, 0)
    exact = gram_kernels(net, X, "exact", params, 1e-2)[0]
    banded = gram_kernels(net, X, "pattern", params, 1e-2, bandwidth=3)[0]
    assert rel_err(banded, exact) <= TOL


def test_kfac_layer_block_is_exact_for_one_sample():
    """N = 1, C = 1: F_l = h̃h̃ᵀ ⊗ δδᵀ = A_l ⊗ B_l, so K-FAC equals block-diagonal NGD (ρ = 0)."""
    net = nn.mlp(depth=3, width=8, in_dim=4)
    params, X, X_test = net.init(2), sphere(1, 4, 0), sphere(3, 4, 1)
    kfac = gram_kernels(net, X, "kfac", params, 0.0, X_test=X_test)
    block = gram_kernels(net, X, "block_diag", params, 0.0, X_test=X_test)
    assert rel_err(kfac[0], block[0]) <= TOL and rel_err(kfac[1], block[1]) <= TOL


def test_unit_wise_with_one_unit_per_layer_equals_block_diag():
    net = nn.mlp(depth=3, width=1, in_dim=4, activation="erf")
    params, X, X_test = net.init(0), sphere(1, 4, 0), sphere(2, 4, 1)
    for damping in (0.0, 0.3):
        uw = gram_kernels(net, X, "unit_wise", params, damping, X_test=X_test)
        bd = gram_kernels(net, X, "block_diag", params, damping, X_test=X_test)
        assert rel_err(uw[0], bd[0]) <= TOL and rel_err(uw[1], bd[1]) <= TOL


# ---------------------------------------------------------------------------------------------
# isotropy claims, computed (alphas derived on paper, never taken from the code under test)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", range(1, 10))
def test_layerwise_alphas_at_infinite_width(depth):
    net = nn.mlp(depth=depth, width=64, in_dim=12)
    X = sphere(8, 12, depth)
    for method, alpha in (("exact", 1), ("block_diag", depth), ("block_tridiag", math.ceil(depth / 3))):
        iso = isotropy(gram_kernels(net, X, method, None, 0.0)[0])
        assert abs(iso.alpha - alpha) <= TOL * alpha and iso.deviation <= TOL, (method, iso)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 8])
def test_layerwise_alphas_at_finite_width(depth):
    """Every J_l has rank N (widths ≥ N): the same alphas at finite width, L ≡ 2 (mod 3) included."""
    net = nn.mlp(depth=depth, width=48, in_dim=12)
    X = sphere(8, 12, depth)
    params = net.init(depth)
    for method, alpha in (("exact", 1), ("block_diag", depth), ("block_tridiag", math.ceil(depth / 3))):
        iso = isotropy(gram_kernels(net, X, method, params, 0.0)[0])
        assert abs(iso.alpha - alpha) <= TOL * alpha and iso.deviation <= TOL, (method, iso)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("width", [None, 64])
def test_kfac_alpha_both_conventions(depth, width):
    """D+1 ≥ N, hidden widths ≥ N: α = N(L−1)+1 (one learning rate) and N·L (paper code)."""
    n = 10
    net = nn.mlp(depth=depth, width=width or 64, in_dim=16)
    X = sphere(n, 16, 5)
    params = None if width is None else net.init(1)
    for convention, alpha in (("common", n * (depth - 1) + 1), ("paper", n * depth)):
        iso = isotropy(gram_kernels(net, X, "kfac", params, 0.0, kfac_readout=convention)[0])
        assert abs(iso.alpha - alpha) <= TOL * alpha and iso.deviation <= TOL, (convention, iso)


def test_multi_output_isotropy_at_finite_width():
    """C = 2: the NC×NC kernels are isotropic too (hidden widths ≥ N·C)."""
    n, depth = 6, 3
    net = nn.mlp(depth=depth, width=40, in_dim=10, out_dim=2)
    X, params = sphere(n, 10, 0), net.init(0)
    for method, alpha in (("exact", 1), ("block_diag", 3), ("block_tridiag", 1), ("kfac", n * (depth - 1) + 1)):
        K = gram_kernels(net, X, method, params, 0.0)[0]
        assert K.shape == (2 * n, 2 * n)
        iso = isotropy(K)
        assert abs(iso.alpha - alpha) <= TOL * alpha and iso.deviation <= TOL, (method, iso)


def test_damped_exact_kernel_matches_spectral_formula():
    """ρ > 0: Θ_F = Θ(Θ + Nρ)⁻¹ has eigenvalues λ/(λ + Nρ) — computed from NT's NTK directly."""
    net = nn.mlp(depth=3, width=8, in_dim=6)
    X = sphere(7, 6, 0)
    theta = np.asarray(net.kernel_fn(X, None, "ntk"))
    lam = np.linalg.eigvalsh(theta)
    K = gram_kernels(net, X, "exact", None, 0.05)[0]
    assert np.allclose(np.sort(np.linalg.eigvalsh(K)), np.sort(lam / (lam + 7 * 0.05)), atol=1e-12)


def test_exact_test_kernel_is_ntk_regression_weights():
    net = nn.mlp(depth=3, width=8, in_dim=6)
    X, X_test = sphere(7, 6, 0), sphere(4, 6, 1)
    theta = np.asarray(net.kernel_fn(X, None, "ntk"))
    theta_test = np.asarray(net.kernel_fn(X_test, X, "ntk"))
    _, K_test = gram_kernels(net, X, "exact", None, 0.0, X_test=X_test)
    assert rel_err(K_test, np.linalg.solve(theta, theta_test.T).T) <= TOL


# ---------------------------------------------------------------------------------------------
# where the theory breaks
# ---------------------------------------------------------------------------------------------
def test_block_diag_breaks_when_readout_has_fewer_parameters_than_n():
    """Readout with M+1 < N parameters (erf: no dead units): its block is a rank-(M+1) projector P, so
    Θ = (L−1)·I + P: α = L−1 + (M+1)/N and deviation sqrt((M+1)(1−(M+1)/N)/N)/α."""
    n, m, depth = 12, 5, 3
    net = nn.mlp(depth=depth, width=[40, m], in_dim=16, activation="erf")  # ReLU can kill units
    X, params = sphere(n, 16, 0), net.init(0)
    with pytest.warns(RuntimeWarning, match="layer 3 has 6 parameters"):
        K = gram_kernels(net, X, "block_diag", params, 0.0)[0]
    iso = isotropy(K)
    rank = m + 1
    alpha = depth - 1 + rank / n
    deviation = math.sqrt(rank * (1 - rank / n) / n) / alpha
    assert abs(iso.alpha - alpha) <= 1e-10 and abs(iso.deviation - deviation) <= 1e-10
    assert not predict(net, X, "block_diag", params=params).isotropic


@pytest.mark.parametrize("seed", range(3))
def test_kfac_first_layer_leverage_scores_and_forster_repair(seed):
    """D+1 < N: the first layer contributes N·diag(leverage scores of X̃ = [σ_w X/√D, σ_b]), so
    the kernel is diagonal with diag = N(L−2) + 1 + N·lev, not isotropic; the Forster transform
    of [X, 1] makes every leverage score (D+1)/N and the kernel isotropic again, with the same
    α = N(L−2) + (D+1) + 1 (the first layer now contributes (D+1)·I)."""
    n, d, depth = 20, 3, 3
    X = np.random.default_rng(seed).standard_normal((n, d))
    net = nn.mlp(depth=depth, width=64, in_dim=d)
    X_tilde = np.concatenate([net.w_std * X / math.sqrt(d), np.full((n, 1), net.b_std)], axis=1)
    Q, _ = np.linalg.qr(X_tilde)  # leverage scores from a QR, independent of the package
    leverage = np.sum(Q**2, axis=1)
    for params in (None, net.init(seed)):
        K = gram_kernels(net, X, "kfac", params, 0.0)[0]
        iso = isotropy(K)
        assert iso.off_diagonal <= 1e-12
        assert rel_err(np.diag(K), n * (depth - 2) + 1 + n * leverage) <= 1e-10
        assert iso.deviation > 1e-2
        assert abs(iso.alpha - (n * (depth - 2) + (d + 1) + 1)) <= 1e-9
        assert "first-layer input Gram has rank 4" in predict(net, X, "kfac", params=params).summary()
    U = nn.forster_transform(X, append_one=True)
    np.testing.assert_allclose(nn.leverage_scores(U), (d + 1) / n, atol=1e-12)
    net_no_bias = nn.mlp(depth=depth, width=64, in_dim=d + 1, bias=False)
    for params in (None, net_no_bias.init(seed)):
        iso = isotropy(gram_kernels(net_no_bias, U, "kfac", params, 0.0)[0])
        assert iso.deviation <= TOL and abs(iso.alpha - (n * (depth - 2) + (d + 1) + 1)) <= TOL * iso.alpha


def test_unit_wise_deviation_shrinks_like_inverse_sqrt_width():
    """ReLU unit-wise: Θ = diag(active counts) + I; deviation ~ M^{-1/2}. Fit over M = 64..4096."""
    widths = np.array([64, 256, 1024, 4096])
    X = sphere(12, 16, 0)
    devs = []
    for m in widths:
        net = nn.mlp(depth=2, width=int(m), in_dim=16)
        devs.append(np.mean([isotropy(gram_kernels(net, X, "unit_wise", net.init(s), 0.0)[0]).deviation
                             for s in range(3)]))
    slope = np.polyfit(np.log(widths), np.log(devs), 1)[0]
    assert abs(slope + 0.5) <= 0.1, (slope, devs)


def test_unit_wise_matches_active_count_prediction_and_erf_is_isotropic():
    net = nn.mlp(depth=3, width=32, in_dim=16)
    X, params = sphere(10, 16, 1), net.init(0)
    K = gram_kernels(net, X, "unit_wise", params, 0.0)[0]
    lk = nn.layer_kernels(net, X, params=params)
    counts = sum(np.sum(np.asarray(d[:, 0, :]) != 0, axis=1) for d in lk.deltas[:-1])
    assert rel_err(K, np.diag(counts + 1.0)) <= 1e-10
    net_erf = nn.mlp(depth=3, width=32, in_dim=16, activation="erf")
    iso = isotropy(gram_kernels(net_erf, X, "unit_wise", net_erf.init(0), 0.0)[0])
    assert iso.deviation <= TOL and abs(iso.alpha - (2 * 32 + 1)) <= TOL * iso.alpha


# ---------------------------------------------------------------------------------------------
# residual-dependent methods
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params_seed", [None, 0])
def test_ef_step_is_inverse_residual_and_ief_step_is_residual(params_seed):
    net = nn.mlp(depth=3, width=32, in_dim=12)
    X = sphere(8, 12, 0)
    params = None if params_seed is None else net.init(params_seed)
    r = np.random.default_rng(3).standard_normal((8, 1))
    lr = 0.3
    K_ef = gram_kernels(net, X, "ef", params, 0.0, residual=r)[0]
    np.testing.assert_allclose(-lr * K_ef @ r.ravel(), -lr / r.ravel(), rtol=1e-8)
    K_ief = gram_kernels(net, X, "ief", params, 0.0, residual=r)[0]
    np.testing.assert_allclose(-lr * K_ief @ r.ravel(), -lr * r.ravel(), rtol=1e-8)


def test_sampled_fisher_approaches_exact_as_samples_grow():
    """Θ_SF = Q⁻¹ with Q = diag(mean_s ε²) (C = 1): ||Θ_SF − I|| falls like k^{-1/2}."""
    net = nn.mlp(depth=2, width=32, in_dim=12)
    X = sphere(8, 12, 0)
    ks = np.array([16, 256, 4096])
    errs = []
    for k in ks:
        K = gram_kernels(net, X, "sf", None, 0.0, k=int(k), seed=0)[0]
        eps = model_samples(seed=0, step=0, shape=(int(k), 8, 1))
        np.testing.assert_allclose(np.diag(K), 1.0 / np.mean(eps[:, :, 0] ** 2, axis=0), rtol=1e-8)
        errs.append(np.linalg.norm(K - np.eye(8)) / np.sqrt(8))
    slope = np.polyfit(np.log(ks), np.log(errs), 1)[0]
    assert errs[-1] < 0.1 and -0.8 <= slope <= -0.2, (errs, slope)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_gives_one_line_errors():
    net = nn.mlp(depth=2, width=8, in_dim=3)
    X = sphere(4, 3, 0)
    with pytest.raises(ValueError, match="unknown method 'natural'; choose one of: gd, exact"):
        nn.preconditioned_kernel(net, X, "natural")
    with pytest.raises(ValueError, match="damping must be a finite number >= 0"):
        nn.preconditioned_kernel(net, X, "exact", damping=-1.0)
    with pytest.raises(ValueError, match="needs residual="):
        nn.preconditioned_kernel(net, X, "ef")
    with pytest.raises(ValueError, match="residual is exactly zero at samples \\[1\\]"):
        nn.preconditioned_kernel(net, X, "ef", residual=np.array([[1.0], [0.0], [2.0], [3.0]]))
    with pytest.raises(ValueError, match="residual contains NaN"):
        nn.preconditioned_kernel(net, X, "ief", residual=np.array([[1.0], [np.nan], [2.0], [3.0]]))
    with pytest.raises(ValueError, match="takes no option"):
        nn.preconditioned_kernel(net, X, "exact", kfac_readout="paper")
    with pytest.raises(ValueError, match="unknown kfac_readout"):
        nn.preconditioned_kernel(net, X, "kfac", kfac_readout="mine")
    with pytest.raises(ValueError, match="pattern must be a 2x2 matrix"):
        nn.preconditioned_kernel(net, X, "pattern", pattern=np.ones((3, 3)))
    with pytest.raises(ValueError, match="X has 5 columns but the network expects 3"):
        nn.preconditioned_kernel(net, np.ones((4, 5)), "exact")
    # EF with a zero residual is finite with damping > 0 (documented), never a silent inf
    K = nn.preconditioned_kernel(net, X, "ef", damping=1e-3, residual=np.array([[1.0], [0.0], [2.0], [3.0]]))
    assert np.all(np.isfinite(np.asarray(K)))


def test_rank_deficient_layer_warns_with_layer_name():
    net = nn.mlp(depth=2, width=3, in_dim=3)
    X = sphere(6, 3, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nn.preconditioned_kernel(net, X, "block_diag", params=net.init(0))
    messages = [str(w.message) for w in caught]
    assert any("layer 2 has 4 parameters < N*C = 6" in m for m in messages), messages


@pytest.mark.parametrize("depth", [5, 8])
def test_tridiag_test_kernel_when_pattern_is_singular(depth):
    """L ≡ 2 (mod 3): S is singular but 1 ∈ range(S). Training kernel: ceil(L/3)·I. Test kernel:
    equals the dense reference (ρ → 0⁺ limit), and is NOT Σ_ab [S⁺]_ab Θ_a(x', X)Θ_a⁻¹ (the
    naive formula of THEORY.md claim 2, which holds only for invertible S)."""
    net = nn.mlp(depth=depth, width=6, in_dim=5, activation="erf")
    params, X, X_test = net.init(0), sphere(3, 5, 0), sphere(2, 5, 1)
    K, K_test = gram_kernels(net, X, "block_tridiag", params, 0.0, X_test=X_test)
    ref, ref_test = dense.preconditioned_kernel(net, params, X, "block_tridiag", X_test=X_test)
    iso = isotropy(K)
    assert abs(iso.alpha - math.ceil(depth / 3)) <= 1e-8 and iso.deviation <= 1e-8
    assert rel_err(K_test, ref_test) <= 1e-6
    S_pinv = np.linalg.pinv(nn.methods.tridiagonal_pattern(depth))
    lk, lk_test = nn.layer_kernels(net, X, params=params), nn.layer_kernels(net, X_test, X, params=params)
    naive = sum(S_pinv[a, b] * np.asarray(lk_test.ntk[a]) @ np.linalg.inv(np.asarray(lk.ntk[a]))
                for a in range(depth) for b in range(depth))
    assert rel_err(naive, ref_test) > 1e-3
