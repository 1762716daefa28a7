"""Figure `convergence` (the headline): training loss vs step for every registered method, infinite-width
function-space theory beside real finite-width training (ntk_ngd.training), on synthetic data and on
scikit-learn's digits (THEORY.md claims 1–8 and "Kronecker-basis approximations").

Every method runs at c times its step rule, capped at the fastest stable constant step of its step-0 kernel
(:mod:`._methods`): isotropic methods then run at η = c/α and theory predicts one curve for all of them,
loss_t = (1 − c)^{2t} loss_0 (c = 1 reaches zero loss in one step; c = 0.5 keeps the curves visible).

Claim families, each over every method it applies to (the lists come from the registry):

* **one-step rate at infinite width** (f₀ = 0): where the method's ``predict`` says Θ_G = α·I, the loss ratio
  after one step is (1 − ηα)²; where it gives a diagonal kernel diag(d) (kpsvd's closed form, EF's
  diag(1/u²), SF's diag(1/q)), Σ(1 − ηd_n)²u_n²/Σu_n² ("breaks as predicted": not isotropic, with the
  predicted magnitude); elsewhere the theory is silent and the ratio is shown. Error model: the closed-form
  dynamics of a fixed kernel are exact up to rounding, κ(Θ_G)·eps; tolerance 1e-8. Control: the same method
  run at 0.9η, judged against the theory at η.
* **finite width follows its linearisation** (claim 8): real training at width M from θ₀ vs the linearised
  dynamics of the same network at θ₀ with the same step (the fixed finite-width kernel), max over steps
  1..5 of |log(loss_trained/loss_linearised)|, band 3/√M (deviation O(M^{-1/2}), prefactor 3 fixed in
  advance; 0.094 at M = 1024). A method outside the band is a ``fails`` row with its number (a finding in
  docs/THEORY.md), never dropped. Control: exact NGD's training judged against its linearisation at 0.9η.
* **iEF moves like exact NGD in parameter space** (claim 6, C = 1): G = diag(r)J gives
  Gᵀ(GGᵀ)⁻¹s = JᵀR(RΘR)⁻¹r² = JᵀΘ⁻¹r, exact NGD's minimum-norm step, so the two trained trajectories agree
  to rounding (κ(RΘR)·eps per step). Control: iEF against exact NGD run at 0.9η.
* trace identities (EKFAC α = Σ rank·rank/(NC), diag α = active parameters/(NC)) are shown as
  "identity (sanity)" rows: their measured side is a frame of unit vectors counted with the same cut-off.
"""
from __future__ import annotations

import jax
import numpy as np

from .. import datasets, methods, plotting
from ..diagnostics import isotropy
from ..dynamics import simulate
from ..networks import mlp
from ..training import train
from ._base import (Coverage, ExperimentResult, check_below, check_close, control_below, identity,
                    infinite_width_reason, progress)
from ._methods import (CONTROL_LR, FP_MODEL, FP_TOL, control_method, farthest_linearisation, kernel_and_prediction,
                       log_deviation, one_step_check, one_step_theory, options, step_size)

PROFILES = {
    "tiny": {"n": 8, "in_dim": 16, "depth": 3, "width": 256, "steps": 5, "fraction": 0.5, "seed": 0},
    "quick": {"n": 16, "in_dim": 64, "depth": 3, "width": 1024, "steps": 8, "fraction": 0.5, "seed": 0},
    "full": {"n": 64, "in_dim": 64, "depth": 3, "width": 4096, "steps": 12, "fraction": 0.5, "seed": 0},
}
KINDS = ("synthetic", "digits")
#: the finite-width band: |log ratio| ≤ BAND_CONSTANT/√M over steps 1..BAND_STEPS
BAND_CONSTANT, BAND_STEPS = 3.0, 5
BAND_MODEL = ("width correction: deviation O(M^-1/2) (claim 8), prefactor 3 fixed before the run, "
              "band 3/sqrt(M)")

ONE_STEP = Coverage.of("one-step rate at infinite width", infinite_width_reason)
LAZY = Coverage.of("finite width follows its linearisation")
FINDING_BAND = "finding-convergence-band"


def _problem(kind, cfg):
    if kind == "synthetic":
        X, Y = datasets.synthetic(cfg["n"], cfg["in_dim"], seed=cfg["seed"])
    else:  # digits 0 vs 1, ±1 targets; 64 pixels (some constant → rank < 64, still ≥ N here)
        X, Y = datasets.digits(cfg["n"], classes=2, seed=cfg["seed"], targets="pm1")
    return mlp(depth=cfg["depth"], width=cfg["width"], in_dim=X.shape[1]), X, Y


def _flat(params) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree_util.tree_leaves(params)])


def _ratio(traj) -> float:
    return float(traj.train_loss[1] / traj.train_loss[0])


def _infinite(spec, net, X, Y, cfg):
    """Infinite-width run (f₀ = 0): kernel, prediction, step, trajectory and the one-step theory."""
    K, pred = kernel_and_prediction(net, X, Y, spec)
    lr, rule = step_size(spec, K, pred, -Y, cfg["fraction"])
    traj = simulate(net, X, Y, spec.name, lr=lr, steps=cfg["steps"], **options(spec))
    other = methods.get(control_method(spec.name))
    control = simulate(net, X, Y, other.name, lr=lr, steps=1, **options(other))
    return {"lr": lr, "rule": rule, "alpha": pred.alpha, "isotropic": pred.isotropic, "prediction": pred.summary(),
            "theory": one_step_theory(pred, -Y, lr), "rel_loss": traj.train_loss / traj.train_loss[0],
            "ratio": _ratio(traj), "control": (other.name, _ratio(control)), "kernel_alpha": isotropy(K).alpha,
            "trace_alpha": pred.alpha if (pred.alpha is not None and not pred.isotropic and pred.deviation is None)
            else None}


def _finite(spec, net, X, Y, params, cfg):
    """Finite-width run: real training and the linearised dynamics at θ₀ with the same step."""
    K, pred = kernel_and_prediction(net, X, Y, spec, params)
    r0 = np.asarray(net.apply(params, X)) - Y
    lr, rule = step_size(spec, K, pred, r0, cfg["fraction"])
    opts, steps = options(spec), cfg["steps"]
    lin = simulate(net, X, Y, spec.name, params=params, lr=lr, steps=steps, **opts)
    trained = train(net, params, X, Y, spec.name, lr=lr, steps=steps, **opts)
    one = train(net, params, X, Y, spec.name, lr=lr, steps=1, **opts)  # same compiled step: Δθ of step 1
    step_norm = float(np.linalg.norm(_flat(one.params) - _flat(params)) / np.linalg.norm(_flat(params)))
    return {"lr": lr, "rule": rule, "isotropic": pred.isotropic, "prediction": pred.summary(),
            "linearised_rel_loss": lin.train_loss / lin.train_loss[0],
            "trained_rel_loss": trained.train_loss / trained.train_loss[0], "diverged_at": trained.diverged_at,
            "band_deviation": log_deviation(trained.train_loss, lin.train_loss, min(BAND_STEPS, steps)),
            "relative_parameter_step": step_norm, "train_pred": trained.train_pred, "kernel_alpha": isotropy(K).alpha,
            "trace_alpha": pred.alpha if (pred.alpha is not None and not pred.isotropic and pred.deviation is None)
            else None}


def run(config: dict, out_dir) -> ExperimentResult:
    data, checks = {}, []
    for kind in progress(KINDS, desc="convergence"):
        net, X, Y = _problem(kind, config)
        params = net.init(config["seed"])
        panel = {}
        for spec in methods.registered():
            rec = {"finite": _finite(spec, net, X, Y, params, config)}
            if not spec.finite_width_only:
                rec["infinite"] = _infinite(spec, net, X, Y, config)
            panel[spec.name] = rec
        checks += _checks(kind, panel, config, net, X, Y, params)
        for rec in panel.values():
            rec["finite"].pop("train_pred")
        data[kind] = panel
    fig = _plot(data, config)
    png, js = plotting.save(fig, "convergence", data, out_dir, config=config)
    band = BAND_CONSTANT / np.sqrt(config["width"])
    outside = [f"{k}/{m}" for k, p in data.items() for m, r in p.items() if not r["finite"]["band_deviation"] <= band]
    summary = (f"isotropic methods at c/alpha follow (1-c)^(2t) at infinite width; trained M={config['width']} vs "
               f"linearised: {len(outside)} of {sum(len(p) for p in data.values())} runs outside 3/sqrt(M)"
               + (f" ({', '.join(outside)})" if outside else ""))
    return ExperimentResult("convergence", png, js, checks, summary, 0.0, coverage=(ONE_STEP, LAZY))


def band_check(label: str, deviation: float, width: int, controls=()):
    """The finite-width family's row: max_t |log(loss_trained/loss_linearised)| ≤ 3/√M."""
    return check_below(label, deviation, BAND_CONSTANT / np.sqrt(width), error_model=BAND_MODEL, finding=FINDING_BAND,
                       controls=controls)


def _checks(kind, panel, cfg, net, X, Y, params):
    width = cfg["width"]
    band = BAND_CONSTANT / np.sqrt(width)
    out = []
    for spec in ONE_STEP.applies():
        rec = panel[spec.name]["infinite"]
        label = (f"{kind}: {spec.name} infinite-width loss ratio after 1 step at eta = {rec['rule']}"
                 + ("" if rec["theory"] else f" ({rec['prediction']})"))
        out.append(one_step_check(label, rec["ratio"], rec["theory"], rec["isotropic"], rec["control"])
                   .about(ONE_STEP.family, spec.name))
    for spec in LAZY.applies():
        rec = panel[spec.name]["finite"]
        other = farthest_linearisation({m: panel[m]["finite"]["linearised_rel_loss"] for m in panel}, spec.name,
                                       min(BAND_STEPS, cfg["steps"]))
        control = control_below(f"the same trained run vs {other}'s linearisation (eta = "
                                f"{panel[other]['finite']['rule']})",
                                log_deviation(rec["trained_rel_loss"], panel[other]["finite"]["linearised_rel_loss"],
                                              min(BAND_STEPS, cfg["steps"])), band, kind="other_method")
        out.append(band_check(
            f"{kind}: {spec.name} trained (M={width}, eta = {rec['rule']}) vs its linearisation at theta_0, max |log "
            f"loss ratio| over steps 1-{min(BAND_STEPS, cfg['steps'])} (one-step loss x{rec['trained_rel_loss'][1]:.3g} "
            f"vs x{rec['linearised_rel_loss'][1]:.3g}; ||dtheta_1||/||theta_0|| = {rec['relative_parameter_step']:.2g})",
            rec["band_deviation"], width, controls=[control]).about(LAZY.family, spec.name))
    # claim 6 in parameter space: iEF's trained outputs equal exact NGD's (C = 1)
    ief, ex = panel["ief"]["finite"], panel["exact"]["finite"]
    scale = np.max(np.abs(ex["train_pred"]))
    diff = float(np.nanmax(np.abs(ief["train_pred"] - ex["train_pred"])) / scale)
    control_run = train(net, params, X, Y, "exact", lr=CONTROL_LR * ex["lr"], steps=cfg["steps"])
    diff_control = float(np.nanmax(np.abs(ief["train_pred"] - control_run.train_pred)) / scale)
    out.append(check_below(
        f"{kind}: ief trained outputs == exact NGD's trained outputs (claim 6, C = 1: G^T(GG^T)^-1 s = J^T Theta^-1 r), "
        f"max over {cfg['steps']} steps, relative", diff, FP_TOL, error_model=FP_MODEL + " per step",
        controls=[control_below(f"exact NGD trained at {CONTROL_LR:g} eta (the equal-step condition broken)",
                                diff_control, FP_TOL, kind="broken_condition")])
        .about("iEF = exact NGD in parameter space", "ief", "exact"))
    for spec in methods.registered():  # trace identities: α counted with the kernel's own cut-off
        for where, rec in panel[spec.name].items():
            if rec.get("trace_alpha") is not None:
                out.append(identity(check_close(
                    f"{kind}: {spec.name} ({where} width): alpha = trace identity (terms kept by the kernel's own cut-off, / (N C))",
                    rec["kernel_alpha"], rec["trace_alpha"], 1e-10, error_model=FP_MODEL)).about("trace identity",
                                                                                                spec.name))
    return out


def _plot(data, cfg):
    colors = plotting.method_colors()
    fig, axes = plotting.figure(2, 3, figsize=(18, 10.5))
    c, steps, width = cfg["fraction"], cfg["steps"], cfg["width"]
    t = np.arange(steps + 1)
    band = BAND_CONSTANT / np.sqrt(width)
    floor = 1e-12
    for row, (kind, panel) in enumerate(data.items()):
        iso_ax, other_ax, bar_ax = axes[row]
        for name, rec in panel.items():
            inf, fin = rec.get("infinite"), rec["finite"]
            isotropic = bool(inf and inf["isotropic"])
            ax = iso_ax if isotropic else other_ax
            col = colors[name]
            if inf is not None:
                ax.plot(t, np.maximum(inf["rel_loss"], floor), "-", color=col, lw=1.3, alpha=0.8)
            if not isotropic:
                ax.plot(t, np.maximum(fin["linearised_rel_loss"], floor), "--", color=col, lw=1, alpha=0.8)
            ax.plot(t, np.maximum(fin["trained_rel_loss"], floor), "o", color=col, mfc="none", ms=4,
                    label=f"{name} (η={fin['rule'].split(':')[0]})")
        iso_ax.plot(t, (1 - c) ** (2 * t), "k:", lw=2, label=f"theory (1−c)^(2t), c={c}")
        title = "synthetic teacher (sphere)" if kind == "synthetic" else "digits 0 vs 1 (±1)"
        iso_ax.set_title(f"{title}: methods predicted isotropic (M=∞)\nlines: infinite width; o: trained M={width}",
                         fontsize=9)
        other_ax.set_title(f"{title}: not isotropic / theory silent\nlines: infinite width; dashed: linearised at "
                           f"M={width}; o: trained", fontsize=9)
        for ax in (iso_ax, other_ax):
            ax.set_yscale("log")
            ax.set_ylim(floor, 1e3)
            ax.set_xlabel("step t")
            ax.set_ylabel("training loss / initial loss")
            ax.legend(fontsize=6.5, ncol=2, loc="lower left")
        names = list(panel)
        devs = [min(panel[m]["finite"]["band_deviation"], 1e3) for m in names]
        bars = bar_ax.bar(range(len(names)), np.maximum(devs, 1e-6), color=[colors[m] for m in names])
        for b, d in zip(bars, devs):
            if not d <= band:
                b.set_edgecolor("red")
                b.set_linewidth(2)
        bar_ax.axhline(band, color="k", ls="--", lw=1, label=f"band 3/√M = {band:.3f}")
        bar_ax.set_yscale("log")
        bar_ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7.5)
        bar_ax.set_ylabel("max_t |log(loss_trained / loss_linearised)|, t = 1..5")
        bar_ax.set_title(f"{title}: trained vs linearised at M={width}\n(red edge: outside the band — a finding)",
                         fontsize=9)
        bar_ax.legend(fontsize=8)
    return fig


__all__ = ["PROFILES", "run"]
