"""The cross-entropy side of the dense reference (ntk_ngd/reference/softmax.py, problem.py, api.py), and the
Gram form's whitened kernels against it (ported from the former cross-entropy suite's dense tests).

Independent computations: the softmax formulas written out in numpy, the unwhitened Fisher JᵀΛJ/N from the
raw Jacobian and autodiff Hessians, Kronecker products of the raw layer signals, and the sampled classes
drawn directly with jax.random (input data shared with the methods, the Fisher built separately).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.linalg

import ntk_ngd as nn
from ntk_ngd import losses, reference as ref

from conftest import SOFTMAX_C, SOFTMAX_D, SOFTMAX_N, rel_err

N, C, D = SOFTMAX_N, SOFTMAX_C, SOFTMAX_D  # the conftest fixture `small`


def _probs(f):
    e = np.exp(f - f.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def tiny():
    net = nn.mlp(depth=2, width=5, in_dim=3, out_dim=C, activation="relu", w_std=1.3, b_std=0.4)
    rng = np.random.default_rng(0)
    return net, net.init(2), rng.standard_normal((4, 3)), rng.integers(0, C, 4)


# ---------------------------------------------------------------------------------------------
# softmax derivatives and the whitening
# ---------------------------------------------------------------------------------------------
def test_logit_derivatives_are_the_softmax_formulas_and_match_the_losses_module():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 4)) * 3
    Y = np.eye(4)[[0, 3, 1, 1, 2]]
    g, lam = ref.logit_derivatives(f, Y)
    p = _probs(f)
    # autodiff vs the closed forms p − y and diag(p) − ppᵀ: O(1) entries, rounding ~ a few eps
    assert rel_err(g, p - Y) < 1e-14
    assert rel_err(lam, np.stack([np.diag(q) - np.outer(q, q) for q in p])) < 1e-14
    assert rel_err(losses.fisher_blocks(f), lam) < 1e-14
    assert rel_err(losses.logit_gradient(f, Y), g) < 1e-14
    soft = np.full((5, 4), 0.25)
    assert rel_err(losses.logit_gradient(f, soft), ref.logit_derivatives(f, soft)[0]) < 1e-14


def test_whitening_identities_and_the_same_basis_as_the_gram_form():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(7, 5)) * 2
    labels = rng.integers(0, 5, 7)
    Y = np.eye(5)[labels]
    g, lam = ref.logit_derivatives(f, Y)
    R = ref.softmax.whitening_factors(lam)
    u = ref.softmax.whiten_vectors(R, g)
    # R_n = S^{1/2}Vᵀ from an eigendecomposition of S = VᵀΛV (cond(S) ≤ ~1e2 here): identities hold to
    # ~cond·eps relative, 1e-13 with margin
    assert rel_err(np.einsum("nkc,nkd->ncd", R, R), lam) < 1e-13  # R_nᵀR_n = Λ_n
    assert np.max(np.abs(R @ np.ones(5))) < 1e-15  # R_n 1 = 0 (V ⊥ 1 exactly up to rounding of V)
    assert rel_err(np.einsum("nkc,nk->nc", R, u), g) < 1e-13  # R_nᵀu_n = g_n
    p = _probs(f)[np.arange(7), labels]
    assert rel_err(np.sum(u**2, axis=1), (1 - p) / p) < 1e-12  # g_nᵀΛ_n⁺g_n = χ²(y‖p)
    R_gram, u_gram, _ = (np.asarray(a) for a in losses.whitening(f, Y))
    assert rel_err(R_gram, R) < 1e-13 and rel_err(u_gram, u) < 1e-12  # same basis V: equal entry by entry


def test_whitened_jacobian_rows_and_fisher(tiny):
    """J̃ row (n, i) = h̃_n ⊗ δ̃_{n,i}, δ̃ = R_nδ_n, and J̃ᵀJ̃/N = JᵀΛJ/N with Λ from autodiff."""
    net, params, X, labels = tiny
    p = ref.problem.build(net, params, X, "cross_entropy", targets=labels)
    J = ref.jacobian(net, params, X)
    H, Dl = ref.layer_signals(net, params, X)
    lam = ref.logit_derivatives(np.asarray(net.apply(params, X)), np.eye(C)[labels])[1]
    for l, sl in enumerate(ref.layer_slices(net)):
        delta = np.einsum("nkc,ncm->nkm", p.R, Dl[l])
        rows = np.stack([np.kron(H[l][n], delta[n, i]) for n in range(4) for i in range(C - 1)])
        assert rel_err(p.J[:, sl], rows) < 1e-13  # sums of ≤ C products: rounding only
    F = J.T @ scipy.linalg.block_diag(*lam) @ J / 4
    assert rel_err(ref.fisher_approximation(net, params, X, "exact", loss="cross_entropy"), F) < 1e-13
    assert rel_err(p.grad, J.T @ (_probs(p.f) - np.eye(C)[labels]).reshape(-1) / 4) < 1e-13  # ∇L = Jᵀ(p − y)/N


def test_kfac_factors_cross_entropy(tiny):
    """B_l = Σ_n Δ_nᵀΛ_nΔ_n/N from the raw signals and autodiff Λ_n (no whitening)."""
    net, params, X, _ = tiny
    H, Dl = ref.layer_signals(net, params, X)
    lam = ref.logit_derivatives(np.asarray(net.apply(params, X)), np.eye(C)[np.zeros(4, int)])[1]
    for readout, scale in (("common", 1.0), ("paper", 4.0)):
        factors = ref.kfac_factors(net, params, X, readout, loss="cross_entropy")
        for l, (A, B) in enumerate(factors):
            s = scale if l == net.depth - 1 else 1.0
            assert rel_err(A, H[l].T @ H[l] / 4) < 1e-14
            assert rel_err(B, np.einsum("ncm,ncd,ndk->mk", Dl[l], lam, Dl[l]) / (4 * s)) < 1e-13


def test_sampled_fisher_from_raw_categorical_draws(tiny):
    """G_sf = (1/k) Σ_s Σ_n J_nᵀ(p_n − e_y)(p_n − e_y)ᵀJ_n/N with y ~ Cat(p_n) drawn here directly."""
    net, params, X, _ = tiny
    f = np.asarray(net.apply(params, X))
    J = ref.jacobian(net, params, X).reshape(4, C, -1)
    for samples, seed, step in ((1, 0, 0), (4, 3, 2)):
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        y = np.asarray(jax.random.categorical(key, f, axis=-1, shape=(samples, 4)))
        scores = _probs(f)[None] - np.eye(C)[y]
        per = np.einsum("ncp,snc->snp", J, scores).reshape(samples * 4, -1)
        G = ref.fisher_approximation(net, params, X, "sf", loss="cross_entropy", samples=samples, seed=seed, step=step)
        assert rel_err(G, per.T @ per / (4 * samples)) < 1e-12  # rounding of O(P) sums, whitening cond ~1e2


# ---------------------------------------------------------------------------------------------
# Gram form vs the reference's metric operator Λ^{1/2}Θ_GΛ^{1/2}
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damping", [1e-3, 0.0])
@pytest.mark.parametrize("method,opts", [("gd", {}), ("exact", {}), ("block_diag", {}), ("kfac", {}),
                                         ("kfac", {"kfac_readout": "paper"})])
def test_metric_operator_equals_the_whitened_kernel(small, method, opts, damping):
    """V Θ̃_G Vᵀ = Λ^{1/2}Θ_GΛ^{1/2} (blockwise V = I ⊗ V): the Gram form's metric vs the explicit one."""
    net, params, X, labels, _ = small
    k = nn.method_kernels(net, X, method, params=params, damping=damping, loss="cross_entropy", **opts)
    sym, _ = ref.metric_operator(net, params, X, labels, method, damping=damping, **opts)
    Vb = np.kron(np.eye(N), np.asarray(losses.null_basis(C)))
    # ρ = 1e-3: cond·eps ≲ 1e-11. ρ = 0: the dense pseudo-inverse of G = JᵀΛJ/N resolves J only to
    # cond ≈ (P·eps)^(−1/2) (solves.py); these nets have full-rank, well-conditioned layer Grams
    # (measured ≤ 2e-12), so 1e-8 still holds on the dense side.
    assert rel_err(Vb @ np.asarray(k.train) @ Vb.T, sym) < 1e-8


def test_theta_g_lambda_is_oblique_not_the_orthogonal_projector(small):
    """Π Θ_G Λ = Π (exact NGD), but Θ_G Λ ≠ Π: its 1_C components do not vanish."""
    net, params, X, labels, _ = small
    _, TL = ref.metric_operator(net, params, X, labels, "exact")
    Pi = np.kron(np.eye(N), np.eye(C) - 1.0 / C)
    assert np.max(np.abs(Pi @ TL - Pi)) < 1e-8  # pseudo-inverse accuracy at ρ = 0, as above
    assert np.linalg.norm(TL - Pi) / np.linalg.norm(Pi) > 1e-2


@pytest.mark.parametrize("damping", [1e-3, 0.0])
def test_function_step_in_the_basis_of_the_gram_form(small, damping):
    """Raw reference logit steps vs the Gram form: on test points VᵀΔf(x') = −η Θ̃_G(x', X)u, on training points
    R_nΔf_n = −η (Θ̃_G u)_n (the metric RΘ_GRᵀ acts in the whitened basis)."""
    net, params, X, labels, X_test = small
    df, dft = ref.function_step(net, params, X, labels, "block_diag", 0.7, damping=damping, X_test=X_test,
                                loss="cross_entropy")
    k = nn.method_kernels(net, X, "block_diag", params=params, damping=damping, X_test=X_test, loss="cross_entropy")
    R, u, _ = (np.asarray(a) for a in losses.whitening(np.asarray(net.apply(params, X)), np.eye(C)[labels]))
    V = np.asarray(losses.null_basis(C))
    u = u.reshape(-1)
    assert rel_err(np.einsum("nkc,nc->nk", R, df).reshape(-1), -0.7 * np.asarray(k.train) @ u) < 1e-8  # as above
    assert rel_err((dft @ V).reshape(-1), -0.7 * np.asarray(k.test) @ u) < 1e-8


def test_fisher_efficiency_ratio_cross_entropy(small):
    net, params, X, labels, _ = small
    v_ng = ref.parameter_update(net, params, X, labels, "exact", 1.0, loss="cross_entropy")
    assert abs(ref.fisher_efficiency_ratio(net, params, X, labels, v_ng, loss="cross_entropy") - 1) < 1e-8
    v_gd = ref.parameter_update(net, params, X, labels, "gd", 1.0, loss="cross_entropy")
    assert ref.fisher_efficiency_ratio(net, params, X, labels, v_gd, loss="cross_entropy") > 1.01


def test_bad_cross_entropy_inputs(tiny):
    net, params, X, labels = tiny
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        ref.parameter_update(net, params, X, np.array([0, 1, 3, 0]), "exact", 0.1, loss="cross_entropy")
    with pytest.raises(ValueError, match="needs targets= \\(labels\\)"):
        ref.preconditioned_kernel(net, params, X, "ef", loss="cross_entropy")
    with pytest.raises(ValueError, match="residual= is the MSE residual"):
        ref.preconditioned_kernel(net, params, X, "ef", loss="cross_entropy", residual=np.ones((4, C)))
    one = nn.mlp(depth=1, in_dim=3, out_dim=1)
    with pytest.raises(ValueError, match="cross_entropy needs a network with >= 2 outputs"):
        ref.preconditioned_kernel(one, one.init(0), X, "exact", loss="cross_entropy")
