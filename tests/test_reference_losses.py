"""Every registered method, both losses: the Gram form (``nn.method_kernels``, ``nn.training.parameter_update``)
equals the explicit P×P reference (``ntk_ngd.reference``) on small networks.

The methods come from the registry (``ntk_ngd.methods.registered()``), never from a hand list, so a new
method is compared as soon as it is registered; a method without a reference fails
``test_every_method_has_a_reference``. Options: each method's defaults, plus one non-default value per
option named in ``VARIANTS`` (keyed by option name, not by method).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import ntk_ngd as nn
from ntk_ngd import methods, reference

from conftest import rel_err

RHO = 1e-3
# Error model at ρ = 1e-3: both sides solve systems whose condition number is ≲ λ_max/ρ ≈ 1e3–1e5
# (G + ρI in P×P here, Θ + NρI in N·k×N·k there), so each carries ≲ cond·eps ≈ 1e-11 relative error
# (measured ≤ 5e-12); 1e-8 leaves three orders of margin and still catches any wrong term (O(1)).
TOL = 1e-8
LR = 0.7


def _skip_pattern(depth: int) -> np.ndarray:
    """Couples the first and last layers only (block-diagonal for depth ≤ 2 plus that corner)."""
    S = np.eye(depth)
    S[0, -1] = S[-1, 0] = 1.0
    return S


#: non-default values per option name (a callable of the depth for depth-dependent ones)
VARIANTS = {"pattern": _skip_pattern, "bandwidth": lambda depth: 1, "kfac_readout": lambda depth: "paper",
            "samples": lambda depth: 3, "rank": lambda depth: 2}

#: (loss, C, depth, widths, activation, N, bias)
CONFIGS = {
    "mse-C1-d3-relu": ("mse", 1, 3, [6, 4], "relu", 4, True),
    "mse-C2-d2-erf": ("mse", 2, 2, 5, "erf", 3, True),
    "mse-C2-d1-nobias": ("mse", 2, 1, 4, "erf", 4, False),
    "ce-C3-d1": ("cross_entropy", 3, 1, 4, "erf", 4, True),
    "ce-C3-d2-erf-nobias": ("cross_entropy", 3, 2, 5, "erf", 3, False),
    "ce-C3-d3-relu": ("cross_entropy", 3, 3, [6, 4], "relu", 4, True),
}
_CACHE: dict = {}


def problem(name):
    if name not in _CACHE:
        loss, C, depth, width, act, n, bias = CONFIGS[name]
        net = nn.mlp(depth=depth, width=width, in_dim=3 if depth < 3 else 2, out_dim=C, activation=act, bias=bias,
                     w_std=1.3, b_std=0.4)
        rng = np.random.default_rng(depth + 10 * C)
        X, X_test = rng.standard_normal((n, net.in_dim)), rng.standard_normal((2, net.in_dim))
        Y = rng.standard_normal((n, C)) if loss == "mse" else rng.integers(0, C, n)
        _CACHE[name] = (loss, net, net.init(depth), X, X_test, Y)
    return _CACHE[name]


def option_cases(spec: methods.Method, depth: int) -> list[dict]:
    """The defaults (when they are valid) and one case per option with a value in VARIANTS."""
    cases = []
    try:
        spec.normalise_options({}, depth)
        cases.append({})
    except ValueError:  # e.g. 'pattern' has no default S
        pass
    cases += [{o.name: VARIANTS[o.name](depth)} for o in spec.options if o.name in VARIANTS]
    return cases


def singular_sampled_fisher(net, params, X, loss, opts) -> bool:
    """Whether sf's draw (samples >= rows per sample) still leaves some Q_n = Σ_s ξξᵀ/k singular.

    Cross-entropy samples are classes y ~ Cat(p): Q_n has rank min(#distinct classes drawn, C − 1), so
    samples >= C − 1 does not make it invertible (all draws of one class: rank 1). Computed from the
    reference's own draw."""
    p = reference.problem.build(net, params, X, loss)
    xi = p.model_scores(opts.get("samples", 1), opts.get("seed", 0), 0)
    if xi.shape[-1] < xi.shape[1]:
        return False  # the registry handles samples < rows as singular (its 1/ρ branch)
    return any(np.linalg.matrix_rank(x @ x.T) < x.shape[0] for x in xi)


#: registry bug found by this suite (diagnosis in the docstring of the test below)
SF_FULL_RANK_BUG = ("ntk_ngd.methods.sf._full_rank decides 'every Q_n invertible' from samples >= rows; for "
                    "cross-entropy a draw with fewer than C-1 distinct classes leaves Q_n singular, so u = Ec fails "
                    "and the update/step are wrong (the kernel, which checks Q's eigenvalues, is right)")


def test_every_method_has_a_reference():
    assert set(reference.BUILDERS) == set(nn.METHODS)


@pytest.mark.parametrize("method", nn.METHODS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gram_form_equals_reference(config, method):
    """Θ̃_G(X, X), Θ̃_G(X_test, X) (MSE: Θ_G; cross-entropy: RΘ_GRᵀ and (I ⊗ Vᵀ)Θ_G(x', X)Rᵀ) and the update
    −η(G + ρI)⁻¹∇L at ρ = 1e-3, Gram form vs explicit P×P (relative max error ≤ TOL).

    Known registry bug (sf, cross-entropy, samples >= C − 1 with a draw of fewer than C − 1 distinct
    classes): the reference update is (G + ρI)⁻¹∇L solved densely from G = Σ_s ΦᵀΦ/(Nk); a third,
    plain-numpy solve agrees with it to 6e-15 and so does the registry's own general (Woodbury) branch,
    while the registry's full-rank branch is off by O(1). Marked xfail only when that condition holds."""
    loss, net, params, X, X_test, Y = problem(config)
    spec = methods.get(method)
    if loss in dict(spec.unsupported_losses):
        pytest.skip(f"{method} does not support {loss}: {dict(spec.unsupported_losses)[loss]}")
    targets = {"targets": Y} if spec.needs_residual else {}
    failures, explained = [], True
    for opts in option_cases(spec, net.depth):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rank-deficient layer warnings: not under test
            got = nn.method_kernels(net, X, method, params=params, damping=RHO, X_test=X_test, loss=loss, **targets,
                                    **opts)
            update = nn.training.parameter_update(net, params, X, Y, method, LR, RHO, loss=loss, **opts)
        ref_train, ref_test = reference.preconditioned_kernel(net, params, X, method, damping=RHO, X_test=X_test,
                                                              loss=loss, **targets, **opts)
        ref_update = reference.parameter_update(net, params, X, Y, method, LR, RHO, loss=loss, **opts)
        errors = {"train kernel": rel_err(got.train, ref_train), "test kernel": rel_err(got.test, ref_test),
                  "update": rel_err(reference.flatten_params(net, update), ref_update)}
        bad = {k: f"{v:.1e}" for k, v in errors.items() if not v <= TOL}
        if bad:
            failures.append(f"{opts}: {bad}")
            explained &= (spec.random and loss == "cross_entropy" and set(bad) == {"update"}
                          and singular_sampled_fisher(net, params, X, loss, opts))
    if failures and explained:
        pytest.xfail(SF_FULL_RANK_BUG)
    assert not failures, f"{method} {config}: " + "; ".join(failures)


@pytest.mark.parametrize("config", ["mse-C2-d2-erf", "ce-C3-d1"])
def test_sampled_fisher_draw_of_a_later_step(config):
    """``method_kernels(step=t)`` and the reference's sf option ``step=t`` use the same model samples."""
    loss, net, params, X, X_test, Y = problem(config)
    for step in (1, 4):
        got = nn.method_kernels(net, X, "sf", params=params, damping=RHO, X_test=X_test, loss=loss, step=step,
                                samples=3, seed=2)
        ref = reference.preconditioned_kernel(net, params, X, "sf", damping=RHO, X_test=X_test, loss=loss, step=step,
                                              samples=3, seed=2)
        assert rel_err(got.train, ref[0]) <= TOL and rel_err(got.test, ref[1]) <= TOL
        other = reference.preconditioned_kernel(net, params, X, "sf", damping=RHO, loss=loss, step=0, samples=3,
                                                seed=2)[0]
        assert rel_err(other, ref[0]) > 1e-3  # a different draw: the step matters


@pytest.mark.xfail(strict=True, reason="ntk_ngd.methods.unit_wise at rho = 0 factors K^H ⊗ 1_{k×k} by eigh, so the "
                   "k rows of one sample differ by ~1e-15 and an exactly rank-1 unit block gets a spurious singular "
                   "value (3e-15 relative) above its SVD cut-off max(shape)·eps: the projector gains a direction "
                   "(train 9e-2) and the test kernel blows up (5e11). Expanding the sample-level factor "
                   "(expand_rows(gram_factor(K^H))) agrees with the reference to 5e-11.")
def test_unit_wise_undamped_unit_active_on_one_sample():
    """ρ = 0, k = 2 outputs, ReLU: a unit active on a single sample has a Jacobian block of exact rank 1 (the k
    rows δ_{j,c}(x_n)h̃_n are parallel), so the ρ → 0⁺ limit is the rank-1 projector (reference: eigenvalues
    of G_b below b·eps·λ_max dropped; here the second is ~1e-33·λ_max, rounding only)."""
    net = nn.mlp(depth=3, width=[6, 4], in_dim=2, out_dim=2, activation="relu", w_std=1.3, b_std=0.4)
    params = net.init(1)
    rng = np.random.default_rng(5)
    X, X_test = rng.standard_normal((4, 2)), rng.standard_normal((2, 2))
    _, deltas = reference.layer_signals(net, params, X)
    active = np.sum(np.any(deltas[1] != 0, axis=1), axis=0)  # samples on which each layer-2 unit is active
    assert np.any(active == 1)  # the situation under test occurs
    ref_train, ref_test = reference.preconditioned_kernel(net, params, X, "unit_wise", X_test=X_test)
    got = nn.method_kernels(net, X, "unit_wise", params=params, X_test=X_test)
    # ρ = 0: the kept unit blocks have cond(J_b) ≲ 1e2 here, so both pseudo-inverses are accurate to ~1e-12
    assert rel_err(got.train, ref_train) <= TOL and rel_err(got.test, ref_test) <= TOL
