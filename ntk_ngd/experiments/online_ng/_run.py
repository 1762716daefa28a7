"""Run the online_ng figure: every depth's runs, the predictions, the checks, the figure and its JSON."""
from __future__ import annotations

import numpy as np

from ... import plotting
from .._base import ExperimentResult, progress, single_thread_blas
from ._checks import depth_rows, full_rows, online_rows
from ._measure import exact_prediction, fisher_lambda_max, fitted_rate, linearised_online, problem, train
from ._model import fp_slope_floor, full_band, lag_band, layer_moves, minibatch_allowance
from ._plot import figure

#: the paper's and K-FAC's anchors, stated in the JSON
ANCHORS = {"ema_decay": "0.95: the running estimates of Bernacchia et al. 2018 (online NG) and Martens & Grosse 2015",
           "one_over_L": "the per-layer natural gradient is divided by the depth L (Bernacchia et al. 2018, the exact "
                         "NG of a deep linear network; docs/THEORY.md claim 9)",
           "prediction": "excess loss (1 - eta)^(2t), independent of depth and of Sigma_x (deep_linear.dynamics)"}


def _depth(cfg, L, lr, window):
    net, params, X, Y, layers = problem(cfg, L)
    gd_lr = 0.5 / fisher_lambda_max(net, params, X)
    kinds = ("online", "gd", "no_1/L") if L > 1 else ("online", "gd")
    full = {k: train(cfg, L, k, "full", gd_lr if k == "gd" else lr) for k in kinds}
    online = {k: train(cfg, L, k, "online", gd_lr if k == "gd" else lr) for k in kinds}
    times = np.asarray(online["online"]["steps"], int)  # the evaluated steps of the online runs (once per epoch)
    pred = exact_prediction(cfg, L, lr)
    lin = linearised_online(cfg, L, lr, int(cfg["seed"]))
    seeds = [int(cfg["calibration_seed"]) + j for j in range(int(cfg["calibration_orders"]))]
    cal = [fitted_rate(times, linearised_online(cfg, L, lr, s)[times], *window) for s in seeds]
    rate = {mode: {k: fitted_rate(r["steps"], r["excess"], *((0, None) if mode == "full" else window))
                   for k, r in runs.items()} for mode, runs in (("full", full), ("online", online))}
    if L == 1:  # without the 1/L is the same optimiser at depth 1
        for mode in rate:
            rate[mode]["no_1/L"] = rate[mode]["online"]
    rate["online"]["linearised"] = fitted_rate(times, lin[times], *window)
    for mode in rate:
        rate[mode]["gd_lr"] = gd_lr
    moves = layer_moves(layers, X, Y)
    lag = lag_band(cfg, lr, L, moves, times, window)
    floor = fp_slope_floor(times, lin, 0.5 * float(np.sum(Y ** 2)) / X.shape[0], lr, *window)
    return {"depth": L, "full": full, "online": online, "prediction": pred, "linearised": lin.tolist(), "rates": rate,
            "full_band": full_band(lr, L, pred["r_max"]), "moves": moves, "lag_model": lag, "fp_floor": floor,
            "lag_band": lag + floor,
            "calibration": {"seeds": seeds, "judged": int(cfg["seed"]), "rates": cal,
                            "sigma": float(np.std(cal, ddof=1)), "mean": float(np.mean(cal))}}


def run(config: dict, out_dir) -> ExperimentResult:
    with single_thread_blas():
        return _run(config, out_dir)


def _run(config, out_dir):
    cfg = dict(config)
    depths, lr = [int(d) for d in cfg["depths"]], float(cfg["lr"])
    window = (int(cfg["fit_start"]), int(cfg["online_steps"]))
    allowance = minibatch_allowance(cfg, lr)
    res = {L: _depth(cfg, L, lr, window) for L in progress(depths, len(depths), "online_ng")}
    checks, lag = [], {L: r["lag_band"] for L, r in res.items()}
    for L, r in res.items():
        curves = {k: v["excess"] for k, v in r["full"].items()}
        checks += full_rows(L, lr, r["rates"]["full"], r["full_band"], curves, r["prediction"])
        checks += online_rows(L, lr, r["rates"]["online"], lag[L], r["calibration"], allowance["total"])
    pick = lambda mode, key: {L: res[L]["rates"][mode][key] for L in depths}  # noqa: E731
    checks += depth_rows(depths, pick("full", "online"), pick("online", "online"), {L: res[L]["full_band"] for L in depths},
                         lag, pick("online", "linearised"), pick("full", "no_1/L"), pick("online", "no_1/L"),
                         pick("full", "gd"))
    fig = figure(cfg, res, lag, window)
    data = {"depths": {str(L): r for L, r in res.items()},
            "minibatch_allowance": allowance, "theory_rate": 2 * np.log(1 - lr), "anchors": ANCHORS,
            "window_online": list(window)}
    png, js = plotting.save(fig, "online_ng", data, out_dir, config=cfg)
    full_dev = max(abs(r["rates"]["full"]["online"] - 2 * np.log(1 - lr)) for r in res.values())
    onl_dev = max(abs(r["rates"]["online"]["online"] - 2 * np.log(1 - lr)) for r in res.values())
    summary = (f"rate 2log(1-eta) = {2 * np.log(1 - lr):.4f}: full batch max |dev| {full_dev:.2g}, online (EMA "
               f"{cfg['decay']}, B={cfg['batch']}) max |dev| {onl_dev:.2g} over L = {depths}; no-1/L at L={depths[-1]}: "
               f"{res[depths[-1]]['rates']['full']['no_1/L']:.3f}")
    return ExperimentResult("online_ng", png, js, checks, summary, 0.0)


__all__ = ["run"]
