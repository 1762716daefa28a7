"""Every check helper the figures use for isotropy and convergence claims must *fail* on a deliberately
wrong kernel — 1.01·αI plus symmetric noise of size 1e-6·α, i.e. wrong by 1 % in α and not isotropic —
and hold on the right one (αI). The wrong kernel goes through the same code path as the measured one."""
from __future__ import annotations

import numpy as np
import pytest

from ntk_ngd import datasets, isotropy_table as table_mod
from ntk_ngd.diagnostics import isotropy
from ntk_ngd.dynamics import closed_form
from ntk_ngd.experiments import _base, convergence, isotropy_table, kfac_input_rank
from ntk_ngd.experiments._methods import log_deviation, one_step_theory
from ntk_ngd.methods.base import Prediction


def wrong(K, seed=0):
    """1.01·K + symmetric noise of relative size 1e-6."""
    K = np.asarray(K, dtype=float)
    rng = np.random.default_rng(seed)
    E = rng.standard_normal(K.shape)
    scale = np.trace(K) / K.shape[0]
    return 1.01 * K + 1e-6 * scale * (E + E.T) / 2


def _one_step_ratio(K, r0, lr):
    r = np.asarray(closed_form(K, r0[:, None], np.arange(2), lr)[0])
    return float(np.sum(r[1] ** 2) / np.sum(r[0] ** 2))


def test_base_helpers_fail_on_wrong_numbers():
    assert _base.check_close("x", 1.01, 1.0, 1e-8).status == "fails"
    assert _base.check_close("x", 1.0 + 1e-12, 1.0, 1e-8).status == "holds"
    assert _base.check_below("x", 2e-8, 1e-8).status == "fails"
    assert _base.check_range("x", 0.5, 0.6, 0.7, 0.65).status == "fails"
    assert _base.check_range("x", 0.65, 0.6, 0.7, 0.65, expect="breaks").status == "breaks as predicted"
    assert _base.check_below("x", float("nan"), 1.0).status == "fails"  # a non-finite measurement never passes
    kind = "other_method"
    assert _base.control_close("c", 1.01, 1.0, 1e-8, kind=kind).failed
    assert not _base.control_close("c", 1.0, 1.0, 1e-8, kind=kind).failed
    assert _base.control_below("c", 2.0, 1.0, kind=kind).failed
    assert _base.control_range("c", 2.0, 0.0, 1.0, kind=kind).failed
    with pytest.raises(ValueError, match="unknown control kind"):
        _base.control_below("c", 2.0, 1.0, kind="reversed")
    assert _base.unresolved("x", 0.1, -0.5, "more seeds").status == "unresolved"


def test_audit_flags_algebraic_and_missing_controls():
    """A control equal to −measured (reversed widths) or 2× it is a defect; so is a verdict without a control; a
    wrong_theory control on the measured value is fine when it states a differing theory."""
    row = _base.check_range("slope", -0.52, -0.6, -0.4, -0.5)
    assert _base.audit([row])  # no control
    assert _base.audit([row.with_controls(_base.control_range("rev", 0.52, -0.6, -0.4, kind="other_data"))])
    assert _base.audit([row.with_controls(_base.control_range("2x", -1.04, -0.6, -0.4, kind="other_data"))])
    rival = _base.control_range("rival", -0.52, -1.1, -0.9, kind="wrong_theory", wrong_theory=-1.0)
    assert not _base.audit([row.with_controls(rival)])
    assert not _base.audit([row.with_controls(_base.control_range("erf", 0.0377, -0.6, -0.4, kind="broken_condition"))])


def test_isotropy_table_rows_fail_on_a_wrong_kernel(monkeypatch):
    """isotropy_rows → method_checks with exact NGD's kernel replaced by the wrong one: its α and deviation rows
    fail; every other method's rows keep their status."""
    depths, widths = [1, 2], [16, None]
    methods = ["gd", "exact", "block_diag"]
    right = isotropy_table.method_checks(table_mod.isotropy_rows(depths, widths, methods, n=5, in_dim=6))
    real = table_mod.method_kernels

    def patched(net, X, method, **kw):
        out = real(net, X, method, **kw)
        return out._replace(train=wrong(out.train)) if method == "exact" else out

    monkeypatch.setattr(table_mod, "method_kernels", patched)
    bad = isotropy_table.method_checks(table_mod.isotropy_rows(depths, widths, methods, n=5, in_dim=6))
    status = {c.claim: c.status for c in right}
    assert all(status[c.claim] in ("holds", "breaks as predicted") for c in right)
    for c in bad:
        if c.methods == ("exact",):
            assert c.status == "fails", c
        else:
            assert c.status == status[c.claim], c


@pytest.mark.parametrize("alpha", [1.0, 3.0, 49.0])
def test_one_step_check_fails_on_a_wrong_kernel(alpha):
    """convergence.one_step_check with the theory (1 − ηα)² of an isotropic prediction: the right kernel αI
    holds, 1.01·αI + noise fails (relative error 2 %, tolerance 1e-8)."""
    n, c = 6, 0.5
    r0 = np.random.default_rng(1).standard_normal(n)
    pred = Prediction("m", alpha, True)
    lr = c / alpha
    theory = one_step_theory(pred, r0, lr)
    for K, expected in ((alpha * np.eye(n), "holds"), (wrong(alpha * np.eye(n)), "fails")):
        other = ("gd", _one_step_ratio(np.diag(np.linspace(0.5, 2.0, n)) * alpha, r0, lr))  # a non-isotropic kernel
        check = convergence.one_step_check("m", _one_step_ratio(K, r0, lr), theory, True, other)
        assert check.status == expected, check
        assert all(k.failed for k in check.controls)


def test_one_step_check_fails_on_a_wrong_diagonal_kernel():
    """The diagonal-kernel theory Σ(1 − ηd_n)²u_n²/Σu² (kpsvd, EF, SF): a 1 % error in the kernel fails it."""
    n = 6
    rng = np.random.default_rng(2)
    d, r0 = rng.uniform(0.5, 2.0, n), rng.standard_normal(n)
    pred = Prediction("m", float(d.mean()), False, diagonal=d, deviation=0.3)
    lr = 0.5 / d.max()
    theory = one_step_theory(pred, r0, lr)
    assert convergence.one_step_check("m", _one_step_ratio(np.diag(d), r0, lr), theory, False,
                                      ("gd", 0.0)).status == "breaks as predicted"
    assert convergence.one_step_check("m", _one_step_ratio(wrong(np.diag(d)), r0, lr), theory, False,
                                      ("gd", 0.0)).status == "fails"


def test_band_check_fails_on_a_wrong_kernel():
    """convergence.band_check at the quick profile's width (3/√1024 = 0.094): a trajectory under 1.01·αI + noise
    compared with the one under αI drifts by 2·log(0.495/0.5) per step, 0.10 after five steps: outside."""
    n, alpha, c = 6, 3.0, 0.5
    width = convergence.PROFILES["quick"]["width"]
    r0 = np.random.default_rng(3).standard_normal(n)[:, None]
    t = np.arange(convergence.BAND_STEPS + 1)

    def loss(K):
        r = np.asarray(closed_form(K, r0, t, c / alpha)[0])
        return np.sum(r**2, axis=(1, 2))

    reference = loss(alpha * np.eye(n))
    assert convergence.band_check("m", log_deviation(loss(alpha * np.eye(n)), reference, 5), width).status == "holds"
    assert convergence.band_check("m", log_deviation(loss(wrong(alpha * np.eye(n))), reference, 5),
                                  width).status == "fails"


def test_isotropy_measure_sees_the_wrong_kernel():
    """diagnostics.isotropy (the measurement behind every isotropy row): deviation ≈ 1e-6 > 1e-8, α off by 1 %."""
    K = 4.0 * np.eye(7)
    iso = isotropy(wrong(K))
    assert iso.deviation > isotropy_table.TOL and abs(iso.alpha / 4.0 - 1) > 1e-3
    assert isotropy(K).deviation <= isotropy_table.TOL


def test_kfac_input_rank_leverage_checks_fail_on_a_wrong_kernel():
    """kfac_input_rank's per-sample diagonal check: a kernel 1 % off its leverage-score prediction fails."""
    X = datasets.sphere(12, 3, seed=0)
    A = np.concatenate([X, np.ones((12, 1))], axis=1)
    prediction = 12 + 1 + 12 * kfac_input_rank._qr_leverage(A)
    K = wrong(np.diag(prediction))
    assert np.max(np.abs(np.diag(K) - prediction) / prediction) > kfac_input_rank.DIAG_TOL
