"""The pre-registered rows of the figure: every band is fixed here, before the runs, from a stated error model.

* **Sign test** (γ rankings): over the n judged records (every snapshot of every judged run; all directions at the
  same parameters and evaluation batch) p̂ = fraction with γ_A < γ_B. "No preference" has p̂ = 1/2 with
  SE 1/(2√n); the row holds at p̂ ≥ 1/2 + 2 SE, fails at p̂ ≤ 1/2 − 2 SE, else unresolved (records of one run are
  correlated, so the effective n is smaller than n: the band is optimistic, not conservative).
* **Loss differences** (final train loss A < B): d = mean over judged seeds of log L_A − log L_B; a run-to-run
  scatter σ of log final loss is pooled from the calibration seeds (every method and learning rate with finite
  runs); SE(d) = σ√(2/J), J judged seeds; holds at d ≤ −2 SE, fails at d ≥ +2 SE, else unresolved.
* **No damping tuning**: V = max − min over the damping grid ∩ [1e-8, 1e-2] of the judged-seed mean log final loss;
  x = max(log 1.1, 3 SE), SE as above (a 10% change in final loss is below what tuning a hyper-parameter is for).
"""
from __future__ import annotations

import math

import numpy as np

from .._base import Check, Control, identity, unpredicted, unresolved

FINDING = "finding-ief-optimiser"
#: iEF's damping range of the "no damping tuning" claim, and the smallest loss change that counts as tuning
RANGE = (1e-8, 1e-2)
MIN_EFFECT = math.log(1.1)
K_SE = 2.0


def sign_band(n: int) -> tuple[float, float]:
    se = 0.5 / math.sqrt(max(n, 1))
    return 0.5 + K_SE * se, 0.5 - K_SE * se


def fraction(a, b) -> tuple[float, int]:
    """(fraction of finite pairs with a < b, number of finite pairs)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return (float(np.mean(a[ok] < b[ok])) if ok.any() else float("nan")), int(ok.sum())


def sign_row(claim, a, b, *, family, methods, controls, median_ratio) -> Check:
    """p̂ = P(γ_A < γ_B) over the records against the sign-test band (module docstring)."""
    p, n = fraction(a, b)
    hi, lo = sign_band(n)
    text = f"{claim} (median gamma ratio {median_ratio:.3g}, n = {n} records)"
    model = f"sign test: SE = 1/(2 sqrt(n)) = {0.5 / math.sqrt(max(n, 1)):.3g}, holds at >= 1/2 + 2 SE, fails at <= 1/2 - 2 SE"
    if not math.isfinite(p):
        return unresolved(text, p, "> 1/2", "no finite records").about(family, *methods)
    if p >= hi:
        status = "holds"
    elif p <= lo:
        status = "fails"
    else:
        return unresolved(text, p, "> 1/2", f"p = {p:.3g} inside (1/2 +- 2 SE) = ({lo:.3g}, {hi:.3g}); more judged "
                          "seeds", error_model=model, controls=tuple(controls)).about(family, *methods)
    return Check(text, p, "> 1/2", f"in [{hi:g}, 1]", status, model, tuple(controls), finding=FINDING
                 if status == "fails" else "").about(family, *methods)


def sign_control(description, a, b, n_ref) -> Control:
    """The same sign test on a pair the claim excludes (must fail: p̂ below the row's band)."""
    p, _ = fraction(a, b)
    hi, _ = sign_band(n_ref)
    return Control(description, p, not (math.isfinite(p) and p >= hi), "other_method")


def pooled_sigma(cal_logs: dict) -> float:
    """sd of log final loss across calibration seeds, pooled over (method, lr) cells with ≥ 2 finite seeds."""
    var = [np.var(v, ddof=1) for v in cal_logs.values() if np.sum(np.isfinite(v)) >= 2 and np.all(np.isfinite(v))]
    return float(np.sqrt(np.mean(var))) if var else float("nan")


def mean_log(losses) -> float:
    x = np.log(np.asarray(losses, float))
    return float(np.mean(x)) if np.all(np.isfinite(x)) else float("inf")


def loss_row(claim, a, b, sigma, J, *, family, methods, controls, cal) -> Check:
    """d = mean log L_A − mean log L_B ≤ −2 SE (module docstring)."""
    d = mean_log(a) - mean_log(b)
    se = sigma * math.sqrt(2.0 / J)
    model = (f"seed scatter: sigma(log final loss) = {sigma:.3g} pooled over the calibration seeds, SE(d) = "
             f"sigma sqrt(2/J) = {se:.3g} (J = {J}); holds at d <= -2 SE, fails at d >= +2 SE")
    text = f"{claim}: d = mean log L_A - mean log L_B over judged seeds"
    if not math.isfinite(se):
        return unresolved(text, d, "< 0", "needs >= 2 calibration seeds for sigma", error_model=model,
                          calibration=cal).about(family, *methods)
    if d <= -K_SE * se:
        status = "holds"
    elif d >= K_SE * se or not math.isfinite(d):
        status = "fails"
    else:
        return unresolved(text, d, "< 0", f"|d| < 2 SE = {K_SE * se:.3g}; more judged seeds", error_model=model,
                          controls=tuple(controls), calibration=cal).about(family, *methods)
    return Check(text, d, "< 0", f"<= {-K_SE * se:g}", status, model, tuple(controls),
                 finding=FINDING if status == "fails" else "", calibration=cal).about(family, *methods)


def loss_control(description, a, b, sigma, J, kind="other_method") -> Control:
    d = mean_log(a) - mean_log(b)
    se = sigma * math.sqrt(2.0 / J)
    return Control(description, d, not (math.isfinite(d) and d <= -K_SE * se), kind)


def damping_variation(sweep: dict, lo=RANGE[0], hi=RANGE[1]) -> float:
    """max − min over dampings in [lo, hi] of the judged-seed mean log final loss (inf if a run diverged)."""
    vals = [mean_log(v) for rho, v in sweep.items() if lo * (1 - 1e-9) <= rho <= hi * (1 + 1e-9)]
    if len(vals) < 2:
        return float("nan")
    return float(max(vals) - min(vals)) if all(map(math.isfinite, vals)) else float("inf")


def tuning_threshold(sigma, J) -> float:
    se = sigma * math.sqrt(2.0 / J)
    return max(MIN_EFFECT, 3 * se) if math.isfinite(se) else MIN_EFFECT


def damping_row(sweeps, sigma, J, cal) -> Check:
    """iEF's final loss varies < x across damping 1e-8 … 1e-2; controls: EF's and SF's over the same range, iEF's
    over 1e-8 … 1 (ρ = 1 is not small against the per-sample-gradient Gram late in training)."""
    x = tuning_threshold(sigma, J)
    v = damping_variation(sweeps["ief"])
    controls = [Control(f"{m}'s variation over the same range (a method the paper says needs damping tuning)",
                        damping_variation(sweeps[m]), not (damping_variation(sweeps[m]) <= x), "other_method")
                for m in ("ef", "sf") if m in sweeps]
    wide = damping_variation(sweeps["ief"], RANGE[0], max(sweeps["ief"]))
    controls.append(Control(f"iEF over 1e-8 ... {max(sweeps['ief']):g} (broken condition: large damping)", wide,
                            not (wide <= x), "broken_condition"))
    rhos = sorted(r for r in sweeps["ief"] if RANGE[0] * (1 - 1e-9) <= r <= RANGE[1] * (1 + 1e-9))
    text = (f"iEF needs no damping tuning: max - min of mean log final train loss over damping {rhos} "
            f"< x = max(log 1.1, 3 SE) = {x:.3g}")
    model = (f"seed scatter sigma = {sigma:.3g} (log final loss, calibration seeds), SE = sigma sqrt(2/J), J = {J}; "
             "floor log 1.1 (a 10% loss change)")
    ok = math.isfinite(v) and v <= x
    return Check(text, v, 0.0, f"<= {x:g}", "holds" if ok else "fails", model, tuple(controls),
                 finding="" if ok else FINDING, calibration=cal).about("iEF damping robustness", "ief")


def closed_form_row(errors, tols, other_errors, conds) -> Check:
    """γ of the package's exact NG direction (ρ = 0) == (mean (1 − p_y)/p_y)^{-1/2}: max of error/tolerance ≤ 1,
    tolerance 10·κ(Θ̃)·eps per snapshot."""
    ratio = float(np.max(np.asarray(errors) / np.asarray(tols)))
    other = float(np.max(np.asarray(other_errors) / np.asarray(tols)))
    text = (f"gamma of the exact NG direction (rho = 0, Gram form) == (mean_n (1 - p_y)/p_y)^(-1/2) on the eval batch, "
            f"max rel. error / tolerance over {len(errors)} snapshots (max rel. error {max(errors):.1e}, "
            f"cond(Theta~) up to {max(conds):.1e})")
    ctrl = Control("iEF's direction against the same closed form", other, not other <= 1.0, "other_method")
    return Check(text, ratio, 0.0, "<= 1", "holds" if ratio <= 1.0 else "fails",
                 "floating point: 10 cond(Theta~) eps per snapshot (forward error of the pseudo-inverse solve)",
                 (ctrl,), finding="" if ratio <= 1.0 else FINDING).about("exact NG gamma closed form", "exact")


def dense_row(rel, rel_wrong, tol=1e-10) -> Check:
    text = ("gamma matrix-free (one jvp, softmax Lambda_n) == dense sqrt(v'Fv)/|g'v| (reference P x P Fisher, jacrev), "
            "max rel. diff over random directions, the gradient and the dense (damped) NG directions")
    ctrl = Control("the dense gamma with the empirical Fisher sum_n g_n g_n'/N in place of F", rel_wrong,
                   not rel_wrong <= tol, "other_method")
    return Check(text, rel, 0.0, f"<= {tol:g}", "holds" if rel <= tol else "fails",
                 "floating point: float64 sums of P = a few hundred terms, 1e-10", (ctrl,),
                 finding="" if rel <= tol else FINDING).about("gamma indicator (matrix-free vs dense)")


def cauchy_schwarz_row(min_ratio) -> Check:
    return identity(Check("gamma of every direction >= closed-form gamma_NG (Cauchy-Schwarz), min ratio over records",
                          min_ratio, ">= 1", f"in [{1 - 1e-8:g}, inf]", "holds" if min_ratio >= 1 - 1e-8 else "fails",
                          finding="" if min_ratio >= 1 - 1e-8 else FINDING)).about("Cauchy-Schwarz")


__all__ = ["FINDING", "closed_form_row", "cauchy_schwarz_row", "damping_row", "dense_row", "fraction", "loss_control",
           "loss_row", "mean_log", "pooled_sigma", "sign_control", "sign_row", "tuning_threshold", "unpredicted"]
