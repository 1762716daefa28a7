"""KPSVD, EKFAC and the diagonal Fisher (THEORY.md "Kronecker-basis approximations: KPSVD, EKFAC,
diagonal Fisher"): Gram form vs the explicit P×P reference, KPSVD's fit vs a brute-force Kronecker
fit, EKFAC's eigenbasis scales vs the dense Fisher, exact cases, isotropy predictions (including where
they break) and bad input."""
from __future__ import annotations


import numpy as np
import pytest
import scipy.optimize

import ntk_ngd as nn
from ntk_ngd import dense
from ntk_ngd.diagnostics import isotropy, kron_fit_errors, predict
from ntk_ngd.function_space import method_kernels
from ntk_ngd.kernels import LayerKernels, layer_kernels
from ntk_ngd.methods.ekfac import eigen_coordinates
from conftest import rel_err, sphere_inputs as sphere

CASES = (("kpsvd", {"rank": 1}), ("kpsvd", {"rank": 2}), ("ekfac", {}), ("diag", {}))




def diag_kernels(net, X, params, damping=0.0, X_test=None):
    return method_kernels(net, X, "diag", params=params, damping=damping, X_test=X_test)


def gram(net, X, params, method, opts, damping, X_test=None):
    out = method_kernels(net, X, method, params=params, damping=damping, X_test=X_test, **opts)
    return np.asarray(out.train), None if out.test is None else np.asarray(out.test)


# ---------------------------------------------------------------------------------------------
# Gram form == explicit parameter-space reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, out_dim, activation, bias, seed", [
    (3, 2, "relu", True, 2), pytest.param(2, 1, "erf", False, 1, marks=pytest.mark.slow),
    pytest.param(3, 1, "erf", True, 3, marks=pytest.mark.slow)])
def test_gram_form_equals_dense_damped(depth, out_dim, activation, bias, seed):
    """ρ ∈ {1e-3, 1}: train and test kernels of every fit agree with J(G + ρI)⁻¹Jᵀ/N to 1e-8."""
    net = nn.mlp(depth=depth, width=7, in_dim=3, out_dim=out_dim, activation=activation, bias=bias)
    params = net.init(seed)
    X, X_test = sphere(5, 3, seed), sphere(3, 3, seed + 10)
    for method, opts in CASES:
        for damping in (1e-3, 1.0):
            ref = dense.preconditioned_kernel(net, params, X, method, damping=damping, X_test=X_test, **opts)
            got = gram(net, X, params, method, opts, damping, X_test)
            assert rel_err(got[0], ref[0]) <= 1e-8, (method, opts, damping)
            assert rel_err(got[1], ref[1]) <= 1e-8, (method, opts, damping)


@pytest.mark.parametrize("depth, out_dim, seed", [(2, 1, 0), pytest.param(3, 2, 1, marks=pytest.mark.slow)])
def test_gram_form_equals_dense_undamped(depth, out_dim, seed):
    """ρ = 0: the Gram form (pseudo-inverse of ≤ N·C-sized operators) against the dense P×P
    pseudo-inverse on well-conditioned nets. The dense side pseudo-inverts e.g. σA⊗B, whose
    condition number is cond(A)·cond(B) (squared Jacobian conditioning on each factor): it resolves
    the kernels to ~1e-7 (measured 1e-10–2e-6 over these nets), so the bound is 1e-5; the Gram side
    is also checked against its own ρ → 0⁺ limit (ρ = 1e-13; the gap is O(ρ/min s)) to 1e-6."""
    net = nn.mlp(depth=depth, width=16, in_dim=8, out_dim=out_dim)
    params = net.init(seed)
    X, X_test = sphere(4, 8, seed), sphere(3, 8, seed + 10)
    for method, opts in CASES:
        ref = dense.preconditioned_kernel(net, params, X, method, damping=0.0, X_test=X_test, **opts)
        got = gram(net, X, params, method, opts, 0.0, X_test)
        limit = gram(net, X, params, method, opts, 1e-13, X_test)
        assert rel_err(got[0], ref[0]) <= 1e-5 and rel_err(got[1], ref[1]) <= 1e-5, (method, opts)
        assert rel_err(got[0], limit[0]) <= 1e-6 and rel_err(got[1], limit[1]) <= 1e-6, (method, opts)


def test_infinite_width_kernels_match_very_wide_finite_average():
    """params=None: the Gram form on NT's kernels is the width limit of the finite-width kernels
    (kpsvd, ekfac are continuous functions of the Grams with simple spectra; erf, N = 4)."""
    X = sphere(4, 6, 0)
    for method, opts in CASES[:3]:
        net = nn.mlp(depth=2, width=4096, in_dim=6, activation="erf")
        inf = gram(net, X, None, method, opts, 1e-2)[0]
        fin = np.mean([gram(net, X, net.init(s), method, opts, 1e-2)[0] for s in range(3)], axis=0)
        assert rel_err(fin, inf) <= 0.05, method  # O(M^-1/2) ≈ 0.016 per draw


# ---------------------------------------------------------------------------------------------
# KPSVD's fit: brute force, Eckart–Young, K-FAC
# ---------------------------------------------------------------------------------------------
def brute_force_kronecker_fit(F, d, m, starts=8, seed=0):
    """min_{A,B} ||F − A⊗B||_F by L-BFGS from many random starts (no SVD involved)."""
    rng = np.random.default_rng(seed)

    def loss(x):
        A, B = x[: d * d].reshape(d, d), x[d * d :].reshape(m, m)
        R = F - np.kron(A, B)
        gA = -np.einsum("iajb,ab->ij", R.reshape(d, m, d, m), B)
        gB = -np.einsum("iajb,ij->ab", R.reshape(d, m, d, m), A)
        return 0.5 * np.sum(R**2), np.concatenate([gA.ravel(), gB.ravel()])

    best = np.inf
    for _ in range(starts):
        res = scipy.optimize.minimize(loss, rng.standard_normal(d * d + m * m), jac=True, method="L-BFGS-B",
                                      options={"gtol": 1e-14, "ftol": 1e-16, "maxiter": 5000})
        best = min(best, np.sqrt(2 * res.fun))
    return best


def random_fisher_block(d, m, n, c, rng):
    """(1/N) Σ_{n,c} (h hᵀ) ⊗ (δ δᵀ): the structure of every layer block."""
    h, delta = rng.standard_normal((n, d)), rng.standard_normal((n, c, m))
    J = np.einsum("ni,ncj->ncij", h, delta).reshape(n * c, d * m)
    kfac = np.kron(h.T @ h / n, delta.reshape(-1, m).T @ delta.reshape(-1, m) / n)
    return J.T @ J / n, kfac


def test_kpsvd_rank1_matches_brute_force_and_beats_kfac():
    """2-in/2-out blocks: the SVD fit's error ≤ brute-force optimum + 1e-10 (and ≥ it − 1e-10: the
    optimum is attained), and ≤ K-FAC's A⊗B on every random block."""
    rng = np.random.default_rng(0)
    for trial in range(5):
        F, kfac = random_fisher_block(2, 2, 3 + trial % 3, 1 + trial % 2, rng)
        (sig, A, B), *_ = dense.kpsvd_terms(F, 2, 2, 1)
        err = np.linalg.norm(F - sig * np.kron(A, B))
        brute = brute_force_kronecker_fit(F, 2, 2, seed=trial)
        assert err <= brute + 1e-10 and brute <= err + 1e-10, (trial, err, brute)
        assert err <= np.linalg.norm(F - kfac) + 1e-12


def test_network_blocks_gram_errors_equal_dense_and_are_ordered():
    """Relative Frobenius errors from Grams only (diagnostics.kron_fit_errors) equal the explicit
    fits' (dense.kron_fit), and KPSVD1 ≤ K-FAC, rank k+1 ≤ rank k, EKFAC ≤ K-FAC hold on real blocks
    (2-in/2-out first layer included: in_dim 1 + bias, width 2)."""
    X = sphere(6, 4, 3)
    for net in (nn.mlp(depth=3, width=6, in_dim=4, out_dim=2), nn.mlp(depth=2, width=2, in_dim=1)):
        Xn = X[:, : net.layer_shapes[0][0]]
        params = net.init(1)
        lk = layer_kernels(net, Xn, params=params)
        errors = kron_fit_errors(lk, Xn.shape[0])
        blocks = dense.layer_fisher_blocks(net, params, Xn)
        for e, F, (fi, fo), (A, B) in zip(errors, blocks, net.layer_shapes, dense.kfac_factors(net, params, Xn)):
            d = fi + 1
            ref = {"kfac": np.kron(A, B), "ekfac": dense.kron_fit("ekfac", F, d, fo, factors=(A, B)),
                   "diag": dense.kron_fit("diag", F, d, fo),
                   **{f"kpsvd{k}": dense.kron_fit("kpsvd", F, d, fo, rank=k) for k in (1, 2, 3)}}
            for m, G in ref.items():  # √eps-level slack: exact blocks are ||F||² − ||F||² ≈ 1e-16·||F||²
                assert abs(e[m] - np.linalg.norm(F - G) / np.linalg.norm(F)) <= 1e-7, m
            assert e["kpsvd1"] <= e["kfac"] + 1e-7 and e["ekfac"] <= e["kfac"] + 1e-7
            assert e["kpsvd3"] <= e["kpsvd2"] + 1e-7 <= e["kpsvd1"] + 2e-7
        if fi == 1 and net.depth == 2:  # the 2-in/2-out block against brute force
            F1 = blocks[0]
            assert errors[0]["kpsvd1"] * np.linalg.norm(F1) <= brute_force_kronecker_fit(F1, 2, 2) + 1e-10


# ---------------------------------------------------------------------------------------------
# EKFAC's scales and exact cases
# ---------------------------------------------------------------------------------------------
def test_ekfac_scales_equal_projected_dense_fisher():
    """Gram-form s_ij (eigen-coordinates of K^H, K^Δ) == diag((U_A⊗U_B)ᵀ F_l (U_A⊗U_B)) of the
    explicit Fisher, matched through the (simple, ascending) eigenvalues; null directions have s = 0."""
    net = nn.mlp(depth=3, width=9, in_dim=4, out_dim=2)
    params = net.init(4)
    X = sphere(5, 4, 4)
    n, c = 5, 2
    lk = layer_kernels(net, X, params=params)
    blocks = dense.layer_fisher_blocks(net, params, X)
    for l, (F, (fi, fo), (A, B)) in enumerate(zip(blocks, net.layer_shapes, dense.kfac_factors(net, params, X))):
        s_gram = np.asarray(eigen_coordinates(lk.fwd[l], lk.bwd[l], lk.fwd[l], lk.bwd[l], n, c)[-1])
        _, s_dense = dense.ekfac_basis(A, B, F)
        s_dense = s_dense.reshape(fi + 1, fo)
        keep_a = np.linalg.eigvalsh(A) > 1e-12 * np.linalg.eigvalsh(A)[-1]
        keep_b = np.linalg.eigvalsh(B) > 1e-12 * np.linalg.eigvalsh(B)[-1]
        assert s_gram.shape == (keep_a.sum(), keep_b.sum())
        assert rel_err(s_gram, s_dense[np.ix_(keep_a, keep_b)]) <= 1e-9, l
        assert np.all(np.abs(s_dense[~keep_a]) <= 1e-12 * np.max(s_dense)), l


def test_single_sample_kfac_kpsvd_ekfac_are_exact_blocks():
    """N = 1: F_l = (hhᵀ) ⊗ (Σ_c δδᵀ) is one Kronecker product, so K-FAC, KPSVD and EKFAC all fit it
    exactly (dense errors ~ 0) and every layer contributes the projector 1: α = L (block-diagonal's);
    diag is not exact: its kernel is the number of active parameters (trace identity, dense check)."""
    net = nn.mlp(depth=3, width=6, in_dim=3)
    params = net.init(0)
    X = sphere(1, 3, 0)
    for F, (fi, fo), (A, B) in zip(dense.layer_fisher_blocks(net, params, X), net.layer_shapes,
                                   dense.kfac_factors(net, params, X)):
        d = fi + 1
        for G in (np.kron(A, B), dense.kron_fit("kpsvd", F, d, fo), dense.kron_fit("ekfac", F, d, fo, factors=(A, B))):
            assert np.linalg.norm(F - G) <= 1e-12 * np.linalg.norm(F)
        assert np.linalg.norm(F - dense.kron_fit("diag", F, d, fo)) > 0.1 * np.linalg.norm(F)
    for method, opts in CASES[:3]:
        assert abs(gram(net, X, params, method, opts, 0.0)[0][0, 0] - 3.0) <= 1e-10, method
    J = dense.jacobian(net, params, X)
    assert gram(net, X, params, "diag", {}, 0.0)[0][0, 0] == pytest.approx(np.sum(J != 0), rel=1e-12)


@pytest.mark.parametrize("params_seed", [None, 0])
def test_single_layer_kpsvd_and_ekfac_equal_exact(params_seed):
    """Depth 1 (readout only): F = A ⊗ I_C exactly, so KPSVD (any rank) and EKFAC are the exact Fisher
    and their kernels are exact NGD's at every damping, train and test, finite and infinite width."""
    net = nn.mlp(depth=1, width=8, in_dim=9, out_dim=2)
    params = None if params_seed is None else net.init(params_seed)
    X, X_test = sphere(6, 9, 0), sphere(2, 9, 1)
    for damping in (0.0, 0.1):
        ref = method_kernels(net, X, "exact", params=params, damping=damping, X_test=X_test)
        for method, opts in (("kpsvd", {"rank": 1}), ("kpsvd", {"rank": 3}), ("ekfac", {})):
            got = method_kernels(net, X, method, params=params, damping=damping, X_test=X_test, **opts)
            assert rel_err(got.train, ref.train) <= 1e-10 and rel_err(got.test, ref.test) <= 1e-10, method


# ---------------------------------------------------------------------------------------------
# isotropy: predictions vs measured kernels, and where they break
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width, out_dim, rank", [(None, 1, 1), (48, 1, 1), (48, 2, 2), (None, 1, 3)])
def test_kpsvd_kernel_is_the_predicted_diagonal(width, out_dim, rank):
    """Full-rank Grams: Θ_kpsvd = diag(1 + Σ_hidden 1/(N Σ_i σ_i a_i∘b_i)), with a, b from numpy's eig of
    G_V G_U (the method uses an SVD of G_U^{1/2}G_V^{1/2}); generic data: not isotropic, and the
    predicted deviation is the measured one."""
    net = nn.mlp(depth=3, width=width or 48, in_dim=10, out_dim=out_dim)
    params = None if width is None else net.init(0)
    X = sphere(6, 10, 0)
    K = gram(net, X, params, "kpsvd", {"rank": rank}, 0.0)[0]
    pred = predict(net, X, "kpsvd", params=params, rank=rank)
    assert np.max(np.abs(K - np.diag(pred.diagonal))) <= 1e-10 * np.max(pred.diagonal)
    iso = isotropy(K)
    assert abs(iso.deviation - pred.deviation) <= 1e-10 and iso.deviation > 0.05
    assert not pred.isotropic and not iso.is_isotropic()


def test_kpsvd_isotropic_for_constant_row_sum_grams():
    """Orthonormal inputs at infinite width: every Gram is a·I + b·11ᵀ (constant row sums), so a, b ∝ 1
    and every hidden layer gives N·I, the readout I: α = N(L − 1) + 1, like K-FAC (measured)."""
    n, depth = 6, 3
    net = nn.mlp(depth=depth, width=64, in_dim=n)
    X = np.eye(n)
    K = gram(net, X, None, "kpsvd", {"rank": 1}, 0.0)[0]
    pred = predict(net, X, "kpsvd")
    iso = isotropy(K)
    assert pred.isotropic and iso.is_isotropic(1e-8)
    assert abs(iso.alpha - (n * (depth - 1) + 1)) <= 1e-8 * iso.alpha and abs(pred.alpha - iso.alpha) <= 1e-8 * iso.alpha


def test_kpsvd_prediction_breaks_with_low_rank_first_layer():
    """D + 1 < N: the first layer's input Gram is rank-deficient; the prediction names it and the
    measured kernel is not isotropic."""
    net = nn.mlp(depth=3, width=64, in_dim=3)
    X = sphere(10, 3, 1)
    pred = predict(net, X, "kpsvd", params=net.init(0))
    assert not pred.isotropic and "first-layer input Gram has rank 4 < N = 10" in pred.summary()
    assert isotropy(gram(net, X, net.init(0), "kpsvd", {"rank": 1}, 0.0)[0]).deviation > 1e-3


@pytest.mark.parametrize("method", ["ekfac", "diag"])
def test_frame_methods_trace_identity_and_diagonal(method):
    """EKFAC and diag are frames of unit vectors: tr Θ = #{s > 0}, so α = Σ rank K^H·rank K^Δ/(NC)
    (ekfac: N(L−1)+1 with full ranks) or active parameters/(NC) (diag, counted from the supports of h̃ and
    δ); their diagonal equals the predicted one; hidden layers make them non-isotropic."""
    n, depth = 6, 3
    net = nn.mlp(depth=depth, width=24, in_dim=10, out_dim=2, activation="erf")  # erf: no dead units, full ranks
    params, X = net.init(2), sphere(n, 10, 2)
    K = gram(net, X, params, method, {}, 0.0)[0]
    pred, iso = predict(net, X, method, params=params), isotropy(K)
    assert abs(iso.alpha - pred.alpha) <= 1e-10 * iso.alpha
    if method == "ekfac":
        assert pred.alpha == n * (depth - 1) + 1
    else:  # independent count: parameters whose explicit Jacobian column is non-zero
        assert pred.alpha == np.sum(np.any(dense.jacobian(net, params, X) != 0, axis=0)) / (n * 2)
    assert np.max(np.abs(np.diag(K) - pred.diagonal)) <= 1e-10 * np.max(pred.diagonal)
    assert not pred.isotropic and iso.deviation > 0.01 and iso.off_diagonal > 0.01


def test_diag_alpha_grows_with_width():
    """α_diag = active parameters/(NC) grows ~ M² (hidden layer M×M), unlike every Gram-level method."""
    X = sphere(6, 5, 0)
    alphas = [isotropy(gram(net, X, net.init(0), "diag", {}, 0.0)[0]).alpha
              for net in (nn.mlp(depth=3, width=m, in_dim=5, activation="erf") for m in (8, 16, 32))]
    assert alphas[0] < alphas[1] < alphas[2] and alphas[2] / alphas[1] > 3


# ---------------------------------------------------------------------------------------------
# bad input: one clear ValueError, early
# ---------------------------------------------------------------------------------------------
def test_bad_input():
    net = nn.mlp(depth=2, width=8, in_dim=3)
    params, X = net.init(0), sphere(4, 3, 0)
    for rank, msg in ((0, "must be >= 1"), (1.5, "must be an integer"), (True, "must be an integer")):
        with pytest.raises(ValueError, match=msg):
            method_kernels(net, X, "kpsvd", params=params, rank=rank)
        with pytest.raises(ValueError, match=msg):
            dense.preconditioned_kernel(net, params, X, "kpsvd", rank=rank)
    with pytest.raises(ValueError, match="takes no option"):
        method_kernels(net, X, "ekfac", params=params, rank=2)
    with pytest.raises(ValueError, match="only used by method 'kpsvd'"):
        dense.preconditioned_kernel(net, params, X, "ekfac", rank=2)
    with pytest.raises(ValueError, match="finite width"):
        method_kernels(net, X, "diag")
    with pytest.raises(ValueError, match="finite width"):
        diag_kernels(net, X, None)
    with pytest.raises(ValueError, match="finite width"):
        predict(net, X, "diag")
    tiled = layer_kernels(net, X, params=params, tile=2)  # tiled kernels carry no per-unit features
    with pytest.raises(ValueError, match="per-unit"):
        method_kernels(net, X, "diag", params=params, train_kernels=tiled)
    for damping in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="damping"):
            method_kernels(net, X, "kpsvd", params=params, damping=damping)
        with pytest.raises(ValueError, match="damping"):
            diag_kernels(net, X, params, damping)
    with pytest.raises(ValueError, match="X has 2 columns"):
        diag_kernels(net, X[:, :2], params)


@pytest.mark.parametrize("depth,out_dim,seed", [(1, 1, 2), (2, 1, 0), (3, 2, 1)])
def test_kfac_cor_gram_equals_dense_and_improves_kfac_fit(depth, out_dim, seed):
    """Koroko et al.'s corrected K-FAC: the Gram form (fit of U(I/N − 11ᵀ/N²)Vᵀ from N×N Grams) equals the
    dense reference (explicit SVD of the rearranged F_l − A⊗B), train and test; its Frobenius error is
    ≤ K-FAC's on every block (the correction is the best Kronecker fit of K-FAC's remainder); with one
    layer K-FAC is exact and so is the corrected form (α = 1, isotropic)."""
    net = nn.mlp(depth=depth, width=7, in_dim=4, out_dim=out_dim)
    X = np.random.default_rng(seed).standard_normal((5, 4))
    Xt = np.random.default_rng(seed + 9).standard_normal((3, 4))
    params = net.init(seed)
    for rho, tol in ((1e-3, 1e-8), (1.0, 1e-8), (0.0, 1e-6)):
        K, Kt = nn.preconditioned_kernel(net, X, "kfac_cor", params=params, damping=rho, X_test=Xt)
        D, Dt = dense.preconditioned_kernel(net, params, X, "kfac_cor", damping=rho, X_test=Xt)
        assert rel_err(K, D) <= tol and rel_err(Kt, Dt) <= tol, (rho, rel_err(K, D), rel_err(Kt, Dt))
    blocks = dense.layer_fisher_blocks(net, params, X)
    factors = dense.kfac_factors(net, params, X)
    for F, (fi, fo), AB in zip(blocks, net.layer_shapes, factors):
        d = fi + int(net.bias)
        err_kfac = np.linalg.norm(F - np.kron(*AB))
        err_cor = np.linalg.norm(F - dense.kron_fit("kfac_cor", F, d, fo, factors=AB))
        assert err_cor <= err_kfac + 1e-12 * np.linalg.norm(F)
    iso = nn.isotropy(nn.preconditioned_kernel(net, X, "kfac_cor", params=params))
    pred = nn.predict(net, X, "kfac_cor", params=params)
    assert iso.is_isotropic(1e-8) == pred.isotropic
    if depth == 1:
        assert abs(iso.alpha - 1.0) <= 1e-8 and pred.alpha == 1.0
