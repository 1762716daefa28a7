"""docs/THEORY.md#finding-indefinite-damped-kernel: the block-tridiagonal part of the Fisher is not positive
semi-definite, so at intermediate damping its NGD kernel J(G_tri + ρI)⁻¹Jᵀ/N has negative eigenvalues, and
``predict`` flags it ("indefinite at damping ρ (lambda_min = …)", from the Gram form).

Checked against the dense parameter-space reference (``reference.preconditioned_kernel``: the explicit P×P
G_tri + ρI, an independent computation): the negative eigenvalue of the finding (ρ = 1e-2: λ_min = −1.70 here on
12 rotated digits, depth 3, width 24, ReLU) and predict's λ_min agree to the solves' floating-point error
(κ·eps with κ ≲ 1e6 here: tolerance 1e-8 relative). Controls: at ρ = 10 (above |λ_min(G_tri)|) the dense kernel
is positive definite and predict says so; block_diag's pattern (S = I, positive semi-definite) is never flagged.
"""
from __future__ import annotations

import numpy as np
import pytest

from ntk_ngd import Damping, layer_kernels, predict, reference
from ntk_ngd.continual import rotated_tasks
from ntk_ngd.methods import _pattern
from ntk_ngd.methods.base import Context
from ntk_ngd.networks import mlp

TOL = 1e-8


@pytest.fixture(scope="module")
def problem():
    (X, _), = rotated_tasks(1, 12, seed=0)
    net = mlp(depth=3, width=24, in_dim=X.shape[1], out_dim=10)  # ten classes, as in figure continual
    return net, net.init(0), np.asarray(X)


def _dense_lambda_min(net, params, X, method, rho, **options):
    K, _ = reference.preconditioned_kernel(net, params, X, method, damping=rho, **options)
    K = np.asarray(K, float)
    return float(np.linalg.eigvalsh(0.5 * (K + K.T))[0])


def _flag(pred):
    return next((c for c in pred.conditions if c.name == "damped_kernel_positive"), None)


@pytest.mark.parametrize("method, options", [("block_tridiag", {}), ("pattern", {"bandwidth": 1})])
def test_predict_flags_the_negative_eigenvalue_of_the_dense_reference(problem, method, options):
    net, params, X = problem
    dense = _dense_lambda_min(net, params, X, method, 1e-2, **options)
    pred = predict(net, X, method, params=params, damping=1e-2, **options)
    flag = _flag(pred)
    assert dense < 0, dense  # the finding: indefinite at intermediate damping
    assert flag is not None and not flag.holds and not pred.isotropic, pred
    assert pred.summary().startswith(f"{method}: indefinite at damping 0.01 (lambda_min = "), pred.summary()
    lam = float(flag.detail.split("lambda_min = ")[1].rstrip(")"))
    assert abs(lam - dense) <= 5e-3 * abs(dense)  # the detail prints 3 significant digits (half a unit: 5e-3)
    ctx = Context(n=X.shape[0], damping=Damping.of(1e-2))
    S = _pattern.banded_pattern(net.depth, 1)
    lk = layer_kernels(net, X, params=params)  # the full-precision value behind the detail
    assert abs(_pattern.damped_lambda_min(lk, ctx, S) - dense) <= TOL * abs(dense), (dense,)


def test_large_damping_and_block_diag_are_not_flagged(problem):
    net, params, X = problem
    assert _dense_lambda_min(net, params, X, "block_tridiag", 10.0) > 0
    flag = _flag(predict(net, X, "block_tridiag", params=params, damping=10.0))
    assert flag is not None and flag.holds, flag
    assert _flag(predict(net, X, "block_diag", params=params, damping=1e-2)) is None
