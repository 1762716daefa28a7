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


def test_singular_categorical_draws_occur_in_the_suite():
    """The cross-entropy configurations include a sampled-Fisher draw whose Q_n is singular although
    samples ≥ C − 1 (the case of the sf bug this suite found), so the Gram-vs-reference test covers it."""
    sf = methods.get("sf")
    hits = [singular_sampled_fisher(*problem(c)[1:4], "cross_entropy", opts) for c in CONFIGS
            if problem(c)[0] == "cross_entropy" for opts in option_cases(sf, problem(c)[1].depth)]
    assert any(hits)


def test_every_method_has_a_reference():
    assert set(reference.BUILDERS) == set(nn.METHODS)


@pytest.mark.parametrize("method", nn.METHODS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gram_form_equals_reference(config, method):
    """Θ̃_G(X, X), Θ̃_G(X_test, X) (MSE: Θ_G; cross-entropy: RΘ_GRᵀ and (I ⊗ Vᵀ)Θ_G(x', X)Rᵀ) and the update
    −η(G + ρI)⁻¹∇L at ρ = 1e-3, Gram form vs explicit P×P (relative max error ≤ TOL).

    This test found a registry bug (sf with cross-entropy: categorical draws hitting fewer than C − 1 distinct
    classes make Q_n singular although samples ≥ C − 1; the full-rank branch was then off by O(1)); sf now
    always takes the general form, exact for any Q."""
    loss, net, params, X, X_test, Y = problem(config)
    spec = methods.get(method)
    if loss in dict(spec.unsupported_losses):
        pytest.skip(f"{method} does not support {loss}: {dict(spec.unsupported_losses)[loss]}")
    targets = {"targets": Y} if spec.needs_residual else {}
    failures = []
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


def test_unit_wise_undamped_unit_active_on_one_sample():
    """Found a registry bug (factoring K^H ⊗ 1_{k×k} by eigh gave a sample's k rows coordinates differing by
    ~1e-15, so an exactly rank-1 unit block got a spurious singular value above its cut-off: train kernel off
    by 9e-2, test kernel 5e11); unit_wise now expands the sample-level factor.

    ρ = 0, k = 2 outputs, ReLU: a unit active on a single sample has a Jacobian block of exact rank 1 (the k
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
