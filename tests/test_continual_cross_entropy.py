"""ntk_ngd.continual with softmax cross-entropy and the ``ong_old_factors`` projection, against a dense
parameter-space reference built here (docs/THEORY.md "Continual learning with cross-entropy").

The reference uses nothing from ntk_ngd.continual, ntk_ngd.methods, ntk_ngd.kernels or ntk_ngd.losses: explicit
Jacobians J = ∂f/∂θ by ``jax.jacfwd`` of the flattened parameters, the logit gradient g_n and Hessian
Λ_n = diag(p) − ppᵀ of each sample's CE loss by ``jax.grad``/``jax.hessian`` of ``-log_softmax(z)[y]``, the dense
Fisher G = JᵀΛJ/N (block_diag: its layer blocks; K-FAC: ``ntk_ngd.reference``'s dense Kronecker factors), M = G + ρI,
and every projection written out as a P×P formula. The protected directions are the old logits modulo 1_C, here
in a *different* basis of 1^⊥ than the code's (E = [e_c − e_C], not orthonormal): every projection depends only
on span(J_AᵀE), so agreement also checks that invariance. Logit steps are compared modulo 1_C (Π = I − 11ᵀ/C).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntk_ngd as nn
from ntk_ngd import methods, reference
from ntk_ngd.continual import (PROJECTIONS, projected_direction, projected_kernels, sequential, store,
                               train_sequential)
from ntk_ngd.continual.kernels import every_projection
from ntk_ngd.continual.projections import supports
from ntk_ngd.continual.memory import store_metric_rows

#: float64 Gram forms vs dense P×P solves (P = 83, ρ = 0.05, Grams of condition ≲ 1e6): rounding ≲ 1e-12;
#: the issue's bound 1e-8 still fails on any algebraic error (those are O(1))
TOL = 1e-8
#: a consistent projection's first-order forgetting: exactly 0, rounding of (N·(C−1))-sized solves ≲ 1e-14
ZERO = 1e-10
#: a naive projection's forgetting relative to the plain step's is O(1) (the negative control of the zero rows)
NAIVE_FLOOR = 1e-3
RHO, RHO_B = 0.05, 0.3
C, N_A, N_B = 3, 6, 7
#: every registered method with a continual metric whose G the dense reference builds for cross-entropy from the data
#: alone (no residual, no random draw); the layer-wise ones (a dense P×P approximation each) are marked slow
METHODS = tuple(pytest.param(m.name, marks=pytest.mark.slow) if m.layerwise else m.name
                for m in methods.registered() if m.metric is not None and not m.random and not m.needs_residual)


# ---------------------------------------------------------------------------------------------
# the dense reference
# ---------------------------------------------------------------------------------------------
def per_sample_ce(z, y):
    return -jax.nn.log_softmax(z)[y]


#: g_n and Λ_n = ∂²ℓ_n/∂f_n² by autodiff, vmapped over samples
_ce_derivatives = jax.jit(lambda f, y: (jax.vmap(jax.grad(per_sample_ce))(f, y),
                                        jax.vmap(jax.hessian(per_sample_ce))(f, y)))


class Dense:
    """Explicit matrices of a CE problem at parameters θ (flat, ravel_pytree order)."""

    def __init__(self, net, params):
        self.net = net
        self.theta, self.unravel = ravel_pytree(params)
        E = np.zeros((C, C - 1))
        E[: C - 1] = np.eye(C - 1)
        E[C - 1] = -1.0
        self.E = E  # a non-orthonormal basis of 1^⊥
        self.Pi = np.eye(C) - 1.0 / C
        self._jac = jax.jit(lambda t, X: jax.jacfwd(lambda s: net.apply(self.unravel(s), X).reshape(-1))(t))

    def logits(self, X, theta=None):
        theta = self.theta if theta is None else theta
        return np.asarray(self.net.apply(self.unravel(jnp.asarray(theta)), X))

    def jac(self, X, theta=None):
        return np.asarray(self._jac(jnp.asarray(self.theta if theta is None else theta), jnp.asarray(X)))

    @staticmethod
    def derivatives(f, y):
        """(g (N, C), Λ blockdiag (NC, NC)) of the per-sample CE loss at logits f, labels y."""
        g, H = (np.asarray(a) for a in _ce_derivatives(jnp.asarray(f), jnp.asarray(y)))
        n = f.shape[0]
        L = np.zeros((n * C, n * C))
        for i in range(n):
            L[i * C:(i + 1) * C, i * C:(i + 1) * C] = H[i]
        return g, L

    def metric(self, method, J, f, y, rho, X=None):
        """M = G + ρI of ``method`` on (J, logits f, labels y): exact NGD from J and the softmax Hessians here, every
        other method from ntk_ngd.reference's dense P×P construction (whose kfac already holds its factored damping)."""
        if method == "exact":
            _, L = self.derivatives(f, y)
            return J.T @ L @ J / f.shape[0] + rho * np.eye(J.shape[1])
        G = np.asarray(reference.fisher_approximation(self.net, self.unravel(jnp.asarray(self.theta)), X, method,
                                                      damping=rho, loss="cross_entropy", targets=y, outputs=f,
                                                      **dict(methods.get(method).example_options)))
        return G if methods.get(method).damping_rule in ("none", "factored") else G + rho * np.eye(J.shape[1])

    def protected(self, JA):
        """J_Aᵀ E: the old logits' directions modulo 1_C (P × N_A(C−1))."""
        n = JA.shape[0] // C
        return JA.T @ np.kron(np.eye(n), self.E)


def dense_step(dense: Dense, method, projection, JB, fB, yB, XB, JA, old=None):
    """d (θ ← θ + ηd) of ``projection`` written out in parameter space. ``old``: (J_O, f_O, y_O) of the previous
    task for ong_old_factors (its metric M_o)."""
    g, _ = dense.derivatives(fB, yB)
    grad = JB.T @ g.reshape(-1) / fB.shape[0]
    M = dense.metric(method, JB, fB, yB, RHO, XB)
    u = np.linalg.solve(M, grad)
    if projection == "none" or JA.shape[0] == 0:
        return -u
    A = dense.protected(JA)
    if projection == "ogd":
        return -(u - A @ np.linalg.solve(A.T @ A, A.T @ u))
    if projection == "fisher_orthogonal":
        return -(u - A @ np.linalg.solve(A.T @ M @ A, A.T @ M @ u))
    if projection == "ong_old_factors":
        J_O, f_O, y_O = old
        inner = np.eye(M.shape[0]) if method == "gd" else dense.metric("exact", J_O, f_O, y_O, RHO)
        basis = np.linalg.solve(M, A)
    else:
        inner = np.eye(M.shape[0]) if projection == "ong_euclidean" else M
        basis = np.linalg.solve(dense.metric(method, JB, fB, yB, RHO_B, XB) if projection == "ong_stale" else M, A)
    return -(u - basis @ np.linalg.solve(basis.T @ inner @ basis, basis.T @ inner @ u))


def mod1(dense, F):
    return np.asarray(F).reshape(-1, C) @ dense.Pi


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def supported(method, projection) -> bool:
    return supports(methods.get(method), projection)


@pytest.fixture(scope="module")
def problem():
    net = nn.mlp(depth=2, width=10, in_dim=4, out_dim=C, activation="erf")
    params = net.init(0)
    rng = np.random.default_rng(0)
    XA, XB = rng.standard_normal((N_A, 4)), rng.standard_normal((N_B, 4))
    yA, yB = rng.integers(0, C, N_A), rng.integers(0, C, N_B)
    return net, params, Dense(net, params), XA, XB, yA, yB


# ---------------------------------------------------------------------------------------------
# one step: projected kernels and Gram-form directions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_projected_kernels_and_directions_against_the_dense_reference(problem, method):
    """Per projection: V K^P ũ on the old and new logits (mod 1) and the Gram-form direction d vs the dense P×P
    step; ong_old_factors with the previous task = X_A at its logits."""
    net, params, dense, XA, XB, yA, yB = problem
    JA, JB = dense.jac(XA), dense.jac(XB)
    fA, fB = dense.logits(XA), dense.logits(XB)
    stored = store(net, params, XA, "cross_entropy")
    old_rows = store_metric_rows(net, params, XA, "cross_entropy")
    kw = dict(damping=RHO, basis_damping=RHO_B, loss="cross_entropy", **dict(methods.get(method).example_options))
    chosen = [p for p in PROJECTIONS if supported(method, p)]
    kernels = every_projection(net, XA, XB, method, chosen, params=params, targets=yB, **kw)  # = projected_kernels
    for projection in PROJECTIONS:
        if not supported(method, projection):
            with pytest.raises(ValueError, match="does not declare"):
                projected_kernels(net, XA, XB, method, projection, params=params, targets=yB, **kw)
            continue
        d = dense_step(dense, method, projection, JB, fB, yB, XB, JA, (JA, fA, yA))
        old, new = kernels[projection].step()
        scale = np.max(np.abs(mod1(dense, JB @ dense_step(dense, method, "none", JB, fB, yB, XB, JA))))
        assert np.max(np.abs(old - mod1(dense, JA @ d))) <= TOL * scale, (method, projection, "old logits")
        assert np.max(np.abs(new - mod1(dense, JB @ d))) <= TOL * scale, (method, projection, "new logits")
        gram = ravel_pytree(projected_direction(net, params, XB, yB, stored, method, projection, old=old_rows,
                                                **kw))[0]
        assert rel(gram, d) <= TOL, (method, projection, "direction")


def test_whitened_learning_kernel_is_the_metric_form(problem):
    """``learning`` has the rows R_B (the metric form): R_BJ_B d = −learning ũ for exact/ong, and ong's is the
    symmetric Schur complement (ogd's is not: the control)."""
    net, params, dense, XA, XB, yA, yB = problem
    JA, JB, fB = dense.jac(XA), dense.jac(XB), dense.logits(XB)
    k = {p: projected_kernels(net, XA, XB, "exact", p, params=params, targets=yB, damping=RHO,
                              loss="cross_entropy") for p in ("ong", "ogd")}
    _, L = dense.derivatives(fB, yB)
    d = dense_step(dense, "exact", "ong", JB, fB, yB, XB, JA)
    # R_B is only defined up to an orthogonal factor per sample: compare the quadratic forms ||R_B J_B d||² = dᵀJᵀΛJd
    step = k["ong"].learning @ k["ong"].residual.reshape(-1)
    assert abs(step @ step - d @ JB.T @ L @ JB @ d) <= TOL * (step @ step)
    sym = lambda K: np.linalg.norm(K - K.T) / np.linalg.norm(K)
    assert sym(k["ong"].learning) <= ZERO
    assert sym(k["ogd"].learning) > NAIVE_FLOOR


def test_consistent_projections_keep_old_logits_and_naive_ones_move_them(problem):
    """ogd/ong: |VᵀΔf_A| ≤ 1e-10 of the plain step's; every naive projection (ong_old_factors included) ≥ 1e-3."""
    net, params, _, XA, XB, _, yB = problem
    ks = {p: projected_kernels(net, XA, XB, "exact", p, params=params, targets=yB, damping=RHO, basis_damping=RHO_B,
                               loss="cross_entropy").step()[0] for p in PROJECTIONS}
    plain = np.linalg.norm(ks["none"])
    for p in ("ogd", "ong"):
        assert np.linalg.norm(ks[p]) <= ZERO * plain, p
    for p in ("ong_euclidean", "fisher_orthogonal", "ong_stale", "ong_old_factors"):
        assert np.linalg.norm(ks[p]) >= NAIVE_FLOOR * plain, p


def test_ong_old_factors_mse_against_the_dense_reference(problem):
    """MSE: ong_old_factors (basis M⁻¹J_Aᵀ, projection in M_o = J_AᵀJ_A/N_A + ρI) vs P×P, kernels and direction."""
    net, params, dense, XA, XB, _, _ = problem
    rng = np.random.default_rng(1)
    YB = rng.standard_normal((N_B, C))
    JA, JB = dense.jac(XA), dense.jac(XB)
    r = dense.logits(XB) - YB
    M = JB.T @ JB / N_B + RHO * np.eye(JB.shape[1])
    u = np.linalg.solve(M, JB.T @ r.reshape(-1) / N_B)
    Mo = JA.T @ JA / N_A + RHO * np.eye(JB.shape[1])
    basis = np.linalg.solve(M, JA.T)
    d = -(u - basis @ np.linalg.solve(basis.T @ Mo @ basis, basis.T @ Mo @ u))
    old, new = projected_kernels(net, XA, XB, "exact", "ong_old_factors", params=params, residual=r,
                                 damping=RHO).step(r)
    scale = np.max(np.abs(JB @ u))
    assert np.max(np.abs(old.reshape(-1) - JA @ d)) <= TOL * scale
    assert np.max(np.abs(new.reshape(-1) - JB @ d)) <= TOL * scale
    gram = ravel_pytree(projected_direction(net, params, XB, YB, store(net, params, XA), "exact", "ong_old_factors",
                                            damping=RHO, old=store_metric_rows(net, params, XA)))[0]
    assert rel(gram, d) <= TOL


# ---------------------------------------------------------------------------------------------
# sequences: the closed-form (linearised) forgetting and real training
# ---------------------------------------------------------------------------------------------
def dense_linearised_sequence(dense, tasks, method, projection, lr, steps):
    """Logits after each task of the network linearised at θ₀ (f = f₀ + J(θ − θ₀)), stepping with the dense d;
    protected rows J_A (fixed: linearised) of every earlier task, M_o from the previous task at its end."""
    Js = [dense.jac(X) for X, _ in tasks]
    f0s = [dense.logits(X) for X, _ in tasks]
    delta = np.zeros_like(np.asarray(dense.theta))
    out = []
    for t, (X, y) in enumerate(tasks):
        JA = np.concatenate(Js[:t]) if t else np.zeros((0, delta.size))
        old = None
        if t:
            old = (Js[t - 1], f0s[t - 1] + (Js[t - 1] @ delta).reshape(-1, C), tasks[t - 1][1])
        for _ in range(steps):
            fB = f0s[t] + (Js[t] @ delta).reshape(-1, C)
            delta = delta + lr * dense_step(dense, method, projection, Js[t], fB, y, X, JA, old)
        out.append(np.concatenate([f0 + (J @ delta).reshape(-1, C) for f0, J in zip(f0s, Js)]))
    return np.stack(out)


def ce_matrix(dense, F, tasks):
    """T × T CE loss from the dense logits (autodiff-free: log-softmax)."""
    sizes = np.cumsum([0] + [len(y) for _, y in tasks])
    L = np.zeros((len(tasks), len(tasks)))
    for t in range(len(tasks)):
        for s, (_, y) in enumerate(tasks):
            f = F[t][sizes[s]:sizes[s + 1]]
            L[t, s] = float(np.mean(jax.vmap(per_sample_ce)(jnp.asarray(f), jnp.asarray(y))))
    return L


@pytest.mark.parametrize("method,projections", [
    ("exact", ("none", "ogd", "ong", "ong_old_factors")),
    pytest.param("kfac", ("none", "ong", "ong_stale"), marks=pytest.mark.slow)])
def test_sequential_closed_form_forgetting_against_the_dense_linearised_network(problem, method, projections):
    """sequential(loss='cross_entropy', params=θ₀) = the dense linearised network trained task by task: logits
    (mod 1) and the T × T CE loss ≤ 1e-8 relative; ogd/ong leave the old task's loss unchanged (≤ 1e-10 of the
    plain loss forgetting), ong_old_factors does not (control)."""
    net, params, dense, XA, XB, yA, yB = problem
    tasks = [(XA, yA), (XB, yB)]
    lr, steps = 0.3, 3
    forgetting = {}
    for p in projections:
        run = sequential(net, tasks, method, p, params=params, lr=lr, steps=steps, damping=RHO, basis_damping=RHO_B,
                         loss="cross_entropy")
        F = dense_linearised_sequence(dense, tasks, method, p, lr, steps)
        assert rel(mod1(dense, run.train_pred[1:]), mod1(dense, F)) <= TOL, (method, p, "logits")
        assert rel(run.loss, ce_matrix(dense, F, tasks)) <= TOL, (method, p, "loss matrix")
        forgetting[p] = float(run.loss_forgetting[0])
    plain = abs(forgetting["none"])
    assert plain > 1e-3
    for p in [p for p in projections if p in ("ogd", "ong")]:
        assert abs(forgetting[p]) <= ZERO * plain, (method, p)
    # the naive control on exact NGD only: with K-FAC the naive projections' sequence forgetting is small (measured
    # 1.7e-4 of the plain one for ong_stale here, as the MSE sequences of docs/THEORY.md found), not asserted
    naive = [p for p in projections if p in ("ong_euclidean", "ong_old_factors") and method == "exact"]
    for p in naive:
        assert abs(forgetting[p]) >= NAIVE_FLOOR * plain, (method, p)


def test_train_sequential_agrees_with_its_linearisation_to_second_order(problem):
    """Real CE training (erf net, exact NGD, ong and ong_old_factors) vs sequential at the same θ₀: with S steps per
    task at lr η the network moves |Δθ| = O(Sη), so logits, whitening and the stored rows (frozen at θ_t, vs θ₀)
    differ from the linearised model by O((Sη)²): the gap (mod 1) shrinks by 4 when η halves, band (3, 5) as in
    figure `continual` (third-order term ≲ 10 % at Sη ≤ 0.1). Control: the gap to a prediction wrong at first order
    (the unprojected linearised run) shrinks by only 2."""
    net, params, dense, XA, XB, yA, yB = problem
    tasks = [(XA, yA), (XB, yB)]
    steps = 2
    for p in ("ong", "ong_old_factors"):
        gaps, wrong = [], []
        for lr in (0.04, 0.02):
            kw = dict(lr=lr, steps=steps, damping=RHO, loss="cross_entropy")
            real = mod1(dense, train_sequential(net, params, tasks, "exact", p, **kw).train_pred[1:])
            lin = mod1(dense, sequential(net, tasks, "exact", p, params=params, **kw).train_pred[1:])
            none = mod1(dense, sequential(net, tasks, "exact", "none", params=params, **kw).train_pred[1:])
            gaps.append(np.linalg.norm(real - lin))
            wrong.append(np.linalg.norm(real - none))
        ratio, control = gaps[0] / gaps[1], wrong[0] / wrong[1]
        assert 3.0 <= ratio <= 5.0, (p, ratio)
        assert not 3.0 <= control <= 5.0, (p, control)


# ---------------------------------------------------------------------------------------------
# the MSE path is unchanged, and bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_is_one_line(problem):
    net, params, _, XA, XB, yA, yB = problem
    bad = yB.copy()
    bad[0] = C
    with pytest.raises(ValueError, match=r"task 1: labels must lie in 0\.\.2"):
        sequential(net, [(XA, yA), (XB, bad)], "exact", "ong", params=params, loss="cross_entropy")
    with pytest.raises(ValueError, match="pass loss='mse' or loss='cross_entropy'"):
        sequential(net, [(XA, yA)], "exact", "ong", loss="hinge")
    with pytest.raises(ValueError, match="does not declare"):
        train_sequential(net, params, [(XA, yA), (XB, yB)], "kfac", "ong_old_factors", loss="cross_entropy")
    with pytest.raises(ValueError, match="store them with loss='cross_entropy'"):
        projected_direction(net, params, XB, yB, store(net, params, XA), "exact", "ong", loss="cross_entropy")
    with pytest.raises(ValueError, match="needs old="):
        projected_direction(net, params, XB, yB, store(net, params, XA, "cross_entropy"), "exact",
                            "ong_old_factors", loss="cross_entropy")


def test_cli_cross_entropy_rows_match_the_library(capsys):
    """`ntk-ngd continual --loss cross_entropy`: JSON rows = sequential on the labels; 'all' gives each method the
    projections it defines (kfac: no ong_old_factors), an explicit undefined one is a one-line error."""
    import json

    from ntk_ngd.cli import main
    from ntk_ngd.continual import rotated_tasks

    argv = ["continual", "--n", "5", "--n-tasks", "2", "--classes", "3", "--width", "16", "--depth", "2", "--steps",
            "2", "--lr", "0.5", "--loss", "cross_entropy", "--method", "exact", "--method", "kfac", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    got = {(r["method"], r["projection"]) for r in rows}
    assert ("exact", "ong_old_factors") in got and ("kfac", "ong_old_factors") not in got and ("kfac", "ong") in got
    tasks = [(X, np.argmax(Y, axis=1)) for X, Y in rotated_tasks(2, 5, classes=3)]
    net = nn.mlp(depth=2, width=16, in_dim=64, out_dim=3)
    run = sequential(net, tasks, "exact", "ong_old_factors", params=net.init(0), lr=0.5, steps=2, loss="cross_entropy")
    row = next(r for r in rows if (r["method"], r["projection"]) == ("exact", "ong_old_factors"))
    assert np.allclose(row["accuracy"], run.accuracy) and row["loss"] == "cross_entropy"
    assert main(["continual", "--method", "kfac", "--projection", "ong_old_factors", "--n", "4", "--n-tasks", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not declare" in err and "\n" not in err
