"""Tests of the dense parameter-space reference, MSE (ntk_ngd/reference/, importable as ``ntk_ngd.dense``).

Every asserted number is compared with a computation that does not go through the function
under test: neural-tangents' empirical NTK, jax.jacrev on neural-tangents' own parameter
pytree, a hand-written numpy forward/backward pass, or a closed form derived in THEORY.md.
"""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf

import ntk_ngd  # noqa: F401  (enables float64)
from ntk_ngd import dense
from conftest import HAVE_NT, requires_nt
from ntk_ngd.networks import mlp

TOL = 1e-10


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------
def make(depth=2, width=6, in_dim=3, out_dim=1, n=4, n_test=3, activation="erf", bias=True, seed=0):
    net = mlp(depth=depth, width=width, in_dim=in_dim, out_dim=out_dim, activation=activation, bias=bias,
              w_std=1.3, b_std=0.4)
    params = net.init(seed)
    rng = np.random.default_rng(100 + seed)
    X = rng.standard_normal((n, in_dim))
    Xt = rng.standard_normal((n_test, in_dim))
    Y = rng.standard_normal((n, out_dim))
    return net, params, X, Xt, Y


def nt_ntk(net, params, X, Xt=None, implementation=1):
    """neural-tangents' empirical NTK (Θ(X, X), Θ(Xt, X) or None) as (N·C)-row matrices, rows
    n·C + c; one NT call on the stacked inputs (one compilation). Without NT (current jax): the sum of
    the pytree-Jacobian blocks of :func:`pytree_layer_ntks`, equally independent of dense's flattening."""
    if not HAVE_NT:
        layers, layers_t = pytree_layer_ntks(net, params, X, Xt)
        return sum(layers), (None if Xt is None else sum(layers_t))
    import neural_tangents as nt

    fn = nt.empirical_ntk_fn(net.apply, trace_axes=(), implementation=implementation)
    Xa = X if Xt is None else np.vstack([X, Xt])
    K = np.asarray(fn(Xa, None, params))  # (Na, Na, C, C)
    na, _, C, _ = K.shape
    K = K.transpose(0, 2, 1, 3).reshape(na * C, na * C)
    n = X.shape[0] * C
    return K[:n, :n], (None if Xt is None else K[n:, :n])


def pytree_layer_jacobians(net, params, X):
    """Per Dense layer, (dW, db) = jacrev of net.apply w.r.t. NT's own params pytree, reshaped
    to (N·C, fan_in, fan_out) and (N·C, fan_out) (db None without bias)."""
    jac = jax.jit(jax.jacrev(net.apply))(params, X)
    N, C = X.shape[0], net.out_dim
    out = []
    for l in range(net.depth):
        dW, db = jac[2 * l]
        dW = np.asarray(dW).reshape(N * C, *np.shape(params[2 * l][0]))
        db = None if db is None else np.asarray(db).reshape(N * C, -1)
        out.append((dW, db))
    return out


def pytree_layer_ntks(net, params, X, Xt=None):
    """Per layer Θ_l(X, X) and Θ_l(Xt, X) (or None) from the pytree Jacobians (independent of
    dense's flattening), one Jacobian of the stacked inputs."""
    Xa = X if Xt is None else np.vstack([X, Xt])
    n = X.shape[0] * net.out_dim
    train, test = [], []
    for w, b in pytree_layer_jacobians(net, params, Xa):
        K = np.einsum("aij,bij->ab", w, w)
        if b is not None:
            K = K + b @ b.T
        train.append(K[:n, :n])
        test.append(K[n:, :n])
    return train, (None if Xt is None else test)


def numpy_signals(net, params, X):
    """Hand-written numpy forward/backward: scaled inputs h̃_l (N, fan_in+bias) and δ_l (N, C, fan_out)."""
    phi = {"relu": lambda z: np.maximum(z, 0), "erf": erf, "linear": lambda z: z}[net.activation]
    dphi = {"relu": lambda z: (z > 0).astype(float), "erf": lambda z: 2 / np.sqrt(np.pi) * np.exp(-z**2),
            "linear": np.ones_like}[net.activation]
    Ws = [np.asarray(params[2 * l][0]) for l in range(net.depth)]
    bs = [None if params[2 * l][1] is None else np.asarray(params[2 * l][1]).reshape(-1) for l in range(net.depth)]
    h, hs, zs = np.asarray(X, float), [], []
    for l in range(net.depth):
        c = net.w_std / np.sqrt(h.shape[1])
        z = c * h @ Ws[l] + (net.b_std * bs[l] if net.bias else 0)
        hs.append(np.hstack([c * h, np.full((h.shape[0], 1), net.b_std)]) if net.bias else c * h)
        zs.append(z)
        h = phi(z) if l < net.depth - 1 else z
    N, C = X.shape[0], net.out_dim
    deltas = [None] * net.depth
    deltas[-1] = np.broadcast_to(np.eye(C), (N, C, C)).copy()
    for l in range(net.depth - 2, -1, -1):
        c = net.w_std / np.sqrt(Ws[l + 1].shape[0])
        deltas[l] = np.einsum("ncj,ij->nci", deltas[l + 1], c * Ws[l + 1]) * dphi(zs[l])[:, None, :]
    return hs, deltas


def iso(K):
    a = np.trace(K) / K.shape[0]
    return a, np.linalg.norm(K - a * np.eye(K.shape[0])) / (abs(a) * np.sqrt(K.shape[0]))


def err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---------------------------------------------------------------------------------------------
# Jacobian and conventions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "depth,width,in_dim,out_dim,bias,act,impl",
    [(1, 3, 3, 2, True, "relu", 1), (2, 5, 3, 2, True, "relu", 2), (3, [4, 6], 2, 1, False, "erf", 1),
     (3, 3, 4, 3, True, "linear", 2)],
)
@requires_nt
def test_jacobian_matches_neural_tangents(depth, width, in_dim, out_dim, bias, act, impl):
    net, params, X, Xt, _ = make(depth, width, in_dim, out_dim, n=4, n_test=3, activation=act, bias=bias)
    J, Jt = dense.jacobian(net, params, X), dense.jacobian(net, params, Xt)
    assert J.shape == (4 * out_dim, net.num_params)
    theta, theta_t = nt_ntk(net, params, X, Xt, impl)
    assert err(J @ J.T, theta) < TOL
    assert err(Jt @ J.T, theta_t) < TOL
    # column ordering: layer l's W̃ = [W; b] row-major, from the pytree Jacobian entry by entry
    for sl, (dW, db) in zip(dense.layer_slices(net), pytree_layer_jacobians(net, params, X)):
        ref = dW if db is None else np.concatenate([dW, db[:, None, :]], axis=1)
        assert np.array_equal(J[:, sl], ref.reshape(J.shape[0], -1))


def test_flatten_roundtrip_and_slices():
    net, params, X, _, _ = make(depth=3, width=[4, 5], in_dim=2, out_dim=2)
    theta = dense.flatten_params(net, params)
    assert theta.shape == (net.num_params,) == (3 * 4 + 5 * 5 + 6 * 2,)
    assert [s.stop - s.start for s in dense.layer_slices(net)] == [12, 25, 12]
    W2, b2 = params[2]
    assert theta[12 + 1 * 5 + 3] == W2[1, 3] and theta[12 + 4 * 5 + 2] == np.ravel(b2)[2]
    back = dense.unflatten_params(net, theta)
    assert err(net.apply(back, X), net.apply(params, X)) == 0


@settings(max_examples=3, deadline=None)
@given(depth=st.integers(1, 3), width=st.integers(3, 6), out_dim=st.integers(1, 2), bias=st.booleans(),
       seed=st.integers(0, 50))
def test_jacobian_and_exact_ngd_random_nets(depth, width, out_dim, bias, seed):
    net, params, X, Xt, _ = make(depth, width, 3, out_dim, n=3, n_test=2, activation="erf", bias=bias, seed=seed)
    J = dense.jacobian(net, params, X)
    theta, theta_t = nt_ntk(net, params, X, Xt)
    assert err(J @ J.T, theta) < TOL
    if np.linalg.matrix_rank(theta) == theta.shape[0] and np.linalg.cond(theta) < 1e5:
        K, Kt = dense.preconditioned_kernel(net, params, X, "exact", X_test=Xt)
        assert err(K, np.eye(K.shape[0])) < 1e-7
        assert err(Kt, theta_t @ np.linalg.inv(theta)) < 1e-6


# ---------------------------------------------------------------------------------------------
# Exact NGD (claim 1), gradient descent
# ---------------------------------------------------------------------------------------------
def test_exact_ngd_kernel_pinv_and_damped():
    net, params, X, Xt, Y = make(depth=2, width=8, in_dim=3, out_dim=2, n=4, n_test=3)
    theta, theta_t = nt_ntk(net, params, X, Xt)
    N = X.shape[0]
    K, Kt = dense.preconditioned_kernel(net, params, X, "exact", X_test=Xt)
    assert err(K, np.eye(8)) < 1e-8
    assert err(Kt, theta_t @ np.linalg.inv(theta)) < 1e-8
    rho = 0.03
    K, Kt = dense.preconditioned_kernel(net, params, X, "exact", damping=rho, X_test=Xt)
    assert err(K, theta @ np.linalg.inv(theta + N * rho * np.eye(8))) < TOL
    assert err(Kt, theta_t @ np.linalg.inv(theta + N * rho * np.eye(8))) < TOL
    # one exact-NG step with lr = 1 removes the linearised residual
    r = np.asarray(net.apply(params, X)) - Y
    step, step_t = dense.function_step(net, params, X, Y, "exact", 0.7, X_test=Xt)
    assert err(step, -0.7 * r) < 1e-8
    assert err(step_t.reshape(-1), -0.7 * theta_t @ np.linalg.solve(theta, r.reshape(-1))) < 1e-8


def test_gd_kernel_and_step():
    net, params, X, Xt, Y = make(depth=3, width=5, in_dim=3, out_dim=2, n=3)
    K, Kt = dense.preconditioned_kernel(net, params, X, "gd", X_test=Xt)
    theta, theta_t = nt_ntk(net, params, X, Xt)
    assert err(K, theta / 3) < TOL
    assert err(Kt, theta_t / 3) < TOL
    r = (np.asarray(net.apply(params, X)) - Y).reshape(-1)
    step, _ = dense.function_step(net, params, X, Y, "gd", 0.2)
    assert err(step.reshape(-1), -0.2 * theta @ r / 3) < TOL


# ---------------------------------------------------------------------------------------------
# Layer-structured approximations (claim 2)
# ---------------------------------------------------------------------------------------------
def pattern_prediction(S, layer_train, layer_test):
    """Σ_ab [S⁺]_ab Θ_a(x', X) Θ_a(X, X)⁻¹ (THEORY.md claim 2, each Θ_a invertible)."""
    Sp = np.linalg.pinv(S)
    per = [Tt @ np.linalg.inv(T) for T, Tt in zip(layer_train, layer_test)]
    return sum(Sp[a, b] * per[a] for a in range(len(per)) for b in range(len(per)))


def test_block_diag_is_L_times_identity():
    net, params, X, Xt, _ = make(depth=3, width=6, in_dim=5, out_dim=1, n=4)
    layers, layers_t = pytree_layer_ntks(net, params, X, Xt)
    assert all(np.linalg.matrix_rank(T) == 4 for T in layers)  # every J_l of full row rank
    K, Kt = dense.preconditioned_kernel(net, params, X, "block_diag", X_test=Xt)
    assert err(K, 3 * np.eye(4)) < 1e-8
    assert err(Kt, pattern_prediction(np.eye(3), layers, layers_t)) < 1e-8
    # damped: Σ_l Θ_l (Θ_l + Nρ)⁻¹ on training points
    K, _ = dense.preconditioned_kernel(net, params, X, "block_diag", damping=0.05)
    assert err(K, sum(T @ np.linalg.inv(T + 4 * 0.05 * np.eye(4)) for T in layers)) < TOL


def psd_sqrt(T):
    lam, V = np.linalg.eigh(T)
    return (V * np.sqrt(lam)) @ V.T


def gram_pattern_prediction(S, layer_train, layer_test):
    """Θ_G(x', X) for any pattern S (singular too), derived on paper from D = T^{1/2} W with W
    of orthonormal rows, T = blockdiag_a Θ_a: Θ_G(x', X) = E' Q T^{1/2} (T^{1/2} (S⊗I) T^{1/2})⁺
    T^{1/2} Eᵀ, Q = blockdiag_a Θ_a(x', X) Θ_a⁻¹, E = 1ᵀ ⊗ I. Reduces to the S⁻¹ form when S is
    invertible."""
    L, n, nt = len(layer_train), layer_train[0].shape[0], layer_test[0].shape[0]
    Th = np.zeros((L * n, L * n))
    Q = np.zeros((L * nt, L * n))
    for a, (T, Tt) in enumerate(zip(layer_train, layer_test)):
        Th[a * n:(a + 1) * n, a * n:(a + 1) * n] = psd_sqrt(T)
        Q[a * nt:(a + 1) * nt, a * n:(a + 1) * n] = Tt @ np.linalg.inv(T)
    core = Th @ np.linalg.pinv(Th @ np.kron(S, np.eye(n)) @ Th, rcond=1e-12, hermitian=True) @ Th
    E, Et = np.kron(np.ones((1, L)), np.eye(n)), np.kron(np.ones((1, L)), np.eye(nt))
    return E @ core @ E.T, Et @ Q @ core @ E.T


@pytest.mark.parametrize("L", [3, 4, 5])
def test_block_tridiag_alpha_ceil_L_over_3(L):
    net, params, X, Xt, _ = make(depth=L, width=6, in_dim=4, out_dim=1, n=3, seed=2)
    layers, layers_t = pytree_layer_ntks(net, params, X, Xt)
    assert all(np.linalg.matrix_rank(T) == 3 for T in layers)
    S = (np.abs(np.subtract.outer(np.arange(L), np.arange(L))) <= 1).astype(float)
    assert math.ceil(L / 3) == round(np.ones(L) @ np.linalg.pinv(S) @ np.ones(L))
    K, Kt = dense.preconditioned_kernel(net, params, X, "block_tridiag", X_test=Xt)
    assert err(K, math.ceil(L / 3) * np.eye(3)) < 1e-8  # isotropic, also for singular S (L = 5)
    gram_train, gram_test = gram_pattern_prediction(S, layers, layers_t)
    assert err(K, gram_train) < 1e-8 and err(Kt, gram_test) < 1e-8
    if np.linalg.matrix_rank(S) == L:  # THEORY.md claim 2's test-point form Σ [S⁻¹]_ab Θ_a(x')Θ_a⁻¹
        assert err(Kt, pattern_prediction(S, layers, layers_t)) < 1e-8
    else:  # L ≡ 2 (mod 3): with S⁺ in place of S⁻¹ that form is wrong on test points
        assert err(Kt, pattern_prediction(S, layers, layers_t)) > 1e-2


def test_patterns_that_equal_exact():
    net, params, X, Xt, _ = make(depth=3, width=5, in_dim=3, out_dim=2, n=3)
    ref = dense.preconditioned_kernel(net, params, X, "exact", damping=0.01, X_test=Xt)
    got = dense.preconditioned_kernel(net, params, X, "pattern", damping=0.01, X_test=Xt, pattern=np.ones((3, 3)))
    assert err(got[0], ref[0]) < TOL and err(got[1], ref[1]) < TOL
    # a pattern equal to the identity is block_diag
    ref = dense.preconditioned_kernel(net, params, X, "block_diag", damping=0.01, X_test=Xt)
    got = dense.preconditioned_kernel(net, params, X, "pattern", damping=0.01, X_test=Xt, pattern=np.eye(3))
    assert err(got[0], ref[0]) < TOL and err(got[1], ref[1]) < TOL
    # L = 1: block_diag = exact; L = 2: tridiag = exact (both damped, against the NT closed form)
    for depth, method in [(1, "block_diag"), (2, "block_tridiag")]:
        net, params, X, Xt, _ = make(depth=depth, width=4, in_dim=3, out_dim=2, n=3)
        theta, theta_t = nt_ntk(net, params, X, Xt)
        K, Kt = dense.preconditioned_kernel(net, params, X, method, damping=0.02, X_test=Xt)
        inv = np.linalg.inv(theta + 3 * 0.02 * np.eye(6))
        assert err(K, theta @ inv) < TOL
        assert err(Kt, theta_t @ inv) < TOL


def test_fisher_approximation_blocks():
    net, params, X, _, _ = make(depth=3, width=4, in_dim=2, out_dim=2, n=3)
    J = dense.jacobian(net, params, X)
    sl = dense.layer_slices(net)
    G = dense.fisher_approximation(net, params, X, "block_tridiag")
    eps = np.finfo(float).eps
    for a in range(3):
        for b in range(3):
            Ja, Jb = J[:, sl[a]], J[:, sl[b]]
            ref = Ja.T @ Jb / 3 if abs(a - b) <= 1 else np.zeros((Ja.shape[1], Jb.shape[1]))
            # Error model: each entry is a dot product of N·C = 6 terms, computed here and in the
            # reference (one P×P product, then masked) with different BLAS blockings; each carries
            # |fl(xᵀy) − xᵀy| ≤ γ_6 |x|ᵀ|y| (γ_6 ≈ 6 eps) plus one rounding of /N: difference
            # ≤ 2·(6 + 1)·eps·|J_a|ᵀ|J_b|/N entrywise; 16 eps bounds it (measured up to 2.8e-17).
            bound = 16 * eps * np.abs(Ja).T @ np.abs(Jb) / 3
            assert np.all(np.abs(G[sl[a], sl[b]] - ref) <= bound)
    # exact Fisher from the pytree Jacobians: layer-1/layer-3 block
    (w1, b1), _, (w3, b3) = pytree_layer_jacobians(net, params, X)
    J1 = np.concatenate([w1, b1[:, None, :]], 1).reshape(6, -1)
    J3 = np.concatenate([w3, b3[:, None, :]], 1).reshape(6, -1)
    assert err(dense.fisher_approximation(net, params, X, "exact")[sl[0], sl[2]], J1.T @ J3 / 3) < TOL


# ---------------------------------------------------------------------------------------------
# K-FAC (claim 3)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias,act,C", [(True, "relu", 2), (False, "erf", 1)])
def test_kfac_structure_matches_jacobian(bias, act, C):
    net, params, X, _, _ = make(depth=3, width=[4, 5], in_dim=3, out_dim=C, n=4, activation=act, bias=bias)
    J = dense.jacobian(net, params, X)
    H, D = dense.layer_signals(net, params, X)
    Hn, Dn = numpy_signals(net, params, X)
    worst = 0.0
    for l, sl in enumerate(dense.layer_slices(net)):
        assert err(H[l], Hn[l]) < TOL and err(D[l], Dn[l]) < TOL  # own forward vs numpy backprop
        rows = np.stack([np.kron(H[l][n], D[l][n, c]) for n in range(4) for c in range(C)])
        worst = max(worst, err(rows, J[:, sl]))
    assert worst < TOL


def test_kfac_single_sample_equals_exact_block():
    net, params, X, _, _ = make(depth=3, width=4, in_dim=3, out_dim=1, n=1, activation="relu")
    G = dense.fisher_approximation(net, params, X, "kfac")
    for sl, (dW, db) in zip(dense.layer_slices(net), pytree_layer_jacobians(net, params, X)):
        Jl = np.concatenate([dW, db[:, None, :]], axis=1).reshape(1, -1)
        assert err(G[sl, sl], Jl.T @ Jl) < TOL


@pytest.mark.parametrize("readout,alpha", [("common", lambda N, L: N * (L - 1) + 1), ("paper", lambda N, L: N * L)])
def test_kfac_isotropic(readout, alpha):
    N, L = 5, 3
    net, params, X, Xt, _ = make(depth=L, width=8, in_dim=N - 1, out_dim=1, n=N, activation="erf")
    K, _ = dense.preconditioned_kernel(net, params, X, "kfac", kfac_readout=readout)
    assert err(K, alpha(N, L) * np.eye(N)) < 1e-7


def test_kfac_first_layer_leverage_scores():
    N, D, L = 6, 2, 3
    net, params, X, _, _ = make(depth=L, width=8, in_dim=D, out_dim=1, n=N, activation="erf")
    K, _ = dense.preconditioned_kernel(net, params, X, "kfac")
    Q, _ = np.linalg.qr(np.hstack([X, np.ones((N, 1))]))
    lev = np.sum(Q**2, axis=1)
    assert err(K, np.diag(N * lev + N * (L - 2) + 1)) < 1e-7
    assert iso(K)[1] > 1e-3  # diagonal but not isotropic


def test_kfac_damped_gram_form():
    N, rho = 4, 0.02
    net, params, X, Xt, _ = make(depth=3, width=5, in_dim=3, out_dim=2, n=N, activation="relu")
    Hn, Dn = numpy_signals(net, params, X)
    Ht, Dt = numpy_signals(net, params, Xt)
    s = np.sqrt(rho)
    K, Kt = dense.preconditioned_kernel(net, params, X, "kfac", damping=rho, X_test=Xt)
    ref, ref_t = 0, 0
    for l in range(3):
        KH = Hn[l] @ Hn[l].T
        Dm = Dn[l].reshape(N * 2, -1)
        KD = Dm @ Dm.T
        fH = N * np.linalg.inv(KH + N * s * np.eye(N))  # h̃(A + s)⁻¹h̃ᵀ = N K^H (K^H + N s)⁻¹
        fD = N * np.linalg.inv(KD + N * s * np.eye(2 * N))
        ref = ref + np.kron(KH @ fH, np.ones((2, 2))) * (KD @ fD) / N
        KHt = Ht[l] @ Hn[l].T
        KDt = Dt[l].reshape(-1, Dm.shape[1]) @ Dm.T
        ref_t = ref_t + np.kron(KHt @ fH, np.ones((2, 2))) * (KDt @ fD) / N
    assert err(K, ref) < TOL and err(Kt, ref_t) < TOL


# ---------------------------------------------------------------------------------------------
# Unit-wise (claim 4)
# ---------------------------------------------------------------------------------------------
def test_unit_wise_width_one_equals_block_diag():
    net, params, X, Xt, _ = make(depth=3, width=1, in_dim=3, out_dim=1, n=4, activation="erf")
    layers, layers_t = pytree_layer_ntks(net, params, X, Xt)
    for rho in (0.0, 0.05):
        a = dense.preconditioned_kernel(net, params, X, "unit_wise", damping=rho, X_test=Xt)
        if rho == 0:  # layers 2 and 3 have 2 parameters < N: compare with the dense block_diag
            b = dense.preconditioned_kernel(net, params, X, "block_diag", X_test=Xt)
        else:  # and with the Gram form Σ_l Θ_l (Θ_l + Nρ)⁻¹
            b = (sum(T @ np.linalg.inv(T + 4 * rho * np.eye(4)) for T in layers),
                 sum(Tt @ np.linalg.inv(T + 4 * rho * np.eye(4))
                     for T, Tt in zip(layers, layers_t)))
        assert err(a[0], b[0]) < 1e-8 and err(a[1], b[1]) < 1e-8


def test_unit_wise_counts_active_units():
    N = 4
    net, params, X, _, _ = make(depth=3, width=6, in_dim=3, out_dim=1, n=N, activation="relu", seed=3)
    K, _ = dense.preconditioned_kernel(net, params, X, "unit_wise")
    _, Dn = numpy_signals(net, params, X)
    active = sum((np.abs(d[:, 0, :]) > 0).sum(axis=1) for d in Dn)  # readout unit counts 1
    assert np.all(active < 13)  # the check is not trivially "every unit"
    assert err(K, np.diag(active.astype(float))) < 1e-8


# ---------------------------------------------------------------------------------------------
# Empirical, improved-empirical and sampled Fisher (claims 5–7)
# ---------------------------------------------------------------------------------------------
def test_ef_inverse_residual_step():
    net, params, X, Xt, Y = make(depth=2, width=6, in_dim=3, out_dim=1, n=5)
    r = (np.asarray(net.apply(params, X)) - Y).reshape(-1)
    theta, theta_t = nt_ntk(net, params, X, Xt)
    step, step_t = dense.function_step(net, params, X, Y, "ef", 0.3, X_test=Xt)
    assert err(step.reshape(-1), -0.3 / r) < 1e-7
    assert err(step_t.reshape(-1), -0.3 * theta_t @ np.linalg.solve(theta, 1 / r)) < 1e-7
    # C = 1: Σ g_n g_nᵀ/N = Jᵀ diag(r²) J / N, J from the pytree
    Jp = np.hstack([np.concatenate([w, b[:, None, :]], 1).reshape(5, -1) for w, b in pytree_layer_jacobians(net, params, X)])
    G = dense.fisher_approximation(net, params, X, "ef", residual=r)
    assert err(G, Jp.T @ np.diag(r**2) @ Jp / 5) < TOL


def test_ief_step():
    net, params, X, Xt, Y = make(depth=2, width=6, in_dim=3, out_dim=1, n=5)
    r = (np.asarray(net.apply(params, X)) - Y).reshape(-1)
    step, _ = dense.function_step(net, params, X, Y, "ief", 0.4)
    assert err(step.reshape(-1), -0.4 * r) < 1e-8
    # C = 2, damped and not: Δf = −η Θ R (Rᵀ Θ R + λ)⁻¹ s with R[(m,c), m] = r_mc
    net, params, X, Xt, Y = make(depth=2, width=6, in_dim=3, out_dim=2, n=4)
    r = np.asarray(net.apply(params, X)) - Y
    R = np.zeros((8, 4))
    for m in range(4):
        R[2 * m:2 * m + 2, m] = r[m]
    s = np.sum(r**2, axis=1)
    theta, theta_t = nt_ntk(net, params, X, Xt)
    for lam in (0.0, 0.1):
        coef = np.linalg.solve(R.T @ theta @ R + lam * np.eye(4), s)
        step, step_t = dense.function_step(net, params, X, Y, "ief", 0.4, damping=lam, X_test=Xt)
        assert err(step.reshape(-1), -0.4 * theta @ R @ coef) < 1e-8
        assert err(step_t.reshape(-1), -0.4 * theta_t @ R @ coef) < 1e-8


@pytest.mark.parametrize("C,k,step", [(1, 2, 0), (2, 3, 5)])
def test_sf_step(C, k, step):
    N = 4
    net, params, X, _, Y = make(depth=2, width=6, in_dim=3, out_dim=C, n=N)
    r = np.asarray(net.apply(params, X)) - Y
    # the sampled Fisher's draw of step t (the registry's convention; the raw samples are input data)
    eps = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(7), step), (k, N, C)))
    got, _ = dense.function_step(net, params, X, Y, "sf", 0.5, samples=k, seed=7, step=step)
    alias, _ = dense.function_step(net, params, X, Y, "sf", 0.5, k=k, seed=7, step=step)  # former option name
    assert np.array_equal(got, alias)
    for n in range(N):
        E = np.mean([np.outer(e[n], e[n]) for e in eps], axis=0)  # Δf_n = −η E_n⁻¹ r_n
        assert err(got[n], -0.5 * np.linalg.solve(E, r[n])) < 1e-7


# ---------------------------------------------------------------------------------------------
# Claim 7b: Fisher efficiency ratio
# ---------------------------------------------------------------------------------------------
def test_fisher_efficiency_ratio():
    net, params, X, _, Y = make(depth=2, width=6, in_dim=3, out_dim=1, n=5)
    r = (np.asarray(net.apply(params, X)) - Y).reshape(-1)
    theta, _ = nt_ntk(net, params, X)
    v_ng = dense.parameter_update(net, params, X, Y, "exact", 1.0)
    assert abs(dense.fisher_efficiency_ratio(net, params, X, Y, v_ng) - 1) < 1e-8
    # GD: Δf ∝ −Θ r, ratio = ||Θr||·||r|| / rᵀΘr
    v_gd = dense.parameter_update(net, params, X, Y, "gd", 0.1)
    ref = np.linalg.norm(theta @ r) * np.linalg.norm(r) / (r @ theta @ r)
    assert abs(dense.fisher_efficiency_ratio(net, params, X, Y, v_gd) - ref) < 1e-10 and ref > 1
    # EF: Δf ∝ −1/r, ratio = ||1/r||·||r|| / N >= 1
    v_ef = dense.parameter_update(net, params, X, Y, "ef", 2.0)
    ref = np.linalg.norm(1 / r) * np.linalg.norm(r) / 5
    assert abs(dense.fisher_efficiency_ratio(net, params, X, Y, v_ef) - ref) < 1e-7 and ref > 1
    # scale invariance
    assert abs(dense.fisher_efficiency_ratio(net, params, X, Y, 3 * v_gd)
               - dense.fisher_efficiency_ratio(net, params, X, Y, v_gd)) < 1e-12


# ---------------------------------------------------------------------------------------------
# Damping consistency and bad inputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,rhos,gain", [("exact", (1e-6, 1e-8), 30), ("block_diag", (1e-6, 1e-8), 30),
                                              ("block_tridiag", (1e-6, 1e-8), 30), ("unit_wise", (1e-10, 1e-12), 30),
                                              ("kfac", (1e-8, 1e-10), 5)])
def test_pinv_is_the_small_damping_limit(method, rhos, gain):
    # The damped kernel approaches the pinv one linearly in ρ (in √ρ for the factored K-FAC
    # damping): 100x smaller ρ must bring it `gain` times closer. Unit-wise blocks have
    # eigenvalues ~1e-10 here (tiny δ_j for some samples), hence the smaller ρ.
    net, params, X, _, _ = make(depth=3, width=8, in_dim=4, out_dim=1, n=3, seed=1)
    K0, _ = dense.preconditioned_kernel(net, params, X, method)
    e = [err(K0, dense.preconditioned_kernel(net, params, X, method, damping=rho)[0]) for rho in rhos]
    assert e[1] < e[0] / gain
    assert e[1] < 1e-3 * np.max(np.abs(K0))


def test_bad_inputs():
    net, params, X, _, Y = make(depth=2, width=4, in_dim=3, out_dim=1, n=3)
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of: gd, exact"):
        dense.preconditioned_kernel(net, params, X, "nope")
    with pytest.raises(ValueError, match="damping must be a finite number >= 0"):
        dense.preconditioned_kernel(net, params, X, "exact", damping=-1)
    with pytest.raises(ValueError, match="needs residual="):
        dense.preconditioned_kernel(net, params, X, "ef")
    with pytest.raises(ValueError, match="needs residual="):
        dense.fisher_approximation(net, params, X, "ef")
    with pytest.raises(ValueError, match="needs residual="):
        dense.preconditioned_kernel(net, params, X, "ief")
    with pytest.raises(ValueError, match="is an update, not a Fisher approximation"):
        dense.fisher_approximation(net, params, X, "ief")
    with pytest.raises(ValueError, match="is an update, not a Fisher approximation"):
        dense.inverse_preconditioner(net, params, X, "ief")
    with pytest.raises(ValueError, match="symmetric"):
        dense.preconditioned_kernel(net, params, X, "pattern", pattern=[[1, 1], [0, 1]])
    with pytest.raises(ValueError, match="pattern must be a 2x2 matrix"):
        dense.preconditioned_kernel(net, params, X, "pattern", pattern=np.eye(3))
    with pytest.raises(ValueError, match="needs pattern="):
        dense.preconditioned_kernel(net, params, X, "pattern")
    with pytest.raises(ValueError, match="kfac_readout"):
        dense.preconditioned_kernel(net, params, X, "kfac", kfac_readout="other")
    with pytest.raises(ValueError, match="unexpected options"):
        dense.preconditioned_kernel(net, params, X, "exact", bogus=1)
    with pytest.raises(ValueError, match="unexpected options"):
        dense.preconditioned_kernel(net, params, X, "exact", seed=1)  # an option of sf only
    with pytest.raises(ValueError, match="not both"):
        dense.preconditioned_kernel(net, params, X, "sf", k=2, samples=2)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        dense.preconditioned_kernel(net, params, X, "exact", loss="hinge")
    with pytest.raises(ValueError, match="residual must have shape"):
        dense.preconditioned_kernel(net, params, X, "ef", residual=np.ones(5))
    with pytest.raises(ValueError, match="Y has 2 columns"):
        dense.parameter_update(net, params, X, np.ones((3, 2)), "gd", 0.1)
    with pytest.raises(ValueError, match="update must have"):
        dense.fisher_efficiency_ratio(net, params, X, Y, np.ones(3))
    big = mlp(depth=3, width=150, in_dim=3)
    with pytest.raises(ValueError, match=r"P=23401 parameters; the dense reference is limited to P <= 20000"):
        dense.jacobian(big, None, X)


# ---------------------------------------------------------------------------------------------
# Explicit inverse and the iEF kernel (an update without a G)
# ---------------------------------------------------------------------------------------------
def test_inverse_preconditioner_is_the_inverse_of_the_damped_approximation():
    net, params, X, _, _ = make(depth=2, width=4, in_dim=3, out_dim=2, n=3)
    rho = 0.05
    for spec in ntk_ngd.methods.registered():  # every Tikhonov-damped approximation G + ρI of the registry
        if spec.damping_rule != "tikhonov":
            continue
        opts = dict(spec.example_options)
        if spec.random:
            opts.update(samples=2, seed=1)
        residual = np.random.default_rng(2).standard_normal((3, 2)) if spec.needs_residual else None
        G = dense.fisher_approximation(net, params, X, spec.name, residual=residual, **opts)
        M = dense.inverse_preconditioner(net, params, X, spec.name, damping=rho, residual=residual, **opts)
        # cond(G + ρI) ≤ (λ_max + ρ)/ρ ≈ 1e2 here: a 1e-10 residual is generous for LDLᵀ solves
        assert err(M @ (G + rho * np.eye(len(G))), np.eye(len(G))) < 1e-10, spec.name
    G = dense.fisher_approximation(net, params, X, "kfac", damping=rho)  # kfac's G carries its factored damping
    assert err(dense.inverse_preconditioner(net, params, X, "kfac", damping=rho) @ G, np.eye(len(G))) < 1e-10
    assert np.array_equal(dense.inverse_preconditioner(net, params, X, "gd", damping=rho), np.eye(len(G)))


def test_ief_kernel_applied_to_the_residual_is_its_step():
    """Θ_iEF(x', X) u = J(x')U u with U the update's linear map: −η Θ_iEF r is the iEF function step."""
    net, params, X, Xt, Y = make(depth=2, width=6, in_dim=3, out_dim=2, n=4)
    r = np.asarray(net.apply(params, X)) - Y
    for lam in (0.0, 0.1):
        K, Kt = dense.preconditioned_kernel(net, params, X, "ief", damping=lam, X_test=Xt, residual=r)
        step, step_t = dense.function_step(net, params, X, Y, "ief", 0.4, damping=lam, X_test=Xt)
        assert err(-0.4 * K @ r.reshape(-1), step.reshape(-1)) < 1e-10
        assert err(-0.4 * Kt @ r.reshape(-1), step_t.reshape(-1)) < 1e-10
