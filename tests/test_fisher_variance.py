"""ntk_ngd.fisher_variance: the two Fisher estimators, their closed-form variances and the SF step scatter.

Independent references: exact expectations by enumeration over the C classes (softmax) and by
Gauss–Hermite quadrature over y (Gaussian; exact for the polynomial integrands of degree ≤ 4), each with
the score and Hessian of log p written here and differentiated by jax; Monte Carlo with standard errors
from independent batches; scipy quadrature over the χ²_k/k density for the SF closed forms.

Monte Carlo z-scores at the fixed seeds used here (R = 2000 replicates, B = 100 batches; P = 32 and 38):
  totals Σ_ij Var_ij and traces tr F̂: |z| < 3 asserted; measured |z| ≤ 1.24 (8 model/k/estimator cases);
  every entry: max |z| < 5 asserted over 10²–10³ strongly correlated entries; measured max |z| 0.74–2.30
  (mean) and 1.57–2.30 (variance); over 8 further seeds of a similar net the max stayed ≤ 3.5. Each z is
  t-distributed with 99 degrees of freedom (P(|t| > 5) ≈ 2.5e-6), so a correct formula essentially never
  fails, while dropping the F_ij² term of the Gaussian form is rejected at z = 9.9.
SF tests (N = 16, 300 seeds): undamped scatter z = 0.71 (k = 64), 0.31 (k = 256); mean step z = 0.27, 0.62;
  damped (ρ = 1e-2, k = 256) scatter 1.630e-3 ± 8e-5 vs first order 1.650e-3, 1 − cos 3.94e-4 ± 1.7e-5 vs 4.18e-4.
"""
from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_ngd as nn
from ntk_ngd import fisher_variance as fv

R, B = 2000, 100  # Monte Carlo replicates and batches
Z_SCALAR, Z_ENTRY = 3.0, 5.0


def _setup(model, depth=2, activation="erf", out_dim=None, n_inputs=2, seed=0):
    out_dim = out_dim or {"gaussian": 2, "softmax": 3}[model]
    net = nn.mlp(depth=depth, width=5, in_dim=3, out_dim=out_dim, activation=activation)
    f, theta = fv.flat_network(net, net.init(seed))
    X = nn.datasets.sphere(n_inputs, 3, seed=1)
    return f, theta, X, fv.network_derivatives(f, theta, X)


def _logp(model, f):
    """log p(y|x; θ) written independently of the library (constants dropped)."""
    if model == "gaussian":
        return lambda th, x, y: -0.5 * jnp.sum((y - f(th, x)) ** 2)
    return lambda th, x, y: jax.nn.log_softmax(f(th, x))[y]


def _outcomes(model, out):
    """(y values, probabilities) of an exact rule for E over y ~ p(y|x): the C classes, or a tensor
    Gauss–Hermite rule with 3 nodes per output (exact for polynomials of degree ≤ 5 in y − f)."""
    if model == "softmax":
        p = np.exp(out - np.max(out))
        return list(range(out.size)), p / p.sum()
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)  # weight exp(−u²/2)
    weights = weights / weights.sum()
    ys, ws = [], []
    for idx in itertools.product(range(3), repeat=out.size):
        ys.append(out + nodes[list(idx)])
        ws.append(np.prod(weights[list(idx)]))
    return ys, np.asarray(ws)


def _exact_by_enumeration(model, f, theta, X):
    """(F, Var F̂₁, Var F̂₂) for k = 1, batch-averaged, as exact expectations of autodiff scores/Hessians."""
    logp = _logp(model, f)
    grad, hess = jax.jit(jax.grad(logp)), jax.jit(jax.hessian(logp))
    n = X.shape[0]
    P = theta.shape[0]
    F1, F2, V1, V2 = (np.zeros((P, P)) for _ in range(4))
    for x in X:
        out = np.asarray(f(theta, jnp.asarray(x)))
        ys, ws = _outcomes(model, out)
        a = [np.outer(g, g) for g in (np.asarray(grad(theta, x, y)) for y in ys)]
        h = [-np.asarray(hess(theta, x, y)) for y in ys]
        m1, m2 = sum(w * s for w, s in zip(ws, a)), sum(w * s for w, s in zip(ws, h))
        F1 += m1 / n
        F2 += m2 / n
        V1 += sum(w * (s - m1) ** 2 for w, s in zip(ws, a)) / n**2
        V2 += sum(w * (s - m2) ** 2 for w, s in zip(ws, h)) / n**2
    return F1, F2, V1, V2


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------------------------
# closed forms vs exact expectations (no sampling)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", fv.MODELS)
def test_closed_form_equals_exact_expectation(model):
    """Softmax: enumeration over the C classes; Gaussian: Gauss–Hermite quadrature over y."""
    f, theta, X, d = _setup(model)
    F1, F2, V1, V2 = _exact_by_enumeration(model, f, theta, X)
    F = fv.exact_fisher(model, d)
    cf = fv.closed_form_variance(model, d, samples=1)
    assert _rel(F, F1) < 1e-12 and _rel(F, F2) < 1e-12  # both representations of the Fisher
    assert _rel(cf.score, V1) < 1e-10, _rel(cf.score, V1)
    assert _rel(cf.hessian, V2) < 1e-10, _rel(cf.hessian, V2)
    assert np.max(V2) > 1e-3 * np.max(V1)  # the Hessian estimator is genuinely random here
    cf3 = fv.closed_form_variance(model, d, samples=3)  # k i.i.d. draws: exactly 1/k
    assert _rel(cf3.score, V1 / 3) < 1e-10 and _rel(cf3.hessian, V2 / 3) < 1e-10


def test_gaussian_isserlis_form_equals_general_moment_form():
    """(F_ii F_jj + F_ij²)/k equals the exponential-family form with M₄ from Gauss–Hermite quadrature."""
    _, _, _, d = _setup("gaussian", out_dim=3)
    n, c = d.outputs.shape
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    m4 = np.zeros((c,) * 4)
    for idx in itertools.product(range(3), repeat=c):
        u = nodes[list(idx)]
        m4 += np.prod(weights[list(idx)]) * np.einsum("a,b,c,d->abcd", u, u, u, u)
    cov = np.broadcast_to(np.eye(c), (n, c, c))
    general = fv.variance_from_moments(d, cov, np.broadcast_to(m4, (n, *m4.shape)), samples=2)
    special = fv.closed_form_variance("gaussian", d, samples=2)
    assert _rel(general.score, special.score) < 1e-12
    assert _rel(general.hessian, special.hessian) < 1e-12
    # for one input and C = 1 the Isserlis form is the brief's (F_ii F_jj + F_ij²)/k
    _, _, _, d1 = _setup("gaussian", out_dim=1, n_inputs=1)
    F = np.asarray(fv.exact_fisher("gaussian", d1))
    assert _rel(fv.closed_form_variance("gaussian", d1, 4).score, (np.outer(np.diag(F), np.diag(F)) + F**2) / 4) < 1e-12


# ---------------------------------------------------------------------------------------------
# Monte Carlo (jax.random draws, jax.grad / jax.hessian per sample)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model,k", [("gaussian", 1), ("gaussian", 3), ("softmax", 1), ("softmax", 3)])
def test_monte_carlo_unbiased_and_variance_matches_closed_form(model, k):
    f, theta, X, d = _setup(model)
    F = np.asarray(fv.exact_fisher(model, d))
    theory = fv.closed_form_variance(model, d, samples=k)
    draws = fv.sample_estimates(model, f, theta, X, samples=k, replicates=R, seed=11 + k)
    for name, E, v in zip(("score", "hessian"), draws, theory):
        E, v = np.asarray(E), np.asarray(v)
        mc = fv.monte_carlo(E, B)
        # unbiased: trace (a scalar with known mean tr F) and every entry
        tr = fv.monte_carlo(np.trace(E, axis1=1, axis2=2)[:, None], B)
        z_tr = (tr.mean[0] - np.trace(F)) / tr.mean_se[0]
        assert abs(z_tr) < Z_SCALAR, (model, name, k, z_tr)
        z_mean = fv.z_scores(mc.mean, F, mc.mean_se, v)
        assert np.nanmax(np.abs(z_mean)) < Z_ENTRY, (model, name, np.nanmax(np.abs(z_mean)))
        # variance: total E||F̂ − F||²_F and every entry
        z_tot = (mc.total_var - v.sum()) / mc.total_var_se
        assert abs(z_tot) < Z_SCALAR, (model, name, k, z_tot)
        z_var = fv.z_scores(mc.var, v, mc.var_se, v)
        assert np.nanmax(np.abs(z_var)) < Z_ENTRY, (model, name, np.nanmax(np.abs(z_var)))
        zero = ~np.isfinite(z_var)  # closed form 0 (readout weights for F̂₂): MC exactly deterministic
        assert np.all(np.sqrt(mc.var[zero]) <= 1e-12 * np.max(np.abs(F)))


def test_monte_carlo_detects_a_wrong_closed_form():
    """The MC comparison has power: the Gaussian F̂₁ variance without the F_ij² term is rejected."""
    f, theta, X, d = _setup("gaussian")
    n = X.shape[0]
    jac = np.asarray(d.jac)
    wrong = sum(np.outer(np.diag(Fn), np.diag(Fn)) for Fn in np.einsum("nai,naj->nij", jac, jac)) / n**2
    mc = fv.monte_carlo(np.asarray(fv.sample_estimates("gaussian", f, theta, X, 1, R, seed=3)[0]), B)
    assert abs(mc.total_var - wrong.sum()) / mc.total_var_se > 2 * Z_SCALAR  # measured z = 9.9


def test_hessian_estimator_deterministic_iff_model_linear_in_parameters():
    """F̂₂ = JᵀΛJ − Σ ū_c ∇²f_c: variance exactly 0 for f linear in θ (one Dense layer), not for a
    two-layer net, even one with a linear activation (f is then bilinear in θ)."""
    for model in fv.MODELS:
        f, theta, X, d = _setup(model, depth=1)
        cf = fv.closed_form_variance(model, d)
        assert np.all(np.asarray(cf.hessian) == 0) and np.max(np.asarray(cf.score)) > 1e-3
        F1, F2 = (np.asarray(a) for a in fv.sample_estimates(model, f, theta, X, 1, 50, seed=0))
        assert np.max(np.std(F2, axis=0)) <= 1e-14 * np.max(np.abs(F2))
        assert np.max(np.std(F1, axis=0)) > 1e-2 * np.max(np.abs(F1))
        for activation in ("linear", "erf"):
            f, theta, X, d = _setup(model, depth=2, activation=activation)
            v2 = np.asarray(fv.closed_form_variance(model, d).hessian)
            _, F2 = fv.sample_estimates(model, f, theta, X, 1, 50, seed=0)
            assert np.max(v2) > 1e-4 * np.max(np.asarray(fv.closed_form_variance(model, d).score))
            assert np.max(np.std(np.asarray(F2), axis=0)) > 1e-3


# ---------------------------------------------------------------------------------------------
# the sampled-Fisher step
# ---------------------------------------------------------------------------------------------
def _gamma_moment(k, g):
    from scipy import integrate, stats

    pdf = stats.gamma(k / 2, scale=2 / k).pdf  # q = χ²_k / k
    return sum(integrate.quad(lambda q: g(q) * pdf(q), a, b, limit=400)[0] for a, b in ((0, 1), (1, np.inf)))


@pytest.mark.parametrize("k", [5, 6, 9, 20, 64])
def test_sf_closed_forms_against_quadrature(k):
    scatter = _gamma_moment(k, lambda q: (1 / q - 1) ** 2)
    inv1, inv2 = _gamma_moment(k, lambda q: 1 / q), _gamma_moment(k, lambda q: 1 / q**2)
    assert fv.sf_scatter_exact(k) == pytest.approx(scatter, rel=1e-7)
    assert fv.sf_mean_step_ratio(k) == pytest.approx(inv1, rel=1e-8)
    assert fv.sf_cosine_limit(k) == pytest.approx(inv1 / math.sqrt(inv2), rel=1e-7)


def test_sf_closed_forms_infinite_for_small_k():
    assert all(math.isinf(fv.sf_scatter_exact(k)) for k in (1, 2, 3, 4))
    assert all(math.isinf(fv.sf_mean_step_ratio(k)) for k in (1, 2))
    assert fv.sf_cosine_limit(4) == 0.0
    # the truncated integral ∫_ε (1/q − 1)² p(q) dq keeps growing as ε → 0 at k = 4 (log divergence)
    from scipy import integrate, stats

    pdf = stats.gamma(2, scale=0.5).pdf
    cut = [integrate.quad(lambda q: (1 / q - 1) ** 2 * pdf(q), eps, 1, limit=400)[0] for eps in (1e-2, 1e-4, 1e-6)]
    assert cut[1] - cut[0] > 3 and cut[2] - cut[1] > 3


@pytest.fixture(scope="module")
def sf_setup():
    n = 16
    X, Y = nn.datasets.synthetic(n, 4, seed=0)
    net = nn.mlp(depth=3, width=64, in_dim=4)
    theta = np.asarray(net.kernel_fn(X, X, "ntk"), dtype=float)  # NT, for the references
    return nn.layer_kernels(net, X), theta, -Y.reshape(-1), n


def _scatter_stats(steps, ref):
    sc = np.sum((steps - ref) ** 2, axis=1) / (ref @ ref)
    ratio = steps @ ref / (ref @ ref)
    cos = steps @ ref / (np.linalg.norm(steps, axis=1) * np.linalg.norm(ref))
    se = lambda a: a.std(ddof=1) / math.sqrt(a.size)  # noqa: E731
    return (sc.mean(), se(sc)), (ratio.mean(), se(ratio)), (1 - cos.mean(), se(cos))


@pytest.mark.parametrize("k", [64, 256])  # z = 0.71, 0.31 (scatter); 0.27, 0.62 (mean step)
def test_sf_step_scatter_undamped_matches_closed_form(sf_setup, k):
    lk, theta, r, n = sf_setup
    steps = fv.sampled_fisher_steps(lk, r, k, 0.0, range(1000 * k, 1000 * k + 300))
    (sc, sc_se), (ratio, ratio_se), _ = _scatter_stats(steps, r)
    assert abs(sc - fv.sf_scatter_exact(k)) < Z_SCALAR * sc_se, (sc, sc_se, fv.sf_scatter_exact(k))
    assert abs(ratio - fv.sf_mean_step_ratio(k)) < Z_SCALAR * ratio_se, (ratio, ratio_se)
    assert ratio - Z_SCALAR * ratio_se > 1  # biased: E[F̂⁻¹] > F⁻¹ although E[F̂] = F


def test_sf_step_scatter_damped_matches_first_order(sf_setup):
    lk, theta, r, n = sf_setup
    rho, k = 1e-2, 256
    ref = theta @ np.linalg.solve(theta + n * rho * np.eye(n), r)  # damped exact NG, numpy
    steps = fv.sampled_fisher_steps(lk, r, k, rho, range(300))
    (sc, sc_se), _, (omc, omc_se) = _scatter_stats(steps, ref)
    lo_sc, lo_omc = fv.sf_scatter_leading_order(theta, r, rho, k)
    # first order in 1/k: 3 SE plus the O(1/k) relative correction (10/k at ρ = 0)
    assert abs(sc - lo_sc) < Z_SCALAR * sc_se + 10 / k * lo_sc, (sc, sc_se, lo_sc)
    assert abs(omc - lo_omc) < Z_SCALAR * omc_se + 10 / k * lo_omc, (omc, omc_se, lo_omc)
    # ρ > 0 keeps small k finite: the k = 1 scatter is bounded, at ρ = 0 it is not
    small = fv.sampled_fisher_steps(lk, r, 1, rho, range(200))
    assert np.max(np.sum((small - ref) ** 2, axis=1) / (ref @ ref)) < 1e3
    # at ρ = 0 the first-order forms reduce to 2/k and (1/k)(1 − Σr⁴/(Σr²)²)
    lo0 = fv.sf_scatter_leading_order(theta, r, 0.0, k)
    assert lo0[0] == pytest.approx(2 / k, rel=1e-8)
    assert lo0[1] == pytest.approx((1 - np.sum(r**4) / np.sum(r**2) ** 2) / k, rel=1e-8)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_raises_one_line_value_errors(sf_setup):
    f, theta, X, d = _setup("gaussian")
    lk, th_ntk, r, n = sf_setup
    bad = [
        lambda: fv.closed_form_variance("gaussian", d, samples=0),
        lambda: fv.closed_form_variance("poisson", d),
        lambda: fv.closed_form_variance("gaussian", d._replace(hess=d.hess[:, :, :-1])),
        lambda: fv.closed_form_variance("gaussian", d._replace(jac=d.jac[:1])),
        lambda: fv.closed_form_variance("gaussian", d._replace(outputs=d.outputs.at[0, 0].set(jnp.nan))),
        lambda: fv.closed_form_variance("softmax", _setup("gaussian", out_dim=1)[3]),
        lambda: fv.variance_from_moments(d, np.eye(2), np.zeros((2,) * 4)),
        lambda: fv.sample_estimates("gaussian", f, theta, X, samples=0, replicates=4),
        lambda: fv.sample_estimates("gaussian", f, theta, X[:, :2], samples=1, replicates=4),
        lambda: fv.sample_estimates("gaussian", f, theta, X, samples=1, replicates=4, seed=-1),
        lambda: fv.network_derivatives(f, theta[None], X),
        lambda: fv.network_derivatives(f, theta, X[:, :2]),
        lambda: fv.sample_estimates("softmax", *_setup("gaussian", out_dim=1)[:3], samples=1, replicates=4),
        lambda: fv.monte_carlo(np.zeros((10, 2, 2)), 3),
        lambda: fv.sf_scatter_exact(0),
        lambda: fv.sf_scatter_leading_order(th_ntk, r[:-1], 0.0, 4),
        lambda: fv.sf_scatter_leading_order(th_ntk, r, -1.0, 4),
        lambda: fv.sf_scatter_leading_order(th_ntk, np.zeros_like(r), 0.0, 4),
        lambda: fv.sampled_fisher_steps(lk, r, 0, 0.0, [0]),
        lambda: fv.sampled_fisher_steps(lk, r[:-1], 4, 0.0, [0]),
        lambda: fv.sampled_fisher_steps(lk, r, 4, float("nan"), [0]),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value), (i, str(err.value))
