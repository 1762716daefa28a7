"""Figure `width_scaling`: finite-width parameter-space training approaches the infinite-width function-space
theory as the width M grows (THEORY.md claim 8), for every registered method with an infinite-width limit.

Each method trains the *centred* network f(x; θ) − f(x; θ₀) (same Jacobian and Fisher, outputs start at 0
like the infinite-width prior mean) at the step of :mod:`._methods` taken from its infinite-width kernel, and
the infinite-width trajectory ``simulate`` runs with the same step. The deviation is the distance between
the two output trajectories on the training points,

    D(M) = max_{1≤t≤T} ||f_M(t) − f_∞(t)||_F / ||Y||_F

(a norm over N samples concentrates: its log scatters across seeds far less than a loss difference, whose
sign-indefinite leading term makes log|Δloss| scatter by ~1).

Predicted exponent of D ∝ M^p, derived before any run (THEORY.md "What the code taught us", claim 8):
* ReLU: p = −1/2 for every method (units whose pre-activation crosses 0 during a step move the kernel
  coherently, O(M^{-1/2}), and the kernel's own O(M^{-1/2}) fluctuation at θ₀ adds to it);
* a smooth activation (erf): p = −1 where the method's training-point kernel at θ₀ is *the same matrix* at
  width M and at infinite width (read from ``predict``: Θ_G = α·I with the same α, or the same predicted
  diagonal — exact, block patterns, K-FAC, unit-wise with φ' ≠ 0, iEF, EF, SF); the O(M^{-1/2}) fluctuations
  then cancel and what remains is the nonlinearity along the step, odd in the readout weights, O(M^{-1}).
  p = −1/2 for the others (gd, KPSVD, EKFAC, corrected K-FAC: their kernel fluctuates at θ₀).

Error model (Monte Carlo, calibrated on other seeds): log D at each width scatters across initialisation
seeds with a standard deviation σ pooled over widths from the *calibration* seeds; the slope fitted to the
mean of log D over the *judged* seeds (disjoint) has standard error SE = σ/√(J·Sxx) (J judged seeds,
Sxx = Σ(log M − mean)²), and the band is p ± 3·SE. Both seed sets and σ are stored in each row's
``calibration``. A row is judged only where the band resolves the two candidate exponents, 3·SE ≤ 1/4 (half
the gap between −1/2 and −1); a wider band cannot tell M^{-1/2} from M^{-1} and the row is ``unresolved``
with its number and the profile that would resolve it. No pre-asymptotic allowance: a resolved slope outside the
band is a ``fails`` row with its number (docs/THEORY.md finding). Control: the judged runs of the same method with
the other activation where their predicted exponent differs (a broken condition), else exact NGD's run with the
other exponent (another method), through the same band.
"""
from __future__ import annotations

import numpy as np

from .. import datasets, plotting
from ..dynamics import simulate
from ..networks import mlp
from ..training import train
from ._base import Coverage, ExperimentResult, SlopeControl, check_slope, infinite_width_reason, progress
from ._methods import kernel_and_prediction, options, step_size

PROFILES = {
    "tiny": {"widths": [64, 512, 4096], "n": 6, "in_dim": 8, "depth": 2, "steps": 4, "fraction": 0.5,
             "calibration_seeds": [0, 1], "seeds": [2, 3, 4], "activations": ["relu", "erf"]},
    # σ(log D) ≈ 0.3 across seeds at N = 16; four judged seeds over M = 128..8192 (Sxx = 8.6) give 3 SE ≈ 0.15
    "quick": {"widths": [128, 1024, 8192], "n": 16, "in_dim": 16, "depth": 2, "steps": 4, "fraction": 0.5,
              "calibration_seeds": [0, 1, 2], "seeds": [10, 11, 12, 13], "activations": ["relu", "erf"]},
    # the quick widths stop at 8192, where "K-FAC with erf reaches -1 only at M >~ 8192" begins; the full
    # profile reaches 65536
    "full": {"widths": [256, 1024, 4096, 16384, 65536], "n": 16, "in_dim": 16, "depth": 2, "steps": 10,
             "fraction": 0.5, "calibration_seeds": [0, 1, 2, 3, 4, 5], "seeds": list(range(10, 22)),
             "activations": ["relu", "erf"]},
}

COVERAGE = Coverage.of("deviation slope vs width", infinite_width_reason)
FINDING = "finding-width-scaling"
#: band half-width in standard errors of the judged slope
K_SE = 3.0
#: a band wider than this (half the gap between the candidate exponents −1/2 and −1) does not resolve them
RESOLUTION = 0.25


def deviation(pred, reference, Y) -> float:
    """max_{t≥1} ||pred_t − reference_t||_F / ||Y||_F over output trajectories (T+1, N, C); inf if a run diverged."""
    d = np.linalg.norm(np.asarray(pred, float)[1:] - np.asarray(reference, float)[1:], axis=(1, 2))
    return float(np.max(d) / np.linalg.norm(Y)) if np.all(np.isfinite(d)) else float("inf")


def predicted_exponent(activation: str, pred_width, pred_infinite) -> float:
    """−1 when the predicted training-point kernel at θ₀ is the same matrix at width M and at infinite width
    with a smooth activation, else −1/2 (module docstring)."""
    if activation == "relu":
        return -0.5
    same = (pred_width.isotropic and pred_infinite.isotropic and pred_width.alpha is not None
            and abs(pred_width.alpha - pred_infinite.alpha) <= 1e-12 * abs(pred_infinite.alpha))
    if (pred_width.deviation is not None and pred_infinite.deviation is not None
            and pred_width.diagonal is not None and pred_infinite.diagonal is not None):
        same = same or bool(np.allclose(pred_width.diagonal, pred_infinite.diagonal, rtol=1e-12, atol=0))
    return -1.0 if same else -0.5


def _log_devs(spec, act, config, X, Y, seeds):
    """log D(M) per (width, seed), the infinite-width step and rule, and the predicted exponent."""
    net0 = mlp(depth=config["depth"], width=config["widths"][0], in_dim=config["in_dim"], activation=act)
    K, pred_inf = kernel_and_prediction(net0, X, Y, spec)
    lr, rule = step_size(spec, K, pred_inf, -Y, config["fraction"])
    reference = simulate(net0, X, Y, spec.name, lr=lr, steps=config["steps"], **options(spec)).train_pred
    out = np.zeros((len(config["widths"]), len(seeds)))
    exponent = None
    for i, width in enumerate(config["widths"]):
        net = mlp(depth=config["depth"], width=width, in_dim=config["in_dim"], activation=act)
        for j, seed in enumerate(seeds):
            params = net.init(seed)
            if exponent is None:  # the kernel at θ₀ of the centred network (outputs 0, like infinite width)
                _, pred_w = kernel_and_prediction(net, X, Y, spec, params, outputs=np.zeros_like(Y))
                exponent = predicted_exponent(act, pred_w, pred_inf)
            res = train(net, params, X, Y, spec.name, lr=lr, steps=config["steps"], center=True, **options(spec))
            out[i, j] = np.log(deviation(res.train_pred, reference, Y))
    return out, lr, rule, exponent


def run(config: dict, out_dir) -> ExperimentResult:
    X, Y = datasets.synthetic(config["n"], config["in_dim"], seed=0)
    widths = np.asarray(config["widths"], float)
    cal_seeds, seeds = list(config["calibration_seeds"]), list(config["seeds"])
    if set(cal_seeds) & set(seeds):
        raise ValueError("width_scaling: calibration and judged seeds must be disjoint")
    checks, data = [], {"widths": widths, "calibration_seeds": cal_seeds, "seeds": seeds}
    jobs = [(act, spec) for act in config["activations"] for spec in COVERAGE.applies()]
    runs = {(act, spec.name): _log_devs(spec, act, config, X, Y, cal_seeds + seeds)
            for act, spec in progress(jobs, desc="width_scaling")}
    for act, spec in jobs:
        all_devs, lr, rule, p = runs[(act, spec.name)]
        cal, judged = all_devs[:, :len(cal_seeds)], all_devs[:, len(cal_seeds):]
        check = check_slope(f"{act}, {spec.name}: log-log slope of D(M) = max_t ||f_M(t) - f_inf(t)||/||Y|| over M = "
                            f"{config['widths']} (mean of {len(seeds)} judged seeds; eta = {rule})", widths, cal, judged,
                            p, control=_control(runs, act, spec.name, p, len(cal_seeds)), k_se=K_SE,
                            resolution=RESOLUTION, seeds=(cal_seeds, seeds), finding=FINDING,
                            needs="the full profile (12 judged seeds, M up to 65536)")
        checks.append(check.about(COVERAGE.family, spec.name))
        se = (check.calibration or {}).get("slope_se", float("nan"))
        data[f"{act}/{spec.name}"] = {"log_deviation": all_devs, "slope": check.measured, "slope_se": se,
                                     "theory": p, "lr": lr, "rule": rule, "status": check.status}
    fig = _plot(data, config)
    png, js = plotting.save(fig, "width_scaling", data, out_dir, config=config)
    fails = [c for c in checks if c.status == "fails"]
    judged = [c for c in checks if c.status != "unresolved"]
    summary = (f"{len(judged) - len(fails)}/{len(judged)} resolved slopes within 3 SE of theory ({len(checks) - len(judged)} "
               f"unresolved; relu -1/2; erf -1 where the kernel at theta_0 is width-independent, else -1/2)"
               + (": outside " + ", ".join(c.claim.split(":")[0] for c in fails) if fails else ""))
    return ExperimentResult("width_scaling", png, js, checks, summary, 0.0, coverage=(COVERAGE,))


def _control(runs, act, name, p, n_cal) -> SlopeControl:
    """The row's negative control: judged runs whose predicted exponent differs from ``p`` — the same method with
    the other activation (kink vs smooth: the condition behind the exponent broken), else exact NGD's run with the
    other exponent (another method) — or, where no run has another exponent, the rival exponent (wrong theory)."""
    others = [(key, r) for key, r in runs.items() if r[3] != p]
    same = [(key, r) for key, r in others if key[1] == name]
    if same:
        (a, m), r = same[0]
        return SlopeControl(f"{m} with {a} (predicted M^{r[3]:g})", "broken_condition", log_judged=r[0][:, n_cal:])
    exact = [(key, r) for key, r in others if key[1] == "exact"]
    if exact:
        (a, m), r = exact[0]
        return SlopeControl(f"{m} with {a} (predicted M^{r[3]:g})", "other_method", log_judged=r[0][:, n_cal:])
    rival = -1.0 if p == -0.5 else -0.5
    return SlopeControl(f"against the rival exponent {rival:g}", "wrong_theory", rival=rival)


def _plot(data, config):
    acts = config["activations"]
    colors = plotting.method_colors()
    widths = np.asarray(config["widths"], float)
    ncal = len(config["calibration_seeds"])
    fig, axes = plotting.figure(1, len(acts) + 1, figsize=(6.2 * (len(acts) + 1), 5.6))
    axes = np.atleast_1d(axes)
    for ax, act in zip(axes, acts):
        for key, rec in data.items():
            if not key.startswith(act + "/"):
                continue
            m = key.split("/", 1)[1]
            mean = np.exp(np.mean(rec["log_deviation"][:, ncal:], axis=1))
            if not np.all(np.isfinite(mean)):
                continue
            ax.plot(widths, mean, "o-", color=colors[m], ms=4, lw=1,
                    label=f"{m}: {rec['slope']:+.2f} (theory {rec['theory']:g})")
        ax.plot(widths, 1e-1 * (widths / widths[0]) ** -0.5, "k--", lw=1.2, label="slope −1/2")
        ax.plot(widths, 1e-1 * (widths / widths[0]) ** -1.0, "k:", lw=1.2, label="slope −1")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("hidden width M (units per layer)")
        ax.set_ylabel("D(M) = max_t ||f_M(t) − f_∞(t)|| / ||Y||  (geo. mean, judged seeds)")
        ax.set_title(f"{act}: trained (centred) vs infinite-width theory, N={config['n']}, L={config['depth']}",
                     fontsize=9)
        ax.legend(fontsize=6.5, ncol=2)
    ax = axes[-1]
    keys = [k for k in data if "/" in k and np.isfinite(data[k]["slope"]) and np.isfinite(data[k]["slope_se"])]
    y = np.arange(len(keys))
    for i, k in enumerate(keys):
        rec = data[k]
        color = {"holds": "k", "fails": "red"}.get(rec["status"], "0.6")
        ax.errorbar(rec["slope"], i, xerr=K_SE * rec["slope_se"], fmt="o", capsize=2, color=color,
                    mfc="none" if rec["status"] == "unresolved" else color)
        ax.plot([rec["theory"]], [i], "|", color="C0", ms=12, mew=2)
    ax.set_yticks(y, keys, fontsize=7)
    ax.set_xlabel("fitted slope ± 3 SE (blue bar: theory; red: outside, a finding; grey: 3 SE > 1/4, unresolved)")
    ax.set_title(f"every method: slope vs theory (σ from seeds {config['calibration_seeds']}, "
                 f"judged on {config['seeds']})", fontsize=9)
    return fig


__all__ = ["PROFILES", "run"]
