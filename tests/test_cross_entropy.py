"""Cross-entropy NGD in function space (``loss="cross_entropy"`` everywhere; ntk_ngd.losses; THEORY.md
"Cross-entropy NGD in function space"). Every Gram-form number is checked against an independent
computation: the explicit P×P softmax Fisher built from jax.jacrev / jax.hessian (ntk_ngd.reference;
the Gram form vs the reference for every method is tests/test_reference_losses.py), closed forms
derived on paper (exact step η y/p mod 1, K-FAC readout term, per-sample loss rates), autodiff of the
per-sample loss, or brute-force loops."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import types

import ntk_ngd as nn
from ntk_ngd import losses as ce
from ntk_ngd import reference as cd

from conftest import SOFTMAX_C, SOFTMAX_D, SOFTMAX_N  # noqa: E402
from ntk_ngd.isotropy_table import default_methods

TOL = 1e-8
N, C, D = SOFTMAX_N, SOFTMAX_C, SOFTMAX_D  # the conftest fixture `small`


CE = "cross_entropy"


def logit_derivatives(f, Y):
    """(g (N, C), Λ (N, C, C)) by jax.grad / jax.hessian of ℓ(f) = −Σ_c y_c log softmax(f)_c (autodiff)."""
    def ell(z, y):
        return -jnp.sum(y * jax.nn.log_softmax(z))

    f, Y = jnp.asarray(f, jnp.float64), jnp.asarray(Y, jnp.float64)
    return np.asarray(jax.vmap(jax.grad(ell))(f, Y)), np.asarray(jax.vmap(jax.hessian(ell))(f, Y))


def logit_op(net, X, labels, method, params=None, logits=None, X_test=None, damping=0.0, **options):
    """The cross-entropy operator of ``method``: whitened metric, logit step per unit lr (Δf = −lr·step),
    isotropy of the metric, and the logits it was evaluated at."""
    f = (np.zeros((len(X), net.out_dim)) if params is None else np.asarray(net.apply(params, X))) \
        if logits is None else np.asarray(logits)
    step, step_test = nn.function_space.function_step(net, X, method, params=params, damping=damping, X_test=X_test,
                                                      loss=CE, outputs=f, targets=labels, **options)
    if nn.methods.get(method).needs_residual:  # no fixed metric (EF's is infinite at ρ = 0 for C > 2)
        return types.SimpleNamespace(metric=None, step=step, step_test=step_test, alpha=None, deviation=None, logits=f)
    metric = np.asarray(nn.method_kernels(net, X, method, params=params, damping=damping, loss=CE, outputs=f,
                                          **options).train)
    iso = nn.isotropy(metric)
    return types.SimpleNamespace(metric=metric, step=step, step_test=step_test, alpha=iso.alpha,
                                 deviation=iso.deviation, logits=f)


def _sym_root(A):
    w, U = np.linalg.eigh(0.5 * (A + A.T))
    w = np.where(w > A.shape[0] * np.finfo(float).eps * np.abs(w).max(), w, 0.0)
    return (U * np.sqrt(w)) @ U.T


def _probs(f):
    e = np.exp(f - f.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _center(a):
    """Component of each row orthogonal to 1_C (the only part that changes p)."""
    return a - a.mean(axis=-1, keepdims=True)


def _relmax(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------------------------
# softmax likelihood
# ---------------------------------------------------------------------------------------------
def test_fisher_blocks_and_gradient_match_autodiff():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 4)) * 3
    Y = np.eye(4)[[0, 3, 1, 1, 2]]
    g_ad, lam_ad = logit_derivatives(f, Y)
    assert _relmax(ce.fisher_blocks(f), lam_ad) < 1e-14
    assert _relmax(ce.logit_gradient(f, Y), g_ad) < 1e-14
    soft = np.full((5, 4), 0.25)
    assert _relmax(ce.logit_gradient(f, soft), logit_derivatives(f, soft)[0]) < 1e-14


def test_softmax_quantities_stay_accurate_when_confident():
    # 1 − p_y = 2e^{−40}/(1 + 2e^{−40}) ≈ 8.5e-18: p_y − p_y² would be 0 in float64
    f = np.array([[40.0, 0.0, 0.0]])
    q = 2 * np.exp(-40.0) / (1 + 2 * np.exp(-40.0))
    lam = np.asarray(ce.fisher_blocks(f))[0]
    g = np.asarray(ce.logit_gradient(f, np.eye(3)[[0]]))[0]
    assert abs(lam[0, 0] / ((1 - q) * q) - 1) < 1e-12
    assert abs(g[0] / (-q) - 1) < 1e-12
    R, u, _ = ce.whitening(f, np.eye(3)[[0]])
    assert abs(float(np.sum(np.asarray(u) ** 2)) / (q / (1 - q)) - 1) < 1e-10  # (1 − p_y)/p_y


def test_whitening_identities():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(7, 5)) * 2
    labels = rng.integers(0, 5, 7)
    Y = np.eye(5)[labels]
    R, u, g = (np.asarray(a) for a in ce.whitening(f, Y))
    lam = logit_derivatives(f, Y)[1]
    assert _relmax(np.einsum("nkc,nkd->ncd", R, R), lam) < 1e-13  # R_nᵀR_n = Λ_n
    assert np.max(np.abs(R @ np.ones(5))) < 1e-15  # R_n 1 = 0
    assert _relmax(np.einsum("nkc,nk->nc", R, u), g) < 1e-13  # R_nᵀũ_n = g_n
    p = _probs(f)[np.arange(7), labels]
    assert _relmax(np.sum(u**2, axis=1), (1 - p) / p) < 1e-12  # g_nᵀΛ_n⁺g_n = χ²(y‖p)


# ---------------------------------------------------------------------------------------------
# isotropy statements
# ---------------------------------------------------------------------------------------------
def test_exact_step_closed_form_finite_and_infinite_width(small):
    """ρ → 0: Δf_n ≡ η y_n ⊘ p_n (mod 1_C) on training points, at any logits and width."""
    net, params, X, labels, _ = small
    Y = np.eye(C)[labels]
    rng = np.random.default_rng(5)
    for prm, f in ((params, None), (None, rng.normal(size=(N, C)))):
        k = logit_op(net, X, labels, "exact", params=prm, logits=f)
        p = _probs(k.logits)
        assert _relmax(-k.step, _center(Y / p)) < 1e-10
        assert abs(k.alpha - 1) < 1e-10 and k.deviation < 1e-10


def test_block_diag_alpha_is_depth_and_breaks_with_a_narrow_readout():
    X = nn.datasets.sphere(10, 12, seed=0)
    labels = np.arange(10) % 3
    wide = nn.mlp(depth=3, width=24, in_dim=12, out_dim=3, activation="erf")
    for prm in (wide.init(0), None):
        k = logit_op(wide, X, labels, "block_diag", params=prm)
        assert abs(k.alpha - 3) < 1e-8 and k.deviation < 1e-8
    narrow = nn.mlp(depth=3, width=[24, 5], in_dim=12, out_dim=3, activation="erf")  # M + 1 = 6 < N = 10
    k = logit_op(narrow, X, labels, "block_diag", params=narrow.init(0))
    assert abs(k.alpha - (2 + 6 / 10)) < 1e-8  # rank (M+1)(C−1) of N(C−1): α = L − 1 + (M+1)/N
    assert k.deviation > 1e-2


def _kfac_prediction(f, labels, n, depth, readout_scale=1.0):
    """V Θ̃_kfac Vᵀ = N(L−1)Π + s·blockdiag(Λ_n^{1/2} Λ̄⁺ Λ_n^{1/2}) (Λ̄ = mean Λ_n), from p alone."""
    lam = logit_derivatives(f, np.eye(f.shape[1])[labels])[1]
    c = f.shape[1]
    bar_pinv = np.linalg.pinv(lam.mean(axis=0), rcond=1e-12)
    blocks = [n * (depth - 1) * (np.eye(c) - 1.0 / c) + readout_scale * _sym_root(l) @ bar_pinv @ _sym_root(l)
              for l in lam]
    import scipy.linalg

    return scipy.linalg.block_diag(*blocks)


def test_kfac_readout_term_closed_form_infinite_width():
    X, Y = nn.datasets.digits(12, classes=4, seed=0)
    labels = Y.argmax(1)
    net = nn.mlp(depth=3, width=64, in_dim=64, out_dim=4)
    Vb = np.kron(np.eye(12), np.asarray(ce.null_basis(4)))
    k0 = logit_op(net, X, labels, "kfac")  # f = 0: every Λ_n equal -> exactly isotropic
    assert abs(k0.alpha - (12 * 2 + 1)) < 1e-8 and k0.deviation < 1e-10
    f = np.random.default_rng(2).normal(size=(12, 4)) * 2
    for readout, scale, alpha in (("common", 1.0, 25.0), ("paper", 12.0, 36.0)):
        k = logit_op(net, X, labels, "kfac", logits=f, kfac_readout=readout)
        assert _relmax(Vb @ k.metric @ Vb.T, _kfac_prediction(f, labels, 12, 3, scale)) < 1e-8
        assert abs(k.alpha - alpha) < 1e-8
        assert k.deviation > 1e-3  # not isotropic once the Λ_n differ


def test_kfac_finite_width_matches_readout_closed_form(small):
    net, params, X, labels, _ = small
    k = logit_op(net, X, labels, "kfac", params=params)
    Vb = np.kron(np.eye(N), np.asarray(ce.null_basis(C)))
    assert _relmax(Vb @ k.metric @ Vb.T, _kfac_prediction(k.logits, labels, N, 3)) < 1e-8


def test_gd_is_not_isotropic(small):
    net, params, X, labels, _ = small
    assert logit_op(net, X, labels, "gd", params=params).deviation > 0.1


def test_per_sample_first_order_loss_rates(small):
    """g_nᵀΔf_n/η: exact −(1−p_y)/p_y, EF −1, iEF −||g_n||² (ρ = 0, ŨᵀΘ̃Ũ invertible)."""
    net, params, X, labels, _ = small
    f = np.asarray(net.apply(params, X))
    Y = np.eye(C)[labels]
    g = logit_derivatives(f, Y)[0]
    py = _probs(f)[np.arange(N), labels]
    rates = {m: -np.sum(g * logit_op(net, X, labels, m, params=params).step, axis=1)
             for m in ("exact", "ef", "ief")}
    assert _relmax(rates["exact"], -(1 - py) / py) < 1e-10
    assert _relmax(rates["ef"], -np.ones(N)) < 1e-10
    assert _relmax(rates["ief"], -np.sum(g**2, axis=1)) < 1e-10


def test_binary_ief_is_logit_gradient_descent_and_ef_is_rescaled_exact():
    X = nn.datasets.sphere(6, 5, seed=1)
    labels = np.array([0, 1, 1, 0, 1, 0])
    net = nn.mlp(depth=2, width=32, in_dim=5, out_dim=2, activation="erf")
    params = net.init(0)
    f = np.asarray(net.apply(params, X))
    g = logit_derivatives(f, np.eye(2)[labels])[0]
    py = _probs(f)[np.arange(6), labels]
    ief = logit_op(net, X, labels, "ief", params=params).step
    ef = logit_op(net, X, labels, "ef", params=params).step
    exact = logit_op(net, X, labels, "exact", params=params).step
    assert _relmax(ief, _center(g)) < 1e-10  # Δf_n ≡ −η g_n (mod 1)
    assert _relmax(ef, exact * (py / (1 - py))[:, None]) < 1e-10


# ---------------------------------------------------------------------------------------------
# dynamics
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_problem():
    X, Y = nn.datasets.digits(20, classes=5, seed=0)
    net = nn.mlp(depth=3, width=64, in_dim=64, out_dim=5)
    return net, X[:12], Y[:12], X[12:], Y[12:]


def test_exact_dynamics_follow_the_per_sample_recursion(digits_problem):
    net, X, Y, _, _ = digits_problem
    res = nn.simulate(net, X, Y, "exact", steps=8, lr=0.5, loss=CE)
    f = np.zeros_like(Y)
    for _ in range(8):  # f_y += η/p_y, kernel-free
        f = f + 0.5 * Y / _probs(f)
    assert _relmax(_center(res.train_pred[-1]), _center(f)) < 1e-10
    ref_loss = -np.mean(np.log(np.sum(_probs(f) * Y, axis=1)))
    assert abs(res.train_loss[-1] / ref_loss - 1) < 1e-8


def test_block_diag_at_one_over_depth_reproduces_exact_on_train(digits_problem):
    net, X, Y, Xt, _ = digits_problem
    a = nn.simulate(net, X, Y, "exact", steps=6, X_test=Xt, loss=CE)
    b = nn.simulate(net, X, Y, "block_diag", steps=6, X_test=Xt, loss=CE)
    assert b.lr_rule.startswith("1/alpha") and abs(b.lr - 1 / 3) < 1e-10
    assert _relmax(b.train_pred, a.train_pred) < 1e-9
    assert _relmax(b.test_pred, a.test_pred) > 1e-3  # test kernels differ


@pytest.mark.parametrize("method", ["kfac", "ief"])
def test_scan_matches_a_loop_of_one_step_kernels(digits_problem, method):
    net, X, Y, Xt, Yt = digits_problem
    res = nn.simulate(net, X, Y, method, steps=3, lr=0.01 if method == "kfac" else 1.0, X_test=Xt, Y_test=Yt, loss=CE)
    f, ft = np.zeros_like(Y), np.zeros((len(Xt), Y.shape[1]))
    for _ in range(3):
        k = logit_op(net, X, np.argmax(Y, 1), method, X_test=Xt, logits=f)
        f, ft = f - res.lr * k.step, ft - res.lr * k.step_test
    assert _relmax(res.train_pred[-1], f) < 1e-10 and _relmax(res.test_pred[-1], ft) < 1e-10
    assert res.test_loss.shape == (4,) and np.all((res.test_accuracy >= 0) & (res.test_accuracy <= 1))


def test_ef_overshoots_once_the_loss_is_small(digits_problem):
    """EF lowers every sample's loss by η to first order whatever its size (rate −1): with the
    default lr it overshoots once the loss is below η and the run diverges or stalls (the theory's steps: no
    trust region, which would cap both)."""
    net, X, Y, _, _ = digits_problem
    ef = nn.simulate(net, X, Y, "ef", steps=6, loss=CE, trust_region=None)
    exact = nn.simulate(net, X, Y, "exact", steps=6, loss=CE, trust_region=None)
    assert ef.diverged or ef.train_loss[-1] > 10 * exact.train_loss[-1]


@pytest.mark.slow
def test_finite_width_training_approaches_the_logit_dynamics():
    X, Y = nn.datasets.digits(10, classes=4, seed=0)
    devs = []
    for width in (128, 2048):
        net = nn.mlp(depth=2, width=width, in_dim=64, out_dim=4, activation="erf")
        theory = nn.simulate(net, X, Y, "exact", steps=4, lr=0.5, loss=CE)
        run = nn.train(net, net.init(0), X, Y, "exact", lr=0.5, steps=4, center=True, loss=CE)
        devs.append(np.max(np.abs(_center(run.train_pred) - _center(theory.train_pred))))
    assert devs[1] < devs[0] / 3


def test_training_with_centering_starts_at_zero_logits_and_lowers_loss():
    X, Y = nn.datasets.digits(10, classes=4, seed=0)
    net = nn.mlp(depth=2, width=256, in_dim=64, out_dim=4, activation="erf")
    run = nn.train(net, net.init(0), X, Y, "exact", lr=0.5, steps=2, center=True, X_test=X[:3], Y_test=Y[:3],
                   loss=CE)
    assert np.max(np.abs(run.train_pred[0])) == 0 and abs(run.train_loss[0] - np.log(4)) < 1e-12
    assert run.train_loss[2] < run.train_loss[1] < run.train_loss[0]
    theory = nn.simulate(net, X, Y, "exact", steps=2, lr=0.5, loss=CE)
    assert np.max(np.abs(_center(run.train_pred) - _center(theory.train_pred))) < 0.2


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": np.array([0, 1, 3, 0, 1, 2])}, r"labels must lie in 0\.\.2"),
        ({"labels": np.array([0, 1, -1, 0, 1, 2])}, r"labels must lie in 0\.\.2"),
        ({"labels": np.array([0, 1, 2])}, "labels have 3 rows but there are 6 inputs"),
        ({"labels": np.eye(4)[[0, 1, 2, 3, 0, 1]]}, "labels has 4 columns but the network expects 3"),
        ({"labels": np.full((6, 3), 0.5)}, "probability vectors"),
        ({"damping": -1.0}, "damping must be a finite number >= 0"),
        ({"logits": np.full((6, 3), np.nan)}, "outputs contains NaN"),
        ({"logits": np.zeros((6, 2))}, "outputs has 2 columns"),
        ({"kfac_readout": "bogus", "method": "kfac"}, "unknown kfac_readout 'bogus'"),
        ({"pattern": np.eye(3)}, "takes no option"),
    ],
)
def test_bad_input_raises_one_clear_error(small, kwargs, message):
    net, params, X, labels, _ = small
    kw = {"labels": labels, "method": "exact", **kwargs}
    with pytest.raises(ValueError, match=message):
        logit_op(net, X, kw.pop("labels"), kw.pop("method"), params=params, **kw)


def test_bad_input_other_entry_points(small):
    net, params, X, labels, _ = small
    with pytest.raises(ValueError, match="needs a network with >= 2 outputs"):
        logit_op(nn.mlp(depth=2, width=8, in_dim=D, out_dim=1), X, np.zeros(N, int), "exact")
    with pytest.raises(ValueError, match="Y_test given without X_test"):
        nn.simulate(net, X, labels, "exact", steps=1, Y_test=labels, loss=CE)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        nn.simulate(net, X, labels, "exact", steps=1, lr=-1, loss=CE)
    with pytest.raises(ValueError, match="integer labels must be whole numbers"):
        ce.check_labels(np.array([0.5, 1.0]))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_simulate_cross_entropy_digits(capsys):
    import json

    from ntk_ngd.cli import main

    code = main(["simulate", "--loss", "cross_entropy", "--dataset", "digits", "--classes", "10", "--n", "12",
                 "--steps", "3", "--method", "exact", "--method", "ief", "--lr", "1", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["loss"] == "cross_entropy"
    exact = payload["train_loss"]["exact"]
    # infinite width from f = 0, lr = 1 (given: no trust region): every sample's true logit rises by C = 10 in step 1
    assert abs(exact[0] - np.log(10)) < 1e-12 and abs(exact[1] - np.log(1 + 9 * np.exp(-10.0))) < 1e-10
    assert main(["simulate", "--loss", "cross_entropy", "--method", "unit_wise"]) == 2  # infinite width
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unit_wise needs a finite width" in err[0]
    assert main(["simulate", "--loss", "cross_entropy", "--time", "continuous", "--method", "exact"]) == 2


def test_isotropy_cli_cross_entropy_verdicts_follow_theory(capsys):
    """`ntk-ngd isotropy --loss cross_entropy`: every measured verdict of RΘ_GRᵀ equals the one predicted
    from ranks and the Λ_n alone; α checked against the paper values written here (1, L, N(L−1)+1 with
    N = 6); K-FAC is isotropic at infinite width (f = 0: equal Λ_n) and not at finite width (Λ_n differ)."""
    import json as _json

    from ntk_ngd.cli import main as cli_main

    code = cli_main(["isotropy", "--loss", "cross_entropy", "--depths", "2,3", "--widths", "48,inf", "--n", "6",
                     "--in-dim", "8", "--classes", "3", "--json"])
    payload = _json.loads(capsys.readouterr().out)
    assert code == 0 and payload["loss"] == "cross_entropy"
    rows = payload["rows"]
    assert len(rows) == 2 * 2 * len(default_methods())
    for r in rows:
        if r["alpha"] is None or r["theory_silent"]:  # n/a (e.g. EF with C − 1 > 1 rows at damping 0) or silent
            continue
        assert r["isotropic"] == r["predicted_isotropic"], r
        expected = {"exact": 1, "block_diag": r["depth"], "block_tridiag": -(-r["depth"] // 3),
                    "kfac": 6 * (r["depth"] - 1) + 1}.get(r["method"])
        if r["isotropic"] and expected is not None:
            assert abs(r["alpha"] - expected) <= 1e-8 * expected and r["deviation"] <= 1e-8, r
    kfac = {r["width"]: r for r in rows if r["method"] == "kfac" and r["depth"] == 3}
    assert kfac["inf"]["isotropic"] and not kfac[48]["isotropic"]
    assert "differ across samples" in kfac[48]["failed"]
