"""The cross_entropy figure's registry-wide part: every registered method on a small softmax problem (digits,
a few classes), where even the methods whose Gram forms scale like (N·N(C−1))³ (corrected K-FAC, rank-k
KPSVD) run in seconds. Three claim families (THEORY.md "Cross-entropy NGD in function space"):

* **isotropy of the whitened kernel RΘ_GRᵀ at f = 0** (every Λ_n equal): where ``predict`` says Θ̃_G = α·I,
  α and the deviation (floating point, 1e-8); where a named condition fails, deviation > 1e-8 ("breaks as
  predicted"); where the theory is silent, shown. Controls: gd's kernel (isotropic rows), exact NGD's
  (breaking rows).
* **first-order per-sample loss change at θ₀** (finite width), g_nᵀΔf_n/η with Δf the method's logit step:
  −α||u_n||² where the whitened kernel is predicted α·I (exact NGD: −(1 − p_y)/p_y), −1 for EF (claim 5,
  Δf = −ηΘR̃(R̃ᵀΘR̃)⁺1), −||g_n||² for iEF (claim 6); shown elsewhere. Floating point, 1e-8. Control: the
  rates of another method against the same theory.
* **finite width follows its linearisation** (claim 8, lazy regime): real training at width M vs the
  linearised logit dynamics at θ₀ with the same step, |log loss ratio| ≤ 3/√M over steps 1..5 (the
  convergence figure's band, fixed in advance); outside it is a ``fails`` row with its number.
"""
from __future__ import annotations

import numpy as np

from .. import datasets, methods, problem as _problem
from ..diagnostics import isotropy, predict
from ..dynamics import simulate
from ..function_space import function_step
from ..networks import mlp
from ..training import train
from ._base import (Coverage, check_below, check_close, check_range, control_below, control_close, control_range,
                    unpredicted)
from ._methods import (FP_MODEL, FP_TOL, farthest_linearisation, kernel_and_prediction, log_deviation, options,
                       step_size)

LOSS = "cross_entropy"
ISO_TOL = 1e-8
BAND_CONSTANT, BAND_STEPS = 3.0, 5
FINDING = "finding-convergence-band"

ISOTROPY = Coverage.of("cross-entropy: isotropy at f = 0")
RATE = Coverage.of("cross-entropy: first-order loss change at theta_0")
LAZY = Coverage.of("cross-entropy: finite width follows its linearisation")


def _rate_theory(spec, pred, u, s):
    """(per-sample theory of g_nᵀΔf_n/η, formula) or None (module docstring)."""
    if pred.isotropic and pred.alpha is not None:
        return -pred.alpha * np.sum(u**2, axis=1), "-alpha ||u_n||^2"
    claims = {"ef": (-np.ones(len(u)), "-1 (claim 5)"), "ief": (-np.asarray(s), "-||g_n||^2 (claim 6)")}
    return claims.get(spec.name)


def run_all(cfg, seed, fraction, steps):
    """(checks, data, coverages) of the three families over every registered method."""
    X, Y = datasets.digits(cfg["n"], classes=cfg["classes"], seed=seed)
    net = mlp(depth=cfg["depth"], width=cfg["width"], in_dim=X.shape[1], out_dim=Y.shape[1])
    params = net.init(seed)
    zeros = np.zeros_like(Y, dtype=float)
    white = _problem.prepare(net, X, params, LOSS, Y).whitening()
    u, s = np.asarray(white.u), np.asarray(white.s)
    g = _probs(np.asarray(net.apply(params, X))) - Y
    kernels, rates, band, data = {}, {}, {}, {}
    iso_cov, rate_cov, lazy_cov = ISOTROPY, RATE, LAZY
    for spec in methods.registered():
        m, opts = spec.name, options(spec)
        try:  # isotropy at f = 0: infinite width, or the finite net's kernel at outputs 0 (diag)
            K, pred = kernel_and_prediction(net, X, Y, spec, None if not spec.finite_width_only else params, LOSS, zeros)
            kernels[m] = (isotropy(K), pred)
        except ValueError as err:
            iso_cov = iso_cov.skip(m, f"the method raises: {err}")
        step, _ = function_step(net, X, m, params=params, loss=LOSS, targets=Y, **opts)
        rates[m] = -np.sum(g * np.asarray(step), axis=1)
        try:
            K_fin, pred_fin = kernel_and_prediction(net, X, Y, spec, params, LOSS)
        except ValueError:  # no finite kernel at ρ = 0 (EF with k > 1): the step rule alone
            K_fin, pred_fin = None, predict(net, X, m, params=params, loss=LOSS, targets=Y, **opts)
        kernels[m + "/finite"] = pred_fin
        lr, rule = step_size(spec, K_fin, pred_fin, u, fraction)
        trained = train(net, params, X, Y, m, lr=lr, steps=steps, loss=LOSS, **opts)
        lin = simulate(net, X, Y, m, params=params, lr=lr, steps=steps, loss=LOSS, **opts)
        band[m] = (log_deviation(trained.train_loss, lin.train_loss, min(BAND_STEPS, steps)), rule,
                   trained.train_loss / trained.train_loss[0], lin.train_loss / lin.train_loss[0], lr)
        data[m] = {"rates": rates[m], "band_deviation": band[m][0], "lr": lr, "rule": rule,
                   "trained_rel_loss": band[m][2], "linearised_rel_loss": band[m][3]}
    checks = _isotropy_checks(kernels, iso_cov) + _rate_checks(kernels, rates, u, s, rate_cov)
    checks += _band_checks(band, cfg, steps, lazy_cov)
    data["problem"] = {"n": len(X), "classes": Y.shape[1], "width": cfg["width"], "depth": cfg["depth"]}
    return checks, data, (iso_cov, rate_cov, lazy_cov)


def _probs(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _isotropy_checks(kernels, cov):
    out = []
    gd, ex = kernels.get("gd"), kernels.get("exact")
    for spec in cov.applies():
        iso, pred = kernels[spec.name]
        m, claim = spec.name, f"cross-entropy, f = 0: {spec.name}"
        if pred.silent:
            out.append(unpredicted(f"{claim}: deviation of R Theta_G R^T from alpha I", iso.deviation,
                                   pred.note or "theory silent").about(cov.family, m))
        elif pred.isotropic:
            out.append(check_close(f"{claim}: alpha of R Theta_G R^T = theory {pred.alpha:g}", iso.alpha, pred.alpha,
                                   ISO_TOL, error_model=FP_MODEL,
                                   controls=[control_close("gd's kernel", gd[0].alpha, pred.alpha, ISO_TOL,
                                                           kind="other_method")])
                       .about(cov.family, m))
            out.append(check_below(f"{claim}: deviation ||R Theta_G R^T - alpha I||/||alpha I||", iso.deviation,
                                   ISO_TOL, error_model=FP_MODEL,
                                   controls=[control_below("gd's kernel", gd[0].deviation, ISO_TOL, kind="other_method")])
                       .about(cov.family, m))
        else:
            reason = pred.failed[0] if pred.failed else pred.note
            out.append(check_range(f"{claim}: deviation predicted NOT isotropic ({reason})", iso.deviation, ISO_TOL,
                                   float("inf"), f"> {ISO_TOL:g}", error_model=FP_MODEL, expect="breaks",
                                   controls=[control_range("exact NGD's kernel", ex[0].deviation, ISO_TOL, float("inf"),
                                                           kind="other_method")])
                       .about(cov.family, m))
    return out


def _rate_checks(kernels, rates, u, s, cov):
    out = []
    for spec in cov.applies():
        m = spec.name
        theory = _rate_theory(spec, kernels[m + "/finite"], u, s)
        claim = f"cross-entropy, theta_0: {m} per-sample first-order loss change g_n^T df_n / eta"
        if theory is None:
            out.append(unpredicted(f"{claim}, mean over samples", float(np.mean(rates[m]))).about(cov.family, m))
            continue
        th, formula = theory
        err = float(np.max(np.abs(rates[m] - th) / np.abs(th)))
        other = "ef" if m != "ef" else "exact"
        control = float(np.max(np.abs(rates[other] - th) / np.abs(th)))
        out.append(check_below(f"{claim} == {formula}, max rel. error", err, FP_TOL, error_model=FP_MODEL,
                               controls=[control_below(f"{other}'s rates against this theory", control, FP_TOL,
                                                       kind="other_method")])
                   .about(cov.family, m))
    return out


def _band_checks(band, cfg, steps, cov):
    width = cfg["width"]
    limit = BAND_CONSTANT / np.sqrt(width)
    out = []
    for spec in cov.applies():
        dev, rule, tr, li, _ = band[spec.name]
        other = farthest_linearisation({m: b[3] for m, b in band.items()}, spec.name, min(BAND_STEPS, steps))
        control = control_below(f"the same trained run vs {other}'s linearisation (eta = {band[other][1]})",
                                log_deviation(tr, band[other][3], min(BAND_STEPS, steps)), limit,
                                kind="other_method")
        out.append(check_below(
            f"cross-entropy: {spec.name} trained (M={width}, eta = {rule}) vs its linearisation at theta_0, max |log "
            f"loss ratio| over steps 1-{min(BAND_STEPS, steps)} (one-step loss x{tr[1]:.3g} vs x{li[1]:.3g})", dev,
            limit, error_model="width correction: O(M^-1/2), prefactor 3 fixed before the run", finding=FINDING,
            controls=[control]).about(cov.family, spec.name))
    return out


__all__ = ["run_all"]
