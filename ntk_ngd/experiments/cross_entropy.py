"""Figure `cross_entropy`: softmax NGD in function space on scikit-learn digits with 10 classes
(THEORY.md "Cross-entropy NGD in function space").

(a) Training cross-entropy vs step for gd, exact, block_diag, kfac, ef, ief: infinite-width logit
    dynamics (lines, ``cross_entropy.simulate``, f_0 = 0) and real finite-width parameter-space
    training of the centred network f(x; θ) − f(x; θ_0) with the same step sizes (markers,
    ``cross_entropy.train``). Theory beside it: the exact-NGD closed form (true-class logit += η/p_y
    per step, kernel-free), drawn as a dotted line.
(b) Train and test accuracy vs step, same runs.
(c) Isotropy of the whitened operator Θ̃_G = RΘ_GRᵀ along each method's own infinite-width
    trajectory: relative deviation ||Θ̃_G − αI||/||αI||. Theory: 0 for exact and block_diag; for K-FAC
    the readout contributes blockdiag(R_n Λ̄⁺ R_nᵀ) (Λ̄ = mean_n Λ_n), so the deviation is
    ||blockdiag(R_nΛ̄⁺R_nᵀ) − (α − N(L−1))I||/||αI|| — zero at f = 0 (all Λ_n equal) and growing as
    the samples' probabilities separate; computed here from p alone (dotted) beside the library.
(d) Width convergence: max over steps of ||Π(f_M − f_∞)||/||Π f_∞|| (Π removes the per-sample mean,
    the only part of the logits the softmax ignores) for exact and block-diagonal NGD training vs M,
    with the fitted log-log slope.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .. import datasets, methods, plotting
from ..diagnostics import isotropy, predict
from ..dynamics import simulate
from ..function_space import method_kernels
from ..training import train
from ..trajectory import DIVERGENCE_FACTOR
from ..networks import mlp
from . import _ce_methods
from ._base import (ExperimentResult, SlopeControl, check_below, check_close, check_slope, control_below,
                    control_close, progress, single_thread_blas, unpredicted)

PROFILES = {
    "tiny": {"n": 10, "n_test": 20, "classes": 10, "depth": 3, "width": 128, "steps": 4,
             "widths": [64, 256, 1024], "calibration_seeds": [0, 1], "seeds": [2, 3], "seed": 0, "activation": "relu",
             "all_methods": {"n": 8, "classes": 3, "depth": 3, "width": 128}},
    "quick": {"n": 40, "n_test": 300, "classes": 10, "depth": 3, "width": 512, "steps": 8,
              "widths": [128, 512, 2048], "calibration_seeds": [0, 1], "seeds": [2, 3], "seed": 0,
              "activation": "relu", "all_methods": {"n": 12, "classes": 4, "depth": 3, "width": 512}},
    "full": {"n": 48, "n_test": 1000, "classes": 10, "depth": 3, "width": 4096, "steps": 25,
             "widths": [128, 512, 2048, 8192], "calibration_seeds": [0, 1, 2], "seeds": [3, 4, 5, 6], "seed": 0,
             "activation": "relu", "all_methods": {"n": 16, "classes": 4, "depth": 3, "width": 4096}},
}
#: the exact-NGD closed-form readout check (p alone) holds to floating point (THEORY.md: 1e-8)
KFAC_READOUT_TOL = 1e-8
FP = "floating point: kappa*eps of the whitened Gram solves, kappa <= 1e6: tolerance {:g}"
RESOLUTION = 0.25


def panel_methods(net, X, Y) -> list[str]:
    """The methods drawn in panels (a, b), from the registry: gd (no preconditioner), every method predicted
    isotropic at f = 0 on these data, and every residual-dependent one (EF, iEF); the rest of the registry
    is checked on the small problem of :mod:`._ce_methods`."""
    out = []
    for spec in methods.registered():
        if spec.random or spec.finite_width_only:
            continue
        if spec.damping_rule == "none" or spec.needs_residual:
            out.append(spec.name)
            continue
        try:
            if predict(net, X, spec.name, loss=LOSS, targets=Y, **dict(spec.example_options)).isotropic:
                out.append(spec.name)
        except ValueError:
            continue
    return out


LOSS_FLOOR = 1e-16
LOSS = "cross_entropy"


def run(config: dict, out_dir) -> ExperimentResult:
    with single_thread_blas():
        return _run(config, out_dir)


def _probs(f):
    e = np.exp(f - f.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _center(f):
    return f - f.mean(axis=-1, keepdims=True)


def _kfac_deviation_theory(f, Y, n, depth):
    """Isotropy deviation of Θ̃_kfac predicted from p alone (module docstring (c)).

    Written on 1^⊥ without cancellation: Λ_n = diag(p q) − off-diagonal p_c p_d (q_c = Σ_{d≠c} p_d), and
    with P = 11ᵀ/C, Λ̄⁺ = (Λ̄ + P)⁻¹ − P and Λ_n^{1/2} = (Λ_n + P)^{1/2} − P (Λ 1 = 0, Λ PD on 1^⊥), so the
    null direction is never inverted numerically. V R_n Λ̄⁺ R_nᵀ Vᵀ = Λ_n^{1/2} Λ̄⁺ Λ_n^{1/2}.
    """
    p = _probs(f)
    c = p.shape[1]
    q = p @ (1.0 - np.eye(c))
    lam = -np.einsum("nc,nd->ncd", p, p) * (1.0 - np.eye(c)) + np.einsum("nc,cd->ncd", p * q, np.eye(c))
    P = np.full((c, c), 1.0 / c)

    def root(A):
        w, U = np.linalg.eigh(A + P)
        return (U * np.sqrt(w)) @ U.T - P

    bar = np.linalg.inv(lam.mean(axis=0) + P) - P
    blocks = [root(l) @ bar @ root(l) for l in lam]
    readout = scipy.linalg.block_diag(*blocks)
    Pi = np.kron(np.eye(n), np.eye(c) - P)
    alpha = n * (depth - 1) + np.trace(readout) / (n * (c - 1))
    return float(np.linalg.norm(readout - (alpha - n * (depth - 1)) * Pi) / (alpha * np.sqrt(n * (c - 1))))


def _run(config, out_dir):
    n, depth, steps, seed = config["n"], config["depth"], config["steps"], config["seed"]
    X_all, Y_all = datasets.digits(n + config["n_test"], classes=config["classes"], seed=seed)
    X, Y, Xt, Yt = X_all[:n], Y_all[:n], X_all[n:], Y_all[n:]
    c = Y.shape[1]

    def net_of(width):
        return mlp(depth=depth, width=width, in_dim=X.shape[1], out_dim=c, activation=config["activation"])

    net = net_of(config["width"])
    checks, data = [], {"n": n, "n_test": len(Xt), "classes": c, "depth": depth, "width": config["width"]}

    # ---- (a, b) infinite-width dynamics and finite-width training -----------------------------
    inf, fin = {}, {}
    config = dict(config, methods=panel_methods(net, X, Y))
    for m in progress(config["methods"], desc="cross_entropy: dynamics"):
        opts = dict(methods.get(m).example_options)
        # the theory's step (the method's rule, no trust region): the closed forms below are about it, and the
        # trained run takes the same fixed η (docs/THEORY.md "Step size"; the default CE trust region is off here)
        inf[m] = simulate(net, X, Y, m, steps=steps, X_test=Xt, Y_test=Yt, loss=LOSS, trust_region=None, **opts)
        fin[m] = train(net, net.init(seed), X, Y, m, lr=inf[m].lr, steps=steps, X_test=Xt, Y_test=Yt, center=True,
                       loss=LOSS, **opts)
    data["infinite_width"] = {m: {"train_loss": r.train_loss, "train_accuracy": r.train_accuracy,
                                  "test_loss": r.test_loss, "test_accuracy": r.test_accuracy, "lr": r.lr,
                                  "lr_rule": r.lr_rule, "alpha0": r.alpha, "deviation0": r.deviation,
                                  "diverged_at": r.diverged_at} for m, r in inf.items()}
    data["finite_width"] = {m: {"train_loss": r.train_loss, "train_accuracy": r.train_accuracy,
                                "test_accuracy": r.test_accuracy, "diverged_at": r.diverged_at}
                            for m, r in fin.items()}
    # exact NGD closed form: f_y += η/p_y (mod 1), kernel-free
    f = np.zeros_like(Y)
    closed = [f]
    for _ in range(steps):
        f = f + inf["exact"].lr * Y / _probs(f)
        closed.append(f)
    closed = np.array(closed)
    closed_loss = -np.mean(np.log(np.sum(_probs(closed) * Y[None], axis=-1)), axis=-1)
    err = float(np.max(np.abs(_center(inf["exact"].train_pred) - _center(closed))) / np.max(np.abs(_center(closed))))
    data["exact_closed_form"] = {"train_loss": closed_loss, "max_rel_error": err}
    f_short = np.zeros_like(Y)  # control: the closed form run at 0.9 eta
    for _ in range(steps):
        f_short = f_short + 0.9 * inf["exact"].lr * Y / _probs(f_short)
    err_control = float(np.max(np.abs(_center(inf["exact"].train_pred[-1]) - _center(f_short))) /
                        np.max(np.abs(_center(closed))))
    checks.append(check_below("exact NGD logits (infinite width, lax.scan of the Gram form) == closed form "
                              "f_y += eta/p_y per step (mod 1), max rel. error", err, 1e-8, error_model=FP.format(1e-8),
                              controls=[control_below("against the closed form at 0.9 eta", err_control, 1e-8,
                                                      kind="wrong_theory")])
                  .about("exact NGD closed form (softmax)", "exact"))
    for m, a in {"exact": 1.0, "block_diag": float(depth), "kfac": float(n * (depth - 1) + 1)}.items():
        checks.append(check_close(f"{m}: alpha of R Theta_G R^T at f = 0 (infinite width) == {a:g}", inf[m].alpha, a,
                                  1e-8, error_model=FP.format(1e-8),
                                  controls=[control_close("gd's alpha", inf["gd"].alpha, a, 1e-8,
                                                          kind="other_method")])
                      .about("whitened alpha at f = 0", m))
    checks.append(check_below("kfac: deviation from isotropy at f = 0 (every Lambda_n equal)", inf["kfac"].deviation,
                              1e-8, error_model=FP.format(1e-8),
                              controls=[control_below("gd's deviation", inf["gd"].deviation, 1e-8,
                                                      kind="other_method")])
                  .about("whitened alpha at f = 0", "kfac"))
    bd_gap = float(np.max(np.abs(inf["block_diag"].train_pred - inf["exact"].train_pred)))
    kf_gap = float(np.max(np.abs(inf["kfac"].train_pred - inf["exact"].train_pred)))
    scale = max(1.0, float(np.max(np.abs(closed))))
    checks.append(check_below("block_diag at lr = 1/L follows exact NGD on the training points (max |logit diff|)",
                              bd_gap, 1e-8 * scale, error_model=FP.format(1e-8) + " x max(1, max|logit|)",
                              controls=[control_below("kfac (isotropic only at f = 0) against exact NGD", kf_gap,
                                                      1e-8 * scale, kind="other_method")]).about("block_diag follows exact NGD", "block_diag"))
    if "ef" in inf:  # measured, not derived: shown without a verdict
        checks.append(unpredicted(f"ef: first step at which the infinite-width loss exceeds {DIVERGENCE_FACTOR:g} x its "
                                  "initial value (-1: never; THEORY: overshoots once l_n < eta)",
                                  float(inf["ef"].diverged_at if inf["ef"].diverged_at is not None else -1),
                                  "measured only").about("ef"))
    accs = [float(r.test_accuracy[-1]) for m, r in inf.items() if m != "ef" and np.isfinite(r.test_accuracy[-1])]
    checks.append(unpredicted("infinite-width test accuracy after the last step, min over the panel methods except EF",
                              min(accs), "measured only"))
    checks.append(unpredicted("the same, max", max(accs), "measured only"))

    # ---- (c) isotropy along the trajectories -------------------------------------------------
    iso = {}
    fixed = [m for m in config["methods"] if not methods.get(m).needs_residual]
    for m in fixed:
        devs, theory = [], []
        for t in range(steps + 1):
            lt = inf[m].train_pred[t]
            if not np.all(np.isfinite(lt)):
                break
            devs.append(isotropy(method_kernels(net, X, m, loss=LOSS, outputs=lt,
                                                **dict(methods.get(m).example_options)).train).deviation)
            if m == "kfac":
                theory.append(_kfac_deviation_theory(lt, Y, n, depth))
        iso[m] = {"measured": devs, "theory": theory}
    data["isotropy"] = iso
    kd, kt = np.array(iso["kfac"]["measured"]), np.array(iso["kfac"]["theory"])
    kerr = float(np.max(np.abs(kd[1:] - kt[1:]) / kt[1:]))
    kd0 = np.array(iso["exact"]["measured"][1:len(kt)])
    checks.append(check_below("kfac deviation along its trajectory == closed-form readout term (from p alone), "
                              "max rel. error over steps >= 1", kerr, KFAC_READOUT_TOL,
                              error_model=FP.format(KFAC_READOUT_TOL),
                              controls=[control_below("exact NGD's deviation along its trajectory against the kfac "
                                                      "readout term", float(np.max(np.abs(kd0 - kt[1:len(kd0) + 1])
                                                                                  / kt[1:len(kd0) + 1])),
                                                      KFAC_READOUT_TOL, kind="other_method")])
                  .about("kfac readout anisotropy", "kfac"))
    checks.append(check_below("exact and block_diag stay isotropic along their trajectories (max deviation)",
                              max(max(iso["exact"]["measured"]), max(iso["block_diag"]["measured"])), 1e-8,
                              error_model=FP.format(1e-8),
                              controls=[control_below("kfac along its trajectory", max(iso["kfac"]["measured"]), 1e-8,
                                                      kind="other_method")])
                  .about("isotropy along the trajectory", "exact", "block_diag"))

    data["kfac_deviation_max_rel_error"] = kerr

    # ---- (d) width convergence (exact NGD), slope band calibrated on other seeds ------------------------
    ref = _center(inf["exact"].train_pred)
    seeds = list(config["calibration_seeds"]) + list(config["seeds"])
    logdev = np.zeros((len(config["widths"]), len(seeds)))
    for i, w in enumerate(progress(config["widths"], desc="cross_entropy: widths")):
        netw = net_of(w)
        for j, sd in enumerate(seeds):
            run_w = train(netw, netw.init(sd), X, Y, "exact", lr=inf["exact"].lr, steps=steps, center=True, loss=LOSS)
            d = _center(run_w.train_pred) - ref
            dev = np.max(np.linalg.norm(d[1:], axis=(1, 2)) / np.linalg.norm(ref[1:], axis=(1, 2)))
            logdev[i, j] = np.log(dev) if run_w.diverged_at is None else np.inf
    ncal = len(config["calibration_seeds"])
    slope = check_slope("exact: finite-width (centred) training -> infinite-width logit dynamics, log-log slope of "
                        "max_t ||Pi(f_M - f_inf)||/||Pi f_inf|| vs width (theory -1/2, ReLU, lazy regime)",
                        config["widths"], logdev[:, :ncal], logdev[:, ncal:], -0.5, resolution=RESOLUTION,
                        seeds=(config["calibration_seeds"], config["seeds"]), what="log deviation",
                        finding="finding-softmax-width",
                        control=SlopeControl("against the rival exponent -1 (an isotropic kernel's)", "wrong_theory",
                                             rival=-1.0))
    checks.append(slope.about("softmax width scaling", "exact"))
    data["width_scaling"] = {"exact": {"widths": config["widths"], "log_deviation": logdev, "slope": slope.measured,
                                       "judged_seeds": config["seeds"], "status": slope.status}}

    # ---- registry-wide families on a small softmax problem ------------------------------------
    more, data["all_methods"], coverage = _ce_methods.run_all(config["all_methods"], seed, 0.5, steps)
    checks += more

    fig = _plot(data, inf, fin, closed_loss, config)
    png, js = plotting.save(fig, "cross_entropy", data=data, out_dir=out_dir, config=config)
    summary = (f"exact closed form err {err:.1e}; kfac alpha(f=0) {inf['kfac'].alpha:.4g}, final deviation "
               f"{kd[-1]:.2e}; exact width slope {slope.measured:.2f} ({slope.status})")
    return ExperimentResult("cross_entropy", png, js, checks, summary, 0.0, coverage=coverage)


def _plot(data, inf, fin, closed_loss, config):
    C = plotting.COLORS
    col = plotting.method_colors()
    fig, axes = plotting.figure(2, 2, figsize=(13, 9.5))
    (ax_a, ax_b), (ax_c, ax_d) = axes
    steps = np.arange(config["steps"] + 1)
    M = config["width"]
    for m in config["methods"]:
        lab = f"{m} (η={inf[m].lr:.3g}: {inf[m].lr_rule.split(':')[0]})"
        ax_a.plot(steps, np.maximum(inf[m].train_loss, LOSS_FLOOR), color=col[m], label=lab,
                  ls="--" if m == "block_diag" else "-")
        ax_a.plot(steps, np.maximum(fin[m].train_loss, LOSS_FLOOR), "o", color=col[m], mfc="none", ms=6)
        ax_b.plot(steps, inf[m].train_accuracy, "-", color=col[m], label=f"{m} train")
        ax_b.plot(steps, inf[m].test_accuracy, ":", color=col[m], lw=1.4)
        ax_b.plot(steps, fin[m].test_accuracy, "s", color=col[m], mfc="none", ms=5)
    ax_a.plot(steps, np.maximum(closed_loss, LOSS_FLOOR), "k:", lw=2, label="theory exact: f_y += η/p_y (closed form)")
    ax_a.plot([], [], "ko", mfc="none", label=f"markers: finite width M={M}, parameter-space training (centred)")
    ax_a.set_yscale("log")
    ax_a.set_xlabel("step t")
    ax_a.set_ylabel("training cross-entropy (nats, mean over N)")
    ax_a.set_title(f"(a) digits, {data['classes']} classes, N={data['n']}, L={data['depth']}: lines = infinite-width "
                   "logit dynamics", fontsize=10)
    ax_a.legend(fontsize=7, loc="lower left")
    ax_b.plot([], [], "k:", label="test (infinite width)")
    ax_b.plot([], [], "ks", mfc="none", label=f"test, finite width M={M}")
    ax_b.set_xlabel("step t")
    ax_b.set_ylabel("accuracy (fraction correct)")
    ax_b.set_ylim(-0.02, 1.02)
    ax_b.set_title(f"(b) accuracy; test set N_test={data['n_test']}", fontsize=10)
    ax_b.legend(fontsize=7, loc="lower right", ncol=2)

    iso = data["isotropy"]
    for m in iso:
        d = np.maximum(np.asarray(iso[m]["measured"], dtype=float), 1e-17)
        ax_c.plot(np.arange(len(d)), d, "o-", color=col[m], ms=4, label=f"{m} measured")
    ax_c.plot(np.arange(len(iso["kfac"]["theory"])), np.maximum(iso["kfac"]["theory"], 1e-17), "k:", lw=2,
              label="theory kfac: readout term blockdiag(R_n Λ̄⁺ R_nᵀ)")
    ax_c.axhline(1e-8, color="grey", ls="--", lw=0.8)
    ax_c.set_yscale("log")
    ax_c.set_xlabel("step t (along each method's own infinite-width trajectory)")
    ax_c.set_ylabel("||RΘ_GRᵀ − αI||_F / ||αI||_F  (dimensionless)")
    ax_c.set_title("(c) isotropy of the whitened operator; exact/block_diag at round-off (floored at 1e-17)",
                   fontsize=10)
    ax_c.legend(fontsize=7, loc="center right")

    ncal = len(config["calibration_seeds"])
    for m, rec in data["width_scaling"].items():
        w, logdev = np.asarray(rec["widths"], float), np.asarray(rec["log_deviation"], float)
        for j in range(logdev.shape[1]):
            ax_d.plot(w, np.exp(logdev[:, j]), "x" if j < ncal else "o", color=col[m], mfc="none", ms=5, alpha=0.7,
                      label=(f"{m}: calibration seeds" if j == 0 else f"{m}: judged seeds" if j == ncal else None))
        mean = np.exp(logdev[:, ncal:].mean(axis=1))
        ax_d.plot(w, mean, "-", color=col[m], lw=1.2, label=f"{m}: judged mean (slope {rec['slope']:.2f}, {rec['status']})")
        ax_d.plot(w, mean[0] * (w / w[0]) ** -0.5, ":", color="k", lw=1.2, label="theory slope −1/2")
    ax_d.set_xscale("log")
    ax_d.set_yscale("log")
    ax_d.set_xlabel("hidden width M")
    ax_d.set_ylabel("max_t ||Π(f_M − f_∞)|| / ||Π f_∞||  (training logits)")
    ax_d.set_title("(d) finite-width training → infinite-width logit dynamics", fontsize=10)
    ax_d.legend(fontsize=7)
    return fig


__all__ = ["PROFILES", "run"]
