"""Softmax numerics at saturation (THEORY.md "Saturation"): the loss, its gradient, the Fisher Λ = diag(p) − ppᵀ
and the whitening (R_n, u_n) stay finite and accurate for logit gaps from 5 to 1e5.

References, independent of :mod:`ntk_ngd.losses`:

* C = 2, a closed form derived on paper (numpy only): with gap d = f_1 − f_2, log p_1 = −log1p(e^{−d}),
  log p_2 = −d − log1p(e^{−d}), Λ = p_1p_2 [[1, −1], [−1, 1]], R = √(p_1p_2)·(1, −1) (V = (1, −1)/√2),
  u = −√(p_2/p_1) = −e^{−d/2} for y = e_1 and u = +e^{d/2} for y = e_2 (+inf once e^{d/2} overflows).
* C = 4, mpmath at 80 digits (skipped without mpmath): p and q_c = Σ_{d≠c} p_d in arbitrary exponent range,
  S = VᵀΛV by mp.eigsy, R = S^{1/2}Vᵀ and u = −R(y ⊘ p) (no inverse of S: accurate when S is nearly singular).

Error model, fixed before the runs: the inputs are exact floats; every computed quantity is a few exponentials
and logarithms of arguments of size ≤ 1 + d, each carrying an absolute error ≤ eps·(1 + d) (the condition
number of e^{−d}), so the relative error is ≤ K·eps·(1 + d) with K = 8 for the closed forms; the C = 4 whitening
adds the eigen-solve of S̃ (backward error ~ (C−1)·eps·||S̃||, amplified by at most κ(S̃) in S̃^{±1/2}):
K = 16·C·κ(S̃), κ taken from the mpmath reference. Values whose exact size is subnormal are compared to
an absolute 4 × the smallest subnormal.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_ngd import losses as ce

EPS = np.finfo(float).eps
TINY = 4 * np.finfo(float).smallest_subnormal
GAPS = [5.0, 50.0, 500.0, 745.0, 800.0, 2000.0, 1e5]


def _close(a, b, tol):
    """|a − b| ≤ tol·|b| + TINY entry-wise, with equal infinities allowed (an overflowing exact value)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    same_inf = np.isinf(b) & (a == b)
    with np.errstate(invalid="ignore"):  # inf − inf where both overflow
        diff = np.where(same_inf, 0.0, np.abs(a - b))
    ok = same_inf | (diff <= tol * np.abs(b) + TINY)
    return bool(np.all(ok)), float(np.max(diff / np.maximum(np.abs(b), TINY)))


# ---------------------------------------------------------------------------------------------
# C = 2: closed forms (no extra package)
# ---------------------------------------------------------------------------------------------
def _binary_closed_form(d):
    """(log p, p, Λ_11 = p_1p_2, R row, u for y = e_1, u for y = e_2) at logits (d + 1/4, 1/4), numpy float64."""
    l1p = np.log1p(np.exp(-d))
    logp = np.array([-l1p, -d - l1p])
    with np.errstate(over="ignore"):
        u_wrong = np.exp(d / 2)  # +inf once it overflows (d > 1419.6): the exact value is not representable
    sqrt_pp = np.exp(-d / 2 - l1p)
    return logp, np.exp(logp), np.exp(-d - 2 * l1p), sqrt_pp * np.array([1.0, -1.0]), -np.exp(-d / 2), u_wrong


@pytest.mark.parametrize("gap", GAPS)
def test_binary_softmax_matches_the_closed_form(gap):
    f = np.array([[gap + 0.25, 0.25], [gap + 0.25, 0.25]])  # the gap is exact in float64
    Y = np.eye(2)
    logp, p, pp, R_row, u_right, u_wrong = _binary_closed_form(gap)
    tol = 8 * EPS * (1 + gap)
    checks = {
        "log p": (ce.log_probabilities(f)[0], logp),
        "p": (ce.probabilities(f)[0], p),
        "loss (y = e_1)": (ce.loss(f[:1], Y[:1]), -logp[0]),
        "loss (y = e_2)": (ce.loss(f[1:], Y[1:]), -logp[1]),
        "g (y = e_1)": (ce.logit_gradient(f[:1], Y[:1])[0], np.array([-p[1], p[1]])),
        "Lambda": (ce.fisher_blocks(f)[0], pp * np.array([[1.0, -1.0], [-1.0, 1.0]])),
    }
    R, u, g = ce.whitening(f, Y)
    checks["R"] = (R[0, 0], R_row)
    checks["u (y = e_1)"] = (u[0, 0], u_right)
    checks["u (y = e_2)"] = (u[1, 0], u_wrong)
    for name, (got, want) in checks.items():
        ok, err = _close(got, want, tol)
        assert ok, f"{name} at gap {gap:g}: relative error {err:.2e} > {tol:.2e}"
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.isfinite(np.asarray(R)))


def test_u_is_zero_not_nan_where_the_exact_value_underflows():
    """The case of issue 25 (NaN before): gap 2000, label on the top class: exact u = −e^{−1000}, which rounds to 0."""
    f = np.array([[2000.0, 0.0, 0.0]])
    R, u, g = ce.whitening(f, np.eye(3)[[0]])
    assert np.all(np.asarray(u) == 0.0) and np.all(np.asarray(R) == 0.0)
    xi = ce.CROSS_ENTROPY.sample_scores(jax.random.PRNGKey(0), jnp.asarray(f), 6)
    assert np.all(np.isfinite(np.asarray(xi)))


# ---------------------------------------------------------------------------------------------
# C = 4: mpmath reference
# ---------------------------------------------------------------------------------------------
def _mp_reference(mp, f, y):
    """(log p, Λ, R, u, κ(S)) at 80 digits: module docstring (u = −R(y ⊘ p), no inverse of S)."""
    c = len(f)
    f = [mp.mpf(float(x)) for x in f]
    y = [mp.mpf(float(x)) for x in y]
    top = max(f)  # log p_c = (f_c − f_t) − log1p(Σ_{d≠t} e^{f_d − f_t}): 80 digits resolve log p_t ≈ −e^{−gap}
    t = f.index(top)
    lse = mp.log1p(mp.fsum(mp.exp(x - top) for d, x in enumerate(f) if d != t))
    logp = [x - top - lse for x in f]
    p = [mp.exp(x) for x in logp]
    q = [mp.fsum(p[d] for d in range(c) if d != i) for i in range(c)]
    lam = mp.matrix(c, c)
    for i in range(c):
        for j in range(c):
            lam[i, j] = p[i] * q[i] if i == j else -p[i] * p[j]
    V = mp.matrix(c, c - 1)
    for k in range(1, c):
        for i in range(k):
            V[i, k - 1] = 1 / mp.sqrt(k * (k + 1))
        V[k, k - 1] = -k / mp.sqrt(k * (k + 1))
    E, Q = mp.eigsy(V.T * lam * V)
    R = Q * mp.diag([mp.sqrt(max(e, 0)) for e in E]) * Q.T * V.T  # an unresolved e^{-2000} eigenvalue: ±1e-80
    u = -(R * mp.matrix([y[i] / p[i] if y[i] else 0 for i in range(c)]))
    kappa = max(E) / min(E) if min(E) > 0 else mp.inf
    return ([float(x) for x in logp], np.array(lam.tolist(), dtype=float), np.array(R.tolist(), dtype=float),
            np.array([float(x) for x in u]), float(kappa))


LABELS = {"top class": [1.0, 0.0, 0.0, 0.0], "second class": [0.0, 1.0, 0.0, 0.0], "soft": [0.7, 0.1, 0.1, 0.1]}


@pytest.fixture(scope="module")
def mp():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 80
    return mpmath


@pytest.mark.parametrize("gap", GAPS)
def test_four_class_whitening_matches_mpmath(mp, gap):
    f = np.array([gap, 0.0, -0.5, 0.25])  # one saturated top class; the others within e^{0.75} of each other
    Y = np.array(list(LABELS.values()))
    F = np.tile(f, (len(Y), 1))
    R, u, g = (np.asarray(a) for a in ce.whitening(F, Y))
    lam = np.asarray(ce.fisher_blocks(F))
    for n, name in enumerate(LABELS):
        logp_ref, lam_ref, R_ref, u_ref, kappa = _mp_reference(mp, f, Y[n])
        tol = 8 * EPS * (1 + gap)
        ok, err = _close(ce.log_probabilities(F)[n], logp_ref, tol)
        assert ok, f"log p at gap {gap:g}: {err:.2e}"
        ok, err = _close(lam[n], lam_ref, tol)
        assert ok, f"Lambda at gap {gap:g}: {err:.2e}"
        tol_w = 16 * len(f) * kappa * tol
        scale_R = np.max(np.abs(R_ref))
        if scale_R > 0:  # norm-wise (the eigen-solve's error is norm-wise)
            assert np.max(np.abs(R[n] - R_ref)) <= tol_w * scale_R, f"R at gap {gap:g}"
        else:
            assert np.all(R[n] == 0.0)
        if np.all(np.isfinite(u_ref)) and np.max(np.abs(u_ref)) > 0:
            err = np.max(np.abs(u[n] - u_ref)) / np.max(np.abs(u_ref))
            assert err <= tol_w, f"u ({name}) at gap {gap:g}: {err:.2e} > {tol_w:.2e}"
        else:  # exact value underflows (0) or overflows (inf in float64)
            ok, err = _close(u[n], u_ref, tol_w)
            assert ok, f"u ({name}) at gap {gap:g}: {u[n]} vs {u_ref}"


def test_underflowed_class_gives_the_pseudo_inverse_limit(mp):
    """p_3 = e^{−2000} underflows next to p_2 = e^{−10}: S_n is singular in float64; with y_3 = 0 the exact u is
    the ρ → 0⁺ limit, whose component along the vanishing direction is ~e^{−1000} → 0 (THEORY.md "Saturation")."""
    f = np.array([10.0, 0.0, -1990.0])
    for y in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]):
        _, _, R_ref, u_ref, _ = _mp_reference(mp, f, y)
        R, u, _ = (np.asarray(a)[0] for a in ce.whitening(f[None], np.array([y])))
        # the resolved part of S (classes 1, 2) is one eigenvalue 2p_1p_2 (κ = 1); the other is cut to exactly 0
        tol = 16 * 3 * 8 * EPS * (1 + 10)
        assert np.all(np.isfinite(u)) and np.max(np.abs(u - u_ref)) <= tol * np.max(np.abs(u_ref)), (y, u, u_ref)
        assert np.max(np.abs(R - R_ref)) <= tol * np.max(np.abs(R_ref))


# ---------------------------------------------------------------------------------------------
# jit / grad / vmap keep working at saturation
# ---------------------------------------------------------------------------------------------
def test_jit_grad_and_vmap_are_finite_at_saturation():
    f = jnp.array([[1e5, 0.0, -0.5], [800.0, 0.0, 1.0], [3.0, 1.0, 0.0]])
    Y = jnp.eye(3)[jnp.array([0, 0, 2])]
    eager = ce.whitening(f, Y)
    jitted = jax.jit(ce.whitening)(f, Y)
    batched = jax.jit(jax.vmap(lambda fi, yi: ce.whitening(fi[None], yi[None])[1][0]))(f, Y)
    for a, b in list(zip(eager, jitted)) + [(eager[1], batched)]:  # row-wise, relative to each row's size
        a, b = np.asarray(a).reshape(3, -1), np.asarray(b).reshape(3, -1)
        scale = np.max(np.abs(a), axis=1)
        assert np.all(np.max(np.abs(a - b), axis=1) <= 1e-13 * scale)
    # one gradient through loss, R and u (0·x keeps a NaN in x's gradient visible); rows are independent,
    # so row 2 of it is d||u_2||^2/df_2
    grads = np.asarray(jax.jit(jax.grad(lambda z: jnp.sum(ce.whitening(z, Y)[1] ** 2) + 0.0 * ce.loss(z, Y)
                                + 0.0 * jnp.sum(ce.whitening(z, Y)[0])))(f))
    assert np.all(np.isfinite(grads))
    # ||u||^2 = (1 - p_y)/p_y = 1/p_y - 1 (one-hot), so d/df = -(e_y - p)/p_y at the non-saturated row
    p = np.asarray(ce.probabilities(f))[2]
    g_chi = grads[2]
    want = -(1.0 / p[2]) * (np.eye(3)[2] - p)
    assert np.max(np.abs(np.asarray(g_chi) - want)) <= 1e-12 * np.max(np.abs(want))


@pytest.mark.parametrize("gap", [5.0, 50.0, 500.0, 700.0])
def test_dense_reference_agrees_while_its_fisher_is_representable(gap):
    """The dense reference (autodiff g, Λ relative to the top logit; eigh of the unscaled S; a least-squares
    solve for u) against the package, up to gap 700 (beyond ~745 its Λ underflows to 0). Error model: as the C = 4
    test, κ(S) ≤ 4 here (the non-top logits lie within 0.75 of each other)."""
    from ntk_ngd.reference import softmax as ref

    F = np.tile([gap, 0.0, -0.5, 0.25], (3, 1))
    Y = np.array(list(LABELS.values()))
    g_ref, lam_ref = ref.logit_derivatives(F, Y)
    R_ref = ref.whitening_factors(lam_ref)
    u_ref = ref.whiten_vectors(R_ref, g_ref)
    R, u, g = (np.asarray(a) for a in ce.whitening(F, Y))
    tol = 16 * 4 * 4 * 8 * EPS * (1 + gap)
    for n in range(3):
        for name, a, b in (("g", g[n], g_ref[n]), ("Lambda", np.asarray(ce.fisher_blocks(F))[n], lam_ref[n]),
                           ("R", R[n], R_ref[n]), ("u", u[n], u_ref[n])):
            err = np.max(np.abs(a - b)) / np.max(np.abs(b))
            assert err <= tol, f"{name} (row {n}) at gap {gap:g}: {err:.2e} > {tol:.2e}"
