"""The factored (parameter-space) form against the Gram form and the dense reference (ntk_ngd.factored).

Loops over the registry's methods that declare a factored form (``Method.factored``), never a hand list.
Independent checks: the Gram form (N·k-sized push-through systems, ntk_ngd.methods) and the dense P×P
reference (ntk_ngd.reference: explicit Jacobian, explicit Kronecker fits and SVDs, numpy solves).

Error model (fixed before the runs): both forms compute the same float64 matrix through different
eigendecompositions (d- and m-sized here, N·k-sized there) and, for Kronecker sums, CG / power iterations
stopped at 1e-13 relative residual; at ρ ≥ 1e-3 with factors of norm ≲ 1 the conditioning is ≲ 1e4, so the
expected difference is ≲ 1e-9 relative. TOL = 1e-8 (the issue's bound) still fails on any real error (a
wrong damping rule or readout convention changes the direction by ≥ 1e-3 relative).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ntk_ngd as nn
from ntk_ngd import factored, losses, methods, optim, reference
from ntk_ngd.damping import Damping
from ntk_ngd.factored import kpsvd as kron_sums

TOL = 1e-8
DAMPINGS = (1e-3, 1e-1)
FACTORED = tuple(m.name for m in methods.registered() if m.factored is not None)
#: (depth, bias, out_dim, loss): depths 1–4, each loss with and without bias, out_dim > 1
CASES = ((1, True, 3, "mse"), (2, False, 2, "cross_entropy"), (3, False, 3, "mse"), (4, True, 3, "cross_entropy"))


def test_the_registry_declares_factored_forms():
    assert set(FACTORED) >= {"kfac", "ekfac", "diag", "kpsvd", "kfac_cor"}
    for spec in methods.registered():
        assert spec.forms == (("gram", "factored") if spec.name in FACTORED else ("gram",))


def case(depth, bias, out_dim, loss, n=10, width=8, seed=0):
    net = nn.mlp(depth=depth, width=width, in_dim=4, out_dim=out_dim, bias=bias, activation="erf")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    Y = rng.standard_normal((n, out_dim)) if loss == "mse" else rng.integers(0, out_dim, n)
    return net, net.init(seed), X, Y


def option_sets(spec, depth: int = 1):
    """The method's default options, and rank 2 (below full) for a method with a rank option (depth ≤ 2 only:
    each rank is one more compilation of both forms, ~10 s on the shared 2-core CPU)."""
    base = dict(spec.example_options)
    return [base] + ([{**base, "rank": 2}] if "rank" in spec.option_names and depth <= 2 else [])


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def relative(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


#: both forms jitted (one compilation per case and method serves both dampings: ρ is traced)
_gram = jax.jit(optim.direction, static_argnums=(0, 1, 2, 3))
_factored = jax.jit(factored.direction, static_argnums=(0, 1, 2, 3, 8, 9))


def both_forms(net, params, X, Y, loss, spec, opts, rho, settings=factored.Settings()):
    """(Gram-form direction, factored direction), flat."""
    loss = losses.get(loss)
    Y = jnp.asarray(loss.check_targets(Y, X.shape[0], net.out_dim))
    X = jnp.asarray(X)
    norm = spec.normalise_options(opts, net.depth)
    gram = _gram(net, spec, norm, loss, params, X, Y, Damping.of(rho))
    fac = _factored(net, spec, norm, loss, params, X, Y, Damping.of(rho), None, settings)
    return flat(gram), flat(optim.tildes_to_tree(net, params, fac))


@pytest.mark.parametrize("name", FACTORED)
@pytest.mark.parametrize("depth,bias,out_dim,loss", CASES)
def test_factored_equals_gram_form(name, depth, bias, out_dim, loss):
    spec = methods.get(name)
    net, params, X, Y = case(depth, bias, out_dim, loss)
    for opts in option_sets(spec, depth):
        for rho in DAMPINGS:
            gram, fac = both_forms(net, params, X, Y, loss, spec, opts, rho)
            assert relative(fac, gram) <= TOL, (opts, rho, relative(fac, gram))


@pytest.mark.parametrize("name", FACTORED)
@pytest.mark.parametrize("loss", tuple(losses.LOSSES))
@pytest.mark.parametrize("kron_fit", ("gram", "power"))
def test_factored_equals_dense_reference(name, loss, kron_fit):
    """P (~100) > N·k: the explicit P×P approximation of ntk_ngd.reference, solved with numpy; the Kronecker
    sums' terms by either fit (the direct sample-Gram SVD, the power iteration; other methods ignore it)."""
    spec = methods.get(name)
    net, params, X, Y = case(2, True, 3, loss, n=5, width=6, seed=1)
    for opts in option_sets(spec):
        _, fac = both_forms(net, params, X, Y, loss, spec, opts, 1e-3, factored.Settings(kron_fit=kron_fit))
        dense = -reference.parameter_update(net, params, X, Y, name, 1.0, 1e-3, loss=loss, **opts)
        assert relative(fac, dense) <= TOL, (opts, relative(fac, dense))


def _pi_two_term_dense(block, d, m, terms, rho):
    """Σ of ntk_ngd/factored/two_term.py built with np.kron from explicit (σ, A, B) terms."""
    (s1, A1, B1), rest = terms[0], terms[1:]
    if np.trace(A1) < 0:
        A1, B1 = -A1, -B1
    B1 = s1 * B1
    p = np.sqrt((np.trace(A1) / d) / (np.trace(B1) / m))
    M = np.kron(A1 + p * np.sqrt(rho) * np.eye(d), B1 + np.sqrt(rho) / p * np.eye(m))
    return M + sum(s * np.kron(A, B) for s, A, B in rest)


@pytest.mark.parametrize("name", [m for m in FACTORED if kron_sums.is_kronecker_sum(methods.get(m).factored)])
@pytest.mark.parametrize("loss", tuple(losses.LOSSES))
def test_pi_split_kronecker_sums_against_dense_solve(name, loss):
    """kpsvd (rank 2) / kfac_cor with factored_damping="pi": the first term damped as (A₁ + π√ρ) ⊗ (σ₁B₁ + √ρ/π)
    plus the second term, built with np.kron from the reference's explicit SVD of the rearranged dense block
    (kfac_cor: of the remainder F_l − A⊗G) and solved with numpy; control: the +ρI (rule) direction differs."""
    net, params, X, Y = case(2, True, 3, loss, n=5, width=6, seed=2)
    rho, spec = 1e-2, methods.get(name)
    opts = {"rank": 2} if name == "kpsvd" else {}
    _, fac = both_forms(net, params, X, Y, loss, spec, opts, rho, factored.Settings(factored_damping="pi"))
    grad = reference.parameter_update(net, params, X, Y, "gd", -1.0, loss=loss)
    blocks = reference.layer_fisher_blocks(net, params, X, loss=loss)
    expected = np.zeros_like(grad)
    for sl, F, (A, G) in zip(reference.layer_slices(net), blocks, reference.kfac_factors(net, params, X, loss=loss)):
        d, m = A.shape[0], G.shape[0]
        if name == "kpsvd":
            terms = reference.kpsvd_terms(F, d, m, 2)
        else:
            terms = [(1.0, A, G), *reference.kpsvd_terms(F - np.kron(A, G), d, m, 1)]
        expected[sl] = np.linalg.solve(_pi_two_term_dense(F, d, m, terms, rho), grad[sl])
    assert relative(fac, expected) <= TOL
    rule, _ = both_forms(net, params, X, Y, loss, spec, opts, rho)
    assert relative(rule, expected) > 1e-6  # another damping: a negative control


@pytest.mark.parametrize("loss", tuple(losses.LOSSES))
def test_pi_split_damping_against_dense_kronecker_solve(loss):
    """factored_damping="pi": (A + π√ρ) ⊗ (B + √ρ/π), π = sqrt((tr A/d)/(tr B/m)), against np.kron of the
    reference's K-FAC factors and the reference gradient (the paper readout, so that B_L ≠ G_L)."""
    net, params, X, Y = case(2, True, 3, loss, n=5, width=6, seed=2)
    rho = 1e-2
    spec = methods.get("kfac")
    opts = {"kfac_readout": "paper"}
    _, fac = both_forms(net, params, X, Y, loss, spec, opts, rho, factored.Settings(factored_damping="pi"))
    grad = reference.parameter_update(net, params, X, Y, "gd", -1.0, loss=loss)
    A_B = reference.kfac_factors(net, params, X, "paper", loss=loss)
    slices = reference.layer_slices(net)
    expected = np.zeros_like(grad)
    for sl, (A, B) in zip(slices, A_B):
        p = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(B) / B.shape[0]))
        M = np.kron(A + p * np.sqrt(rho) * np.eye(A.shape[0]), B + np.sqrt(rho) / p * np.eye(B.shape[0]))
        expected[sl] = np.linalg.solve(M, grad[sl])
    assert relative(fac, expected) <= TOL
    gram, _ = both_forms(net, params, X, Y, loss, spec, opts, rho)
    assert relative(gram, expected) > 1e-6  # the split is a different damping: a negative control


def test_ngd_factored_step_equals_gram_step_under_jit():
    net, params, X, Y = case(3, True, 3, "cross_entropy")
    steps = {}
    for form in factored.FORMS:
        tx = optim.ngd(net, 0.1, method="kfac", damping=1e-3, loss="cross_entropy", form=form)
        state = tx.init(params)
        Yc = losses.get("cross_entropy").check_targets(Y, X.shape[0], net.out_dim)
        update = jax.jit(lambda p, s: tx.update(p, s, p, batch=(X, Yc)))
        steps[form] = flat(optax.apply_updates(params, update(params, state)[0]))
    assert relative(steps["factored"], steps["gram"]) <= TOL


@pytest.mark.parametrize("kron_fit", ("gram", "power"))
def test_iterative_solves_converge_below_their_limits(kron_fit):
    """kfac_cor: the fit (the power iteration, or the direct fit's reported residual) and CG stop on their
    tolerance, not on maxiter, on a positive-definite system."""
    from ntk_ngd.factored import features, kpsvd, kron_sum

    net, params, X, Y = case(2, True, 3, "mse")
    feats = features.whitened_features(net, params, jnp.asarray(X), jnp.asarray(Y), losses.get("mse"))
    s = factored.Settings(kron_fit=kron_fit)
    for l, (H, d) in enumerate(zip(feats.inputs, feats.deltas)):
        terms = kpsvd.kfac_cor_terms(features.kron_factors(H, d), H, d, None, s, l)
        assert int(terms.iterations) < s.power_maxiter and float(terms.residual) <= s.power_tol
        sol = kron_sum.solve(terms, features.gradient(H, d, feats.u), 1e-3, s.cg_tol, s.cg_maxiter)
        assert int(sol.iterations) < s.cg_maxiter and float(sol.residual) <= s.cg_tol
        assert bool(sol.converged)


def test_cg_on_an_indefinite_kronecker_sum_solves_it_and_says_so():
    """A rank-2 Kronecker SVD of a PSD block that is indefinite beyond the damping (random nonnegative inputs,
    Gaussian signals; checked with numpy): PCG still solves it (against numpy's dense solve of the same matrix)
    and reports ``indefinite``; stopped at maxiter = 2 it reports ``converged=False`` and returns the first
    term's exact inverse. Control: ρ above the most negative eigenvalue makes it definite: no flag."""
    from ntk_ngd.factored import kron_sum, rearranged

    rng = np.random.default_rng(0)
    H, D = jnp.asarray(np.abs(rng.normal(size=(64, 12)))), jnp.asarray(rng.normal(size=(64, 1, 10)))
    grad = jnp.asarray(rng.normal(size=(12, 10)))
    terms = rearranged.fit_gram(H, D, 2)
    S = sum(float(s) * np.kron(np.asarray(A), np.asarray(B)) for s, A, B in zip(terms.sig, terms.A, terms.B))
    lowest, rho = np.linalg.eigvalsh(S).min(), 1e-3
    assert lowest < -10 * rho  # indefinite beyond the damping
    sol = kron_sum.solve(terms, grad, rho, 1e-12, 2000)
    assert bool(sol.indefinite) and bool(sol.converged)
    expected = np.linalg.solve(S + rho * np.eye(S.shape[0]), np.asarray(grad).ravel()).reshape(grad.shape)
    assert relative(np.ravel(sol.X), np.ravel(expected)) <= 1e-8
    short = kron_sum.solve(terms, grad, rho, 1e-12, 2)
    assert not bool(short.converged)
    np.testing.assert_allclose(short.X, kron_sum.first_term_inverse(terms, rho)(grad), rtol=1e-12)
    definite = kron_sum.solve(terms, grad, -2 * lowest, 1e-12, 2000)
    assert bool(definite.converged) and not bool(definite.indefinite)


# ---------------------------------------------------------------------------------------------
# one-line errors
# ---------------------------------------------------------------------------------------------
def test_one_line_errors():
    net = nn.mlp(depth=2, width=4, in_dim=3)
    without = [m.name for m in methods.registered() if m.factored is None]
    with pytest.raises(ValueError, match="unknown form 'dense'; choose one of: gram, factored"):
        optim.natural_gradient(net, "kfac", form="dense")
    for name in without:
        with pytest.raises(ValueError, match=f"method '{name}' has no factored form; methods with one: "
                                             + ", ".join(FACTORED)):
            optim.natural_gradient(net, name, form="factored")
    with pytest.raises(ValueError, match="belong to the factored form"):
        optim.natural_gradient(net, "kfac", factored_damping="pi")
    with pytest.raises(ValueError, match="factored_damping='pi' is not defined for method 'ekfac'"):
        optim.natural_gradient(net, "ekfac", form="factored", factored_damping="pi")
    with pytest.raises(ValueError, match="unknown factored_damping .half.; choose one of: rule, pi"):
        optim.natural_gradient(net, "kfac", form="factored", factored_damping="half")
    with pytest.raises(ValueError, match="factored_damping='pi' inverts at most 2 Kronecker terms exactly, got rank=3"):
        optim.natural_gradient(net, "kpsvd", form="factored", factored_damping="pi", rank=3)
    with pytest.raises(ValueError, match="unknown kron_fit 'svd'; choose one of: auto, gram, power"):
        optim.natural_gradient(net, "kpsvd", form="factored", kron_fit="svd")
    with pytest.raises(ValueError, match="cg_tol must be > 0"):
        optim.natural_gradient(net, "kfac_cor", form="factored", cg_tol=0.0)
    with pytest.raises(ValueError, match="cg_maxiter must be"):
        optim.natural_gradient(net, "kfac_cor", form="factored", cg_maxiter=0)


# ---------------------------------------------------------------------------------------------
# mini-batch curvature (ntk_ngd.factored.minibatch)
# ---------------------------------------------------------------------------------------------
def _batches(net, loss, count=3, n=8, seed=3):
    rng = np.random.default_rng(seed)
    spec = losses.get(loss)
    out = []
    for _ in range(count):
        X = rng.standard_normal((n, net.in_dim))
        Y = rng.standard_normal((n, net.out_dim)) if loss == "mse" else rng.integers(0, net.out_dim, n)
        out.append((jnp.asarray(X), jnp.asarray(spec.check_targets(Y, n, net.out_dim))))
    return out


def _run(tx, params, batches, lr=0.1):
    """Plain descent with the transformation's direction; returns (final params, the states after each step)."""
    state, states = tx.init(params), []
    update = jax.jit(lambda p, s, b: tx.update(p, s, p, batch=b))
    for b in batches:
        d, state = update(params, state, b)
        params = optax.apply_updates(params, jax.tree_util.tree_map(lambda x: -lr * x, d))
        states.append(state)
    return params, states


@pytest.mark.parametrize("name", FACTORED)
def test_minibatch_with_decay_0_and_period_1_is_the_full_batch_direction(name):
    """Three steps on three different batches: the Gram-form optimiser (each step full-batch on its batch)."""
    from ntk_ngd.factored import minibatch

    net = nn.mlp(depth=2, width=6, in_dim=3, out_dim=3, activation="erf")
    params, batches = net.init(0), _batches(net, "cross_entropy")
    ours, _ = _run(minibatch.natural_gradient(net, name, 1e-3, "cross_entropy", decay=0.0), params, batches)
    gram, _ = _run(optim.natural_gradient(net, name, 1e-3, "cross_entropy"), params, batches)
    assert relative(flat(ours), flat(gram)) <= TOL


def test_minibatch_amortisation_refreshes_only_every_period():
    """T_inv = 3 over 7 steps: 3 inverse refreshes (steps 0, 3, 6), the stored inverses change only there;
    T_cov = 2: the averaged factors change only at even steps."""
    from ntk_ngd.factored import minibatch

    net = nn.mlp(depth=2, width=6, in_dim=3, out_dim=2)
    tx = minibatch.natural_gradient(net, "kfac", 1e-2, "mse", decay=0.5, cov_every=2, inv_every=3)
    _, states = _run(tx, net.init(0), _batches(net, "mse", count=7))
    assert [int(s.inverse_updates) for s in states] == [1, 1, 1, 2, 2, 2, 3]

    def changed(a, b, field):
        return not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(getattr(a, field)),
                                                            jax.tree_util.tree_leaves(getattr(b, field))))

    assert [changed(states[t - 1], states[t], "inverses") for t in range(1, 7)] == [False, False, True, False, False, True]
    assert [changed(states[t - 1], states[t], "stats") for t in range(1, 7)] == [False, True, False, True, False, True]


@pytest.mark.parametrize("loss", tuple(losses.LOSSES))
def test_sampled_fisher_factors_converge_at_the_monte_carlo_rate(loss):
    """||G_sampled − G||_F over S model samples per input, RMS over 12 seeds, at S = 4..1024: a mean of S
    independent terms has RMS error ∝ S^(-1/2), so the log-log slope must be −0.5 (band ±0.15: the RMS over
    12 seeds of a χ-like error has ≈ 1/sqrt(2·12) ≈ 20% scatter per point, ≈ ±0.05 on a 5-point slope)."""
    from ntk_ngd.factored import features, minibatch

    net = nn.mlp(depth=2, width=6, in_dim=3, out_dim=3, activation="erf")
    X, Y = _batches(net, loss, count=1)[0]
    feats = features.whitened_features(net, net.init(0), X, Y, losses.get(loss))
    exact = [features.kron_factors(H, d)[1] for H, d in zip(feats.inputs, feats.deltas)]
    counts = np.array([4, 16, 64, 256, 1024])
    errors = []
    for S in counts:
        sq = 0.0
        for seed in range(12):
            curv = minibatch.batch_features(net, net.init(0), X, Y, losses.get(loss), "sampled",
                                            jax.random.PRNGKey(seed), int(S))[1]
            sq += sum(float(jnp.sum((features.kron_factors(H, d)[1] - G) ** 2))
                      for H, d, G in zip(feats.inputs, curv, exact))
        errors.append(np.sqrt(sq / 12))
    slope = np.polyfit(np.log(counts), np.log(errors), 1)[0]
    assert -0.65 <= slope <= -0.35, (slope, errors)


@pytest.mark.parametrize("loss", tuple(losses.LOSSES))
def test_batch_signals_equal_the_per_output_backward_signals(loss):
    """The mini-batch step's signals (one reverse pass per cotangent, contracted before the pass) against the
    per-output signals of ``kernels.layer_features`` (C passes, contracted after): the gradient's V = Σ_j u_j δ̃_j,
    the exact Fisher's rows δ̃_j, the empirical Fisher's V, and a sampled Fisher's Σ_j ξ_j δ̃_j/√S for the same ξ."""
    from ntk_ngd.factored import features, minibatch

    net = nn.mlp(depth=3, width=7, in_dim=4, out_dim=3, activation="erf")
    X, Y = _batches(net, loss, count=1)[0]
    params, L = net.init(2), losses.get(loss)
    ref = features.whitened_features(net, params, X, Y, L)
    V = [jnp.einsum("nj,njm->nm", ref.u, d)[:, None] for d in ref.deltas]
    key = jax.random.PRNGKey(3)
    xi = L.sample_scores(key, ref.f, 5) / np.sqrt(5)
    expected = {"whitened": list(ref.deltas), "empirical": V,
                "sampled": [jnp.einsum("njs,njm->nsm", xi, d) for d in ref.deltas]}
    for fisher, want in expected.items():
        feats, curv = minibatch.batch_features(net, params, X, Y, L, fisher, key, 5)
        for got, exp in [*zip(feats.deltas, V), *zip(curv, want)]:
            np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(exp))))


@pytest.mark.parametrize("name", factored.form.methods_with_factored_form())
def test_float32_steps_stay_float32(name):
    """jax's x64 is on for the package; a float32 model's mini-batch step must still compute in float32 (a float64
    damping, input scale or sampled score used to promote the factors, doubling the step's cost). Every array of
    the update and of the state is float32, and the step agrees with the float64 step to float32 accuracy."""
    from ntk_ngd.factored import minibatch

    net = nn.mlp(depth=3, width=8, in_dim=4, out_dim=3, activation="erf")
    X, Y = _batches(net, "mse", count=1)[0]
    opts = {"power_tol": 1e-6, "cg_tol": 1e-6}  # (used by the Kronecker sums, ignored by the others)
    steps = {}
    for fisher in ("sampled", "whitened"):  # (the sampled scores differ between dtypes: compare the exact Fisher)
        for dtype in (jnp.float32, jnp.float64):
            params = jax.tree_util.tree_map(lambda x: x.astype(dtype), net.init(0))
            tx = minibatch.natural_gradient(net, name, 1e-2, "mse", fisher=fisher, **opts)
            upd, state = tx.update(params, tx.init(params), params, batch=(X.astype(dtype), Y.astype(dtype)))
            floats = [x for x in jax.tree_util.tree_leaves((upd, state)) if jnp.issubdtype(x.dtype, jnp.floating)]
            assert {x.dtype for x in floats} == {jnp.dtype(dtype)}, (name, fisher, dtype)
            steps[dtype] = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(upd)])
    # float32 rounding (eps ≈ 1.2e-7) amplified by the damped condition ||G||/ρ ≲ 1e3: ≲ 1e-4; bound 1e-3
    assert np.linalg.norm(steps[jnp.float32] - steps[jnp.float64]) <= 1e-3 * np.linalg.norm(steps[jnp.float64])


def test_minibatch_one_line_errors():
    from ntk_ngd.factored import minibatch

    net = nn.mlp(depth=2, width=4, in_dim=3)
    for decay in (1.0, -0.1):
        with pytest.raises(ValueError, match="decay must be"):
            minibatch.natural_gradient(net, "kfac", decay=decay)
    with pytest.raises(ValueError, match=r"inv_every \(T_inv\) must be >= 1"):
        minibatch.natural_gradient(net, "kfac", inv_every=0)
    with pytest.raises(ValueError, match=r"cov_every \(T_cov\) must be >= 1"):
        minibatch.natural_gradient(net, "kfac", cov_every=0)
    with pytest.raises(ValueError, match="unknown fisher 'true'"):
        minibatch.natural_gradient(net, "kfac", fisher="true")
    with pytest.raises(ValueError, match="has no factored form"):
        minibatch.natural_gradient(net, "exact")
