"""The method-kernel speed-ups of issue 26 against the code they replaced and against independent forms.

* Every registered method × ρ ∈ {0, 1e-3}, at infinite width (3-layer ReLU, 16 inputs, N = 20, 6 test points) and
  at finite width (width 8, C = 2, N = 6, 3 test points): train and test kernels equal the values of commit
  aabfb9f (before the change; tests/data/kernels_aabfb9f.npz, written by tests/data/make_kernels_aabfb9f.py with
  that commit's package). Error model: both sides evaluate the same quantity with backward-stable factorisations
  (eigh, Cholesky) from layer kernels that agree to rounding, so they differ by about the method's forward error
  eps·κ, κ the condition of the map layer kernels → method kernel. At infinite width κ is *measured*, not assumed:
  δ = the largest relative change of the method kernels over 3 fixed draws of an independent relative eps
  perturbation of every layer kernel (:func:`forward_error`); the tolerance is 10·max(δ, eps) (3 draws estimate
  the worst case to within a factor of a few). Until 2026-12-07 the band was a fixed 1e-12 from an assumed
  κ ≲ 1e3; kfac_cor at ρ = 0 has κ ≈ 3e4 (δ = 6.7e-12 measured), and on numpy 2.4/scipy 1.17 its stored-value
  difference was 3.4e-12 (the ratio difference/δ over all 26 cases was 0.33–2.2 there). At finite width the
  fixed 1e-12 stays (its kernels are measured at 1e-14 or below). At finite width the kernels also equal the
  dense parameter-space reference (:mod:`ntk_ngd.reference`) to the project's dense tolerance 1e-8
  (tests/test_methods.py: the P×P pseudo-inverse's own error).
* Each new path where it is taken, against the general form it replaces: Cholesky vs eigendecomposition factors
  (eager and under jit), the symmetric half of the Kronecker diagonal-basis form vs the full form and a naive
  sum, the separable (rank-one scales) form with cut-off terms vs the general form, and the simultaneous
  diagonalisation of two-term Kronecker fits vs the dense (r_H·r_Δ)-square solve.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_ngd as nn
from ntk_ngd import linalg, problem as _problem
from ntk_ngd.damping import Damping
from ntk_ngd.methods.base import Context
from ntk_ngd.methods import _kron, kfac_cor, kpsvd
from conftest import rel_err

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "data"))
import make_kernels_aabfb9f as stored  # noqa: E402

TOL = 1e-12
DENSE_TOL = 1e-8
#: The stored kernels were made with neural-tangents' backend on jax 0.4.38. The pure-jax backend's infinite-width
#: ReLU kernels agree with NT's only to ~sqrt(eps) on the diagonal x = x' (docs/THEORY.md "Numerics"; gd, whose code
#: did not change, measures 4.5e-9), which the damped solves amplify (up to 3e-7 for kpsvd rank 2): there the stored
#: values cannot separate an optimisation's error from the backend's, so the comparison runs in the NT environment
#: only. Likewise the sampled Fisher's draws follow jax's random stream, which changed after jax 0.4.
STORED_BACKEND = "neural_tangents"
STORED_JAX = "0.4."
EPS = float(np.finfo(float).eps)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(HERE, "data", "kernels_aabfb9f.npz")))


def infinite_cases():
    for m in nn.methods.registered():
        if m.finite_width_only:
            continue
        for tag, options in stored.variants(m):
            for rho in stored.DAMPINGS:
                yield pytest.param(m, tag, options, rho, id=f"{m.name}{tag}-{rho:g}")


@pytest.mark.parametrize("method, tag, options, rho", infinite_cases())
def test_infinite_width_equals_aabfb9f(ref, method, tag, options, rho):
    key = stored.key(method.name, tag, rho, "train")
    if key not in ref:
        pytest.skip(f"{method.name}: no kernel at infinite width on these data at aabfb9f either")
    net = nn.mlp(depth=3, width=512, in_dim=16, out_dim=1)
    kw = dict(options)
    if method.needs_residual:
        kw["residual"] = ref["residual"]
    if str(net.backend) != STORED_BACKEND:
        pytest.skip(f"stored kernels come from the {STORED_BACKEND} backend (module constants); checked there")
    if method.random and not jax.__version__.startswith(STORED_JAX):
        pytest.skip(f"{method.name}'s draws follow jax's random stream, which changed after jax {STORED_JAX}x")
    train, test = nn.preconditioned_kernel(net, ref["X"], method.name, damping=rho, X_test=ref["X_test"], **kw)
    tol = FORWARD_ERROR_FACTOR * max(forward_error(net, ref, method, rho, kw), EPS)
    assert rel_err(train, ref[key]) <= tol
    assert rel_err(test, ref[stored.key(method.name, tag, rho, "test")]) <= tol


#: the tolerance of the stored-value comparison at infinite width, in units of the measured forward error
FORWARD_ERROR_FACTOR = 10


def forward_error(net, ref, method, rho, options, draws: int = 3) -> float:
    """δ: the largest relative change of the (train, test) method kernels when every layer kernel (forward,
    backward and NTK Grams, train and test) is multiplied entrywise by 1 + eps·z, z standard normal
    (symmetrised for the square Grams), over ``draws`` fixed draws: the eps·κ of the module docstring."""
    options = dict(options)
    residual = options.pop("residual", None)
    prob = _problem.prepare(net, ref["X"], None, "mse", residual=residual, X_test=ref["X_test"])
    ctx = _problem.context(method, prob, rho, None, options, 0)
    train, test = _problem.whiten(prob, *_problem.kernels(prob))
    base = method.kernel(train, test, ctx)
    rng = np.random.default_rng(0)

    def jitter(lk, symmetric):
        def one(a):
            z = rng.standard_normal(np.shape(a))
            z = (z + np.swapaxes(z, -1, -2)) / 2 if symmetric else z
            return jnp.asarray(np.asarray(a) * (1 + EPS * z))
        return dataclasses.replace(lk, fwd=one(lk.fwd), bwd=one(lk.bwd), ntk=one(lk.ntk))

    changes = []
    for _ in range(draws):
        out = method.kernel(jitter(train, True), jitter(test, False), ctx)
        changes += [rel_err(out.train, base.train), rel_err(out.test, base.test)]
    return max(changes)


@pytest.fixture(scope="module")
def finite_net():
    net = nn.mlp(depth=3, width=8, in_dim=16, out_dim=2)
    return net, net.init(0)


@pytest.mark.parametrize("method", nn.methods.registered(), ids=lambda m: m.name)
def test_finite_width_equals_aabfb9f_and_dense_reference(ref, finite_net, method):
    net, params = finite_net
    X, X_test, residual = ref["X"][: stored.N_FINITE], ref["X_test"][:3], ref["finite_residual"]
    for rho in stored.DAMPINGS:
        key = "finite|" + stored.key(method.name, "", rho, "train")
        if key not in ref:  # ef at ρ = 0: singular at aabfb9f too
            with pytest.raises(ValueError):
                nn.preconditioned_kernel(net, X, method.name, params=params, damping=rho, residual=residual)
            continue
        kw = dict(method.example_options)
        if method.random:
            kw.update(samples=3, seed=0)
        if method.needs_residual:
            kw["residual"] = residual
        train, test = nn.preconditioned_kernel(net, X, method.name, params=params, damping=rho, X_test=X_test, **kw)
        if not (method.random and not jax.__version__.startswith(STORED_JAX)):  # draws: see STORED_JAX
            assert rel_err(train, ref[key]) <= TOL, rho
            assert rel_err(test, ref[key.replace("|train", "|test")]) <= TOL, rho
        dense_train, dense_test = nn.reference.preconditioned_kernel(net, params, X, method.name, damping=rho,
                                                                     X_test=X_test, **kw)
        assert rel_err(train, dense_train) <= DENSE_TOL, rho
        assert rel_err(test, dense_test) <= DENSE_TOL, rho


# ---------------------------------------------------------------------------------------------
# the new paths, where they are taken
# ---------------------------------------------------------------------------------------------
def psd(n, cond, seed):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return (Q * np.geomspace(1.0, 1.0 / cond, n)) @ Q.T


def test_cholesky_factors_equal_eigen_factors():
    """ρ > 0 with κ ≤ 1e2: Cholesky and eigendecomposition factors give K_cross(K + s)⁻¹ to ≤ 1e-12 (eps·κ·n),
    eagerly and under jit (the lax.cond branch); past the condition bound the eigendecomposition is used."""
    K = jnp.asarray(psd(30, 1e4, 0))
    cross = jnp.asarray(np.random.default_rng(1).standard_normal((7, 30)))
    shift = 0.02  # κ ≤ (tr K + s)/s ≈ 1e2 for this K
    eig = linalg.apply_factors(cross, linalg.damped_inverse_factors(K, shift))
    chol = linalg.apply_factors(cross, linalg.damped_inverse_factors(K, shift, positive=True))
    assert rel_err(chol, eig) <= TOL
    jitted = jax.jit(lambda s: linalg.apply_factors(cross, linalg.damped_inverse_factors(K, s, positive=True)))
    assert rel_err(jitted(shift), eig) <= TOL
    tiny = 1e-12  # κ ≈ 3e12 > CHOLESKY_MAX_CONDITION: the eigendecomposition's own arithmetic
    np.testing.assert_array_equal(linalg.damped_inverse_factors(K, tiny, positive=True)[0],
                                  linalg.damped_inverse_factors(K, tiny)[0])


def naive_form(h_cross, d_cross, h, d, w, n):
    return np.einsum("pi,qi,pj,qj,ij->pq", h_cross, h, d_cross, d, w) / n


def test_diagonal_basis_form_symmetric_half_equals_full_and_naive():
    rng = np.random.default_rng(2)
    rows = _kron._ROW_BLOCK + 37  # two row blocks, the second partial
    h, d = jnp.asarray(rng.standard_normal((rows, 9))), jnp.asarray(rng.standard_normal((rows, 7)))
    w = jnp.asarray(rng.random((9, 7)))
    half = _kron.diagonal_basis_form(h, d, h, d, w, rows)  # the same objects: the symmetric path
    full = _kron.diagonal_basis_form(h + 0.0, d + 0.0, h, d, w, rows)  # copies: the general path
    naive = naive_form(*(np.asarray(a) for a in (h, d, h, d, w)), rows)
    assert rel_err(half, naive) <= TOL and rel_err(full, naive) <= TOL


def test_rank_one_scales_kernel_equals_general_form_with_cut_terms():
    """Separable scales s = σαβᵀ at ρ = 0 with a cut-off that drops a staircase of terms (rcond 1e-3 on a
    spread of 1e-6): the Hadamard-of-Grams form equals the general diagonal-basis form."""
    rng = np.random.default_rng(3)
    rows, ra, rb = 25, 11, 13
    alpha, beta = jnp.asarray(np.geomspace(1e-3, 1.0, ra)), jnp.asarray(np.geomspace(1.0, 1e-3, rb)[rng.permutation(rb)])
    h, d = jnp.asarray(rng.standard_normal((rows, ra))), jnp.asarray(rng.standard_normal((rows, rb)))
    hc, dc = jnp.asarray(rng.standard_normal((4, ra))), jnp.asarray(rng.standard_normal((4, rb)))
    sigma, rcond = 0.7, 1e-3
    s = sigma * jnp.outer(alpha, beta)
    assert 0 < int(jnp.sum(s <= rcond * jnp.max(s))) < s.size  # some, not all, terms are cut
    for cross in ((h, d), (hc, dc)):
        fast = _kron.rank_one_scales_kernel(*cross, h, d, sigma, alpha, beta, rows, rcond)
        general = _kron.diagonal_basis_kernel(*cross, h, d, s, 0.0, rows, rcond)
        assert rel_err(fast, general) <= TOL
    assert _kron.rank_one_scales_kernel(h, d, h, d, sigma, -alpha, beta, rows) is None  # not positive: no shortcut


def two_term_fits(n):
    net = nn.mlp(depth=3, width=512, in_dim=16, out_dim=1)
    lk = nn.layer_kernels(net, np.random.default_rng(4).standard_normal((n, 16)))
    terms = {"kfac_cor": lambda f, b: kfac_cor.corrected_kfac_terms(f, b, n, 1),
             "kpsvd rank 2": lambda f, b: kpsvd.kronecker_svd(f, b, n, 1, 2)}
    for name, fit_terms in terms.items():
        for l in range(lk.depth):
            fit = kpsvd.LayerFit(lk.fwd[l], lk.bwd[l], n, 1, fit_terms(lk.fwd[l], lk.bwd[l]))
            if len(fit.sig) == 2:
                yield name, l, fit, lk


def test_two_term_congruence_equals_dense_solve(monkeypatch):
    """ρ = 0, N = 20: the simultaneous diagonalisation equals the dense pseudo-inverse of M to ≤ 10·eps·κ(M)
    (two backward-stable solves of a system with condition κ(M); κ(M) ≈ 1e4–1e6 here), train and test rows."""
    ctx = Context(n=20, damping=Damping.of(0.0))
    checked = 0
    for name, l, fit, lk in two_term_fits(20):
        ev = np.linalg.eigvalsh(np.asarray(fit.matrix()))
        kappa = np.max(np.abs(ev)) / np.min(np.abs(ev))
        cross = lk.fwd[l][:5] * 1.01, lk.bwd[l][:5] * 0.99  # cross rows other than the training rows
        dense = [kpsvd.layer_kernel(fit, None, None, ctx), kpsvd.layer_kernel(fit, *cross, ctx)]
        monkeypatch.setattr(kpsvd, "DENSE_FIT_MAX", 0)
        fit._congruence = None
        assert fit.congruence() is not None, (name, l)
        fast = [kpsvd.layer_kernel(fit, None, None, ctx), kpsvd.layer_kernel(fit, *cross, ctx)]
        monkeypatch.setattr(kpsvd, "DENSE_FIT_MAX", 1024)
        for a, b in zip(fast, dense):
            assert rel_err(a, b) <= 10 * EPS * kappa, (name, l, rel_err(a, b), kappa)
        checked += 1
    assert checked >= 3


def test_kfac_cor_at_rho_zero_never_builds_the_dense_matrix(monkeypatch):
    """N = 40: the hidden layer's span (r_H·r_Δ = 1600 > DENSE_FIT_MAX) is solved without its dense M; the first
    layer's (17·40 = 680) keeps the dense solve."""

    build = kpsvd.LayerFit._build_matrix
    built = []

    def refuse_large(self):
        size = len(self.A[0]) * len(self.B[0])
        assert size <= kpsvd.DENSE_FIT_MAX, f"a {size}-square matrix was built"
        built.append(size)
        return build(self)

    monkeypatch.setattr(kpsvd.LayerFit, "_build_matrix", refuse_large)
    net = nn.mlp(depth=3, width=512, in_dim=16, out_dim=1)
    K = nn.preconditioned_kernel(net, np.random.default_rng(5).standard_normal((40, 16)), "kfac_cor")
    assert np.all(np.isfinite(np.asarray(K)))
