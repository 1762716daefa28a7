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

from .. import datasets, plotting
from ..diagnostics import isotropy
from ..dynamics import simulate
from ..function_space import function_step, method_kernels
from ..training import train
from ..networks import mlp
from ._base import ExperimentResult, check_below, check_close, check_range, progress, single_thread_blas

#: the methods drawn in panels (a, b) (the softmax figure of issue 9; every registered method supports the loss)
METHODS = ["gd", "exact", "block_diag", "kfac", "ef", "ief"]

PROFILES = {
    "tiny": {"n": 10, "n_test": 20, "classes": 10, "depth": 3, "width": 128, "steps": 4,
             "widths": [64, 256], "scaling_methods": ["exact"], "seed": 0, "activation": "relu", "methods": METHODS},
    "quick": {"n": 40, "n_test": 300, "classes": 10, "depth": 3, "width": 1024, "steps": 12,
              "widths": [128, 256, 512, 1024, 2048], "scaling_methods": ["exact", "block_diag"], "seed": 0,
              "activation": "relu", "methods": METHODS},
    "full": {"n": 48, "n_test": 1000, "classes": 10, "depth": 3, "width": 4096, "steps": 25,
             "widths": [128, 256, 512, 1024, 2048, 4096, 8192], "scaling_methods": ["exact", "block_diag", "kfac"],
             "seed": 0, "activation": "relu", "methods": METHODS},
}
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
    for m in progress(config["methods"], desc="cross_entropy: dynamics"):
        inf[m] = simulate(net, X, Y, m, steps=steps, X_test=Xt, Y_test=Yt, loss=LOSS)
        fin[m] = train(net, net.init(seed), X, Y, m, lr=inf[m].lr, steps=steps, X_test=Xt, Y_test=Yt, center=True,
                       loss=LOSS)
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
    checks.append(check_below("exact NGD logits (infinite width, lax.scan of the Gram form) == closed form "
                              "f_y += eta/p_y per step (mod 1), max rel. error", err, 1e-8))
    checks.append(check_close("exact: alpha of R Theta_G R^T at step 0 (infinite width)", inf["exact"].alpha, 1.0,
                              1e-8))
    checks.append(check_close(f"block_diag: alpha at step 0 == L = {depth}", inf["block_diag"].alpha, depth, 1e-8))
    kfac_alpha = n * (depth - 1) + 1
    checks.append(check_close(f"kfac: alpha at f = 0 == N(L-1)+1 = {kfac_alpha}", inf["kfac"].alpha, kfac_alpha, 1e-8))
    checks.append(check_below("kfac: deviation from isotropy at f = 0 (every Lambda_n equal)", inf["kfac"].deviation,
                              1e-8))
    bd_gap = float(np.max(np.abs(inf["block_diag"].train_pred - inf["exact"].train_pred)))
    checks.append(check_below("block_diag at lr = 1/L follows exact NGD on the training points (max |logit diff|)",
                              bd_gap, 1e-8 * max(1.0, float(np.max(np.abs(closed))))))
    # finite width: per-sample first-order loss rates at initialisation (closed forms)
    params = net.init(seed)
    f0 = np.asarray(net.apply(params, X))
    g = _probs(f0) - Y
    py = np.sum(_probs(f0) * Y, axis=1)
    rates = {}
    for m in ("exact", "ef", "ief"):
        step, _ = function_step(net, X, m, params=params, loss=LOSS, targets=Y)
        rates[m] = -np.sum(g * step, axis=1)
    theory_rates = {"exact": -(1 - py) / py, "ef": -np.ones(n), "ief": -np.sum(g**2, axis=1)}
    for m, th in theory_rates.items():
        e = float(np.max(np.abs(rates[m] - th) / np.abs(th)))
        data[f"rate_{m}"] = {"measured": rates[m], "theory": th, "max_rel_error": e}
        what = {"exact": "-(1-p_y)/p_y", "ef": "-1", "ief": "-||g_n||^2"}[m]
        checks.append(check_below(f"{m}: per-sample first-order loss change g_n^T Delta f_n / eta == {what} "
                                  f"(width {config['width']}), max rel. error", e, 1e-8))

    # ---- (c) isotropy along the trajectories -------------------------------------------------
    iso = {}
    for m in ("gd", "exact", "block_diag", "kfac"):
        devs, theory = [], []
        for t in range(steps + 1):
            lt = inf[m].train_pred[t]
            if not np.all(np.isfinite(lt)):
                break
            devs.append(isotropy(method_kernels(net, X, m, loss=LOSS, outputs=lt).train).deviation)
            if m == "kfac":
                theory.append(_kfac_deviation_theory(lt, Y, n, depth))
        iso[m] = {"measured": devs, "theory": theory}
    data["isotropy"] = iso
    kd, kt = np.array(iso["kfac"]["measured"]), np.array(iso["kfac"]["theory"])
    kerr = float(np.max(np.abs(kd[1:] - kt[1:]) / kt[1:]))
    checks.append(check_below("kfac deviation along its trajectory == closed-form readout term (from p alone), "
                              "max rel. error over steps >= 1", kerr, 1e-6))
    checks.append(check_below("exact and block_diag stay isotropic along their trajectories (max deviation)",
                              max(max(iso["exact"]["measured"]), max(iso["block_diag"]["measured"])), 1e-8))
    data["kfac_deviation_max_rel_error"] = kerr

    # ---- (d) width convergence ---------------------------------------------------------------
    scaling = {}
    for m in config["scaling_methods"]:
        ref = _center(inf[m].train_pred)
        devs = []
        for w in progress(config["widths"], desc=f"cross_entropy: widths ({m})"):
            netw = net_of(w)
            run_w = train(netw, netw.init(seed), X, Y, m, lr=inf[m].lr, steps=steps, center=True, loss=LOSS)
            d = _center(run_w.train_pred) - ref
            dev = np.max(np.linalg.norm(d[1:], axis=(1, 2)) / np.linalg.norm(ref[1:], axis=(1, 2)))
            devs.append(float(dev) if run_w.diverged_at is None else float("inf"))  # NaN logits after a divergence
        ok = np.isfinite(devs)
        slope = float(np.polyfit(np.log(np.asarray(config["widths"])[ok]), np.log(np.asarray(devs)[ok]), 1)[0])
        scaling[m] = {"widths": config["widths"], "deviation": devs, "slope": slope,
                      "diverged_widths": [w for w, o in zip(config["widths"], ok) if not o]}
        checks.append(check_range(f"{m}: finite-width training -> infinite-width logit dynamics, log-log slope of "
                                  "the deviation vs width (theory -1/2 for ReLU, lazy regime)", slope, -1.2, -0.3, -0.5))
    data["width_scaling"] = scaling

    fig = _plot(data, inf, fin, closed_loss, config)
    png, js = plotting.save(fig, "cross_entropy", data=data, out_dir=out_dir, config=config)
    summary = (f"exact closed form err {err:.1e}; kfac alpha(f=0) {inf['kfac'].alpha:.4g}, final deviation "
               f"{kd[-1]:.2e}; slopes " + ", ".join(f"{m} {s['slope']:.2f}" for m, s in scaling.items()))
    return ExperimentResult("cross_entropy", png, js, checks, summary, 0.0)


def _plot(data, inf, fin, closed_loss, config):
    C = plotting.COLORS
    col = {"gd": C[7], "exact": C[0], "block_diag": C[5], "kfac": C[1], "ef": C[3], "ief": C[2]}
    fig, axes = plotting.figure(2, 2, figsize=(13, 9.5))
    (ax_a, ax_b), (ax_c, ax_d) = axes
    steps = np.arange(config["steps"] + 1)
    M = config["width"]
    for m in config["methods"]:
        lab = f"{m} (η={inf[m].lr:.3g}: {inf[m].lr_rule})"
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
    for m in ("gd", "exact", "block_diag", "kfac"):
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

    for m, s in data["width_scaling"].items():
        w, dev = np.asarray(s["widths"], float), np.asarray(s["deviation"], float)
        ok = np.isfinite(dev)
        w, dev = w[ok], dev[ok]
        note = f"; diverged at M={s['diverged_widths']}" if s["diverged_widths"] else ""
        ax_d.plot(w, dev, "o", color=col[m], label=f"{m}: measured (slope {s['slope']:.2f}{note})")
        fit = np.exp(np.polyval(np.polyfit(np.log(w), np.log(dev), 1), np.log(w)))
        ax_d.plot(w, fit, "-", color=col[m], lw=1)
        ax_d.plot(w, dev[0] * (w / w[0]) ** -0.5, ":", color=col[m], lw=1.2,
                  label=f"{m}: theory slope −1/2")
    ax_d.set_xscale("log")
    ax_d.set_yscale("log")
    ax_d.set_xlabel("hidden width M")
    ax_d.set_ylabel("max_t ||Π(f_M − f_∞)|| / ||Π f_∞||  (training logits)")
    ax_d.set_title("(d) finite-width training → infinite-width logit dynamics", fontsize=10)
    ax_d.legend(fontsize=7)
    return fig


__all__ = ["PROFILES", "run"]
